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
    """The frozen teacher and the raw L_distill term a student learns from it (the training step weighs it
    by Eq. 4's lambda_distill, with the other loss weights).

    mode "features" (the paper): Eq. 3 between the teacher's block outputs at `layers` and the student's,
    mapped to the teacher's width by the adapters f_i, which train with the student (train.Generator holds
    them, so DDP averages their gradients with G's). mode "output" (ablation): L1 between the student's and
    the teacher's SR images, no hidden features. The teacher never trains (no gradients, eval mode), so
    its pruned weights stay exactly zero.
    """

    def __init__(self, teacher: RRDBNet, layers: list[int], kind: str, mode: str = "features"):
        super().__init__()
        if mode not in MODES[:2]:
            raise ValueError(f"distillation mode {mode!r} is not one of {MODES[:2]} (no distiller is mode 'none')")
        self.teacher = teacher.eval().requires_grad_(False)
        self.mode, self.kind = mode, kind
        self.layers = list(layers) if mode == "features" else []

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()  # keep the teacher frozen whatever the caller asks
        return self

    def forward(self, lr: torch.Tensor, student_sr: torch.Tensor, student_feats: list[torch.Tensor]) -> torch.Tensor:
        """L_distill, from the student's SR image and its adapted block outputs f_i(C_i)."""
        with torch.no_grad():
            teacher_sr, teacher_feats = self.teacher.forward_features(lr, self.layers)
        if self.mode == "output":
            return F.l1_loss(student_sr, teacher_sr)
        return feature_distillation_loss(student_feats, teacher_feats, self.kind)


@torch.no_grad()
def fit_adapters(adapters: nn.ModuleList, student: RRDBNet, teacher: RRDBNet, layers: list[int], lr: torch.Tensor) -> None:
    """Set each 1x1 adapter f_i to the least-squares map (weights and bias) from the student's block output C_i
    to the teacher's C'_i on the LR batch `lr`: FitNets' first stage (regressors trained before the student),
    in closed form. An untrained ESRGAN trunk's features grow ~1.2x per block while a trained teacher's are
    small, so with adapters as initialised L_distill starts ~10^3 times above its fitted value
    (benchmarks/distill_balance.py) and is nearly the student's whole gradient until they settle."""
    s_feats = student.forward_features(lr, layers)[1]
    t_feats = teacher.forward_features(lr, layers)[1]
    for f, s, t in zip(adapters, s_feats, t_feats):
        x = s.permute(0, 2, 3, 1).reshape(-1, s.shape[1]).double()
        x = torch.cat([x, x.new_ones(len(x), 1)], 1)  # the bias column
        y = t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]).double()
        w = torch.linalg.lstsq(x, y).solution.float()  # float64: deep student features reach variances of ~100
        f.weight.copy_(w[:-1].T.reshape(f.weight.shape))
        f.bias.copy_(w[-1])
