"""The objectives of ESRGAN and of the paper's Eq. 1-4, as plain functions.

Weights are applied in the training step, where they stay visible.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from esrkd.checkpoint import CheckpointError


def ragan_loss(pred_a: torch.Tensor, pred_b: torch.Tensor) -> torch.Tensor:
    """Relativistic average GAN loss (ESRGAN) for the side that wants `a` judged more real than `b`.

    Discriminator: ragan_loss(D(real), D(fake)). Generator: ragan_loss(D(fake), D(real)).
    """
    real_vs_fake = pred_a - pred_b.mean()
    fake_vs_real = pred_b - pred_a.mean()
    return 0.5 * (
        F.binary_cross_entropy_with_logits(real_vs_fake, torch.ones_like(real_vs_fake))
        + F.binary_cross_entropy_with_logits(fake_vs_real, torch.zeros_like(fake_vs_real))
    )


def feature_distillation_loss(
    student_feats: list[torch.Tensor],
    teacher_feats: list[torch.Tensor],
    adapters: nn.ModuleList,
    kind: str = "mse",
) -> torch.Tensor:
    """Eq. 3: sum over distilled layers i of || f_i(C_i) - C'_i ||.

    `mse` averages the squared difference over every element (the usual implementation);
    `l2` takes each sample's Euclidean norm and averages over the batch (the paper's letter).
    """
    if not (len(student_feats) == len(teacher_feats) == len(adapters)):
        raise ValueError(f"{len(student_feats)} student, {len(teacher_feats)} teacher features and {len(adapters)} adapters differ")
    total = student_feats[0].new_zeros(())
    for s, t, f in zip(student_feats, teacher_feats, adapters):
        diff = f(s) - t
        total = total + (diff.pow(2).mean() if kind == "mse" else diff.flatten(1).norm(dim=1).mean())
    return total


class PerceptualLoss(nn.Module):
    """L1 between VGG19 conv5_4 features (before ReLU) of SR and HR, ImageNet-normalised (ESRGAN)."""

    CONV5_4 = 34  # index of conv5_4 in torchvision's vgg19().features

    def __init__(self, weights_file: Path):
        super().__init__()
        from torchvision.models import vgg19

        vgg = vgg19()
        vgg.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
        self.features = vgg.features[: self.CONV5_4 + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        f = lambda x: self.features((x - self.mean) / self.std)  # noqa: E731
        return F.l1_loss(f(sr), f(hr.detach()))


# torchvision's VGG19_Weights.IMAGENET1K_V1 file, as torch.hub caches it.
VGG19_FILE = "vgg19-dcbe5ffd.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"


def vgg19_weights_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def load_perceptual_loss(weight: float, key: str) -> tuple[PerceptualLoss | None, str]:
    """The perceptual loss and "available", or None and "off" at weight 0; never downloads.

    A positive weight without the VGG19 weights on disk stops the stage (naming `key`, the params
    entry): training on silently without it would not be the recipe the params describe.
    """
    if weight == 0:
        return None, f"off ({key} is 0)"
    path = vgg19_weights_file()
    if not path.is_file():
        raise CheckpointError(
            f"{key} is {weight:g} but the VGG19 weights are not at {path}; on a connected machine run "
            f"`python -c \"import torchvision; torchvision.models.vgg19(weights='IMAGENET1K_V1')\"` "
            f"(or copy {VGG19_FILE} there), or set {key}: 0 in params.yaml to train without it."
        )
    return PerceptualLoss(path), "available"
