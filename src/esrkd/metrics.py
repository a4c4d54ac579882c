"""Image-quality metrics the way the SR field reports them (BasicSR / MATLAB conventions).

Inputs are uint8 RGB arrays (H, W, 3). `crop_border` pixels are removed from every side first;
with `y_channel` the images become the Y of BT.601 YCbCr as floats in [16, 235] (not rounded);
everything is computed in float64 with data range 255, by scikit-image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from esrkd.data import bicubic_upscale, load_pairs


def _prepare(img: np.ndarray, crop_border: int, y_channel: bool) -> np.ndarray:
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    return rgb2ycbcr(img)[..., 0] if y_channel else img.astype(np.float64)


def _check(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> None:
    if sr.shape != hr.shape or sr.ndim != 3 or sr.shape[2] != 3:
        raise ValueError(f"SR {sr.shape} and HR {hr.shape} must be equal-sized (H, W, 3) RGB images")
    if min(sr.shape[:2]) - 2 * crop_border < 7:
        raise ValueError(f"a {sr.shape[1]}x{sr.shape[0]} image minus a {crop_border}-pixel border is too small for SSIM's 7x7 window")


def psnr(sr: np.ndarray, hr: np.ndarray, crop_border: int, y_channel: bool = True) -> float:
    _check(sr, hr, crop_border)
    a, b = _prepare(sr, crop_border, y_channel), _prepare(hr, crop_border, y_channel)
    return float(peak_signal_noise_ratio(b, a, data_range=255))


def ssim(sr: np.ndarray, hr: np.ndarray, crop_border: int, y_channel: bool = True) -> float:
    """SSIM with the 11x11 Gaussian window (sigma 1.5) of Wang et al., as BasicSR and MATLAB use it."""
    _check(sr, hr, crop_border)
    a, b = _prepare(sr, crop_border, y_channel), _prepare(hr, crop_border, y_channel)
    return float(
        structural_similarity(
            b, a, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            channel_axis=None if y_channel else 2,
        )
    )


def bicubic_baseline(test_root: Path, scale: int, crop_border: int, y_channel: bool) -> dict[str, float]:
    """PSNR/SSIM of plain bicubic upscaling, averaged like the models' (mean of the per-set means)."""
    per_set = []
    for folder in sorted(p for p in Path(test_root).iterdir() if p.is_dir()):
        pairs = [(bicubic_upscale(lr, scale), hr) for _, lr, hr in load_pairs(folder, scale)]
        per_set.append([np.mean([f(sr, hr, crop_border, y_channel) for sr, hr in pairs]) for f in (psnr, ssim)])
    mean_psnr, mean_ssim = np.mean(per_set, axis=0)
    return {"psnr": float(mean_psnr), "ssim": float(mean_ssim)}
