"""Feature distillation from a frozen (pruned) teacher: the L_distill term of the paper's Eq. 3-4."""

from __future__ import annotations

import torch
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


class Distiller(nn.Module):
    """The frozen teacher and one learnable 1x1 conv f_i per distilled layer (student -> teacher channels).

    The teacher never trains (no gradients, eval mode), so its pruned weights stay exactly zero.
    """

    def __init__(self, teacher: RRDBNet, student_width: int, layers: list[int], weight: float, kind: str):
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.layers, self.weight, self.kind = list(layers), weight, kind
        self.adapters = nn.ModuleList(nn.Conv2d(student_width, teacher.args.num_feat, 1) for _ in self.layers)

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()  # keep the teacher frozen whatever the caller asks
        return self

    def forward(self, lr: torch.Tensor, student_feats: list[torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            _, teacher_feats = self.teacher.forward_features(lr, self.layers)
        return feature_distillation_loss(student_feats, teacher_feats, self.adapters, self.kind)
