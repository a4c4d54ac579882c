"""Feature distillation from a frozen (pruned) teacher: the L_distill term of the paper's Eq. 3-4."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from esrkd.arch import RRDBArgs, RRDBNet
from esrkd.losses import feature_distillation_loss


def student_args(teacher: RRDBArgs, width: int) -> RRDBArgs:
    """The paper's student: the teacher's RRDBNet with `width` features; depth and growth kept."""
    if not 0 < width < teacher.num_feat:
        raise ValueError(f"student width {width} must be > 0 and < the teacher's {teacher.num_feat} features")
    return RRDBArgs(
        num_feat=width,
        num_block=teacher.num_block,
        num_grow_ch=teacher.num_grow_ch,
        scale=teacher.scale,
        num_in_ch=teacher.num_in_ch,
        num_out_ch=teacher.num_out_ch,
    )


MODES = ("features", "output", "none")  # the paper's method, and the two ablations it lacks


class Distiller(nn.Module):
    """The frozen teacher and the L_distill term a student learns from it, weighted (Eq. 4's lambda_distill).

    mode "features" (the paper): Eq. 3 between the teacher's block outputs at `layers` and the student's,
    mapped to the teacher's width by the adapters f_i, which train with the student (train.Generator holds
    them, so DDP averages their gradients with G's). mode "output" (ablation): L1 between the student's and
    the teacher's SR images, no hidden features. The teacher never trains (no gradients, eval mode), so
    its pruned weights stay exactly zero.
    """

    def __init__(self, teacher: RRDBNet, layers: list[int], weight: float, kind: str, mode: str = "features"):
        super().__init__()
        if mode not in MODES[:2]:
            raise ValueError(f"distillation mode {mode!r} is not one of {MODES[:2]} (no distiller is mode 'none')")
        self.teacher = teacher.eval().requires_grad_(False)
        self.mode, self.weight, self.kind = mode, weight, kind
        self.layers = list(layers) if mode == "features" else []

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()  # keep the teacher frozen whatever the caller asks
        return self

    def forward(self, lr: torch.Tensor, student_sr: torch.Tensor, student_feats: list[torch.Tensor]) -> torch.Tensor:
        """lambda_distill * L_distill, from the student's SR image and its adapted block outputs f_i(C_i)."""
        with torch.no_grad():
            teacher_sr, teacher_feats = self.teacher.forward_features(lr, self.layers)
        if self.mode == "output":
            return self.weight * F.l1_loss(student_sr, teacher_sr)
        return self.weight * feature_distillation_loss(student_feats, teacher_feats, self.kind)
