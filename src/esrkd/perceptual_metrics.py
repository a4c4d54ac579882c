"""LPIPS the way the SR field reports it: the `lpips` package, AlexNet trunk, version 0.1.

As BasicSR's scripts/metrics/calculate_lpips.py: uint8 RGB (H, W, 3) images, `crop_border` pixels
removed from every side first (as for PSNR), then RGB scaled to [-1, 1] and fed to
`lpips.LPIPS(net='alex', version='0.1')`.

The lpips wheel ships only its linear layers; the AlexNet trunk is torchvision's ImageNet
checkpoint, which torchvision downloads into the torch.hub cache on first use. Offline, that
download is impossible, so `load_lpips` checks for the file first and reports LPIPS as unavailable
instead of constructing anything that would try to fetch it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
FETCH_COMMAND = "python -c \"import torchvision; torchvision.models.alexnet(weights='IMAGENET1K_V1')\""
RANDOM_BACKBONE_STATUS = "random backbone (tests only; not LPIPS)"

# AlexNet's feature stack up to conv5 (what LPIPS uses) fails on inputs smaller than this.
MIN_SIDE = 31

Scorer = Callable[[np.ndarray, np.ndarray, int], float]


def alexnet_weights_file() -> Path:
    """Where torchvision looks for (and would download) its ImageNet AlexNet weights."""
    # torch.hub.load_state_dict_from_url caches under <hub dir>/checkpoints/<URL basename> and
    # skips the download when that file exists; get_dir() honours set_dir(), then TORCH_HOME.
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


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


def _build(device: torch.device | str, random_backbone: bool) -> torch.nn.Module:
    import lpips

    with warnings.catch_warnings():
        # lpips 0.1.4 still passes torchvision the `pretrained=` flag, deprecated since 0.13
        warnings.filterwarnings("ignore", message=r"The parameter 'pretrained' is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"Arguments other than a weight enum", category=UserWarning)
        model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=random_backbone, verbose=False)
    return model.to(device).eval()


def load_lpips(device: torch.device | str = "cpu", allow_random_backbone: bool = False) -> tuple[Scorer | None, str]:
    """An LPIPS scorer `(sr, hr, crop_border) -> float` and its status, or (None, why not).

    Status is "available" when torchvision's AlexNet weights are in the torch.hub cache, else
    "unavailable: ..." with the path and the command that fetches them. `allow_random_backbone`
    is for tests only: it builds with an untrained AlexNet trunk, whose scores are not LPIPS.
    """
    if allow_random_backbone:
        status = RANDOM_BACKBONE_STATUS
    else:
        # Checked before lpips.LPIPS is constructed, because constructing it would start a download.
        weights = alexnet_weights_file()
        if not weights.is_file():
            return None, (
                f"unavailable: LPIPS needs torchvision's AlexNet weights, not found at {weights} "
                f"(they cannot be downloaded offline); on a connected machine run {FETCH_COMMAND} "
                f"and copy the file to that path."
            )
        status = "available"
    model = _build(device, random_backbone=allow_random_backbone)

    def score(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
        _check(sr, hr, crop_border)
        with torch.no_grad():
            d = model(_to_tensor(sr, crop_border, device), _to_tensor(hr, crop_border, device))
        return float(d.item())

    return score, status
