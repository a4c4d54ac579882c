"""Validation during training: G's EMA scored on the validation set by the evaluate protocol."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esrkd.train import Validation, validate


class _Nearest(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=4, mode="nearest")


def _psnr_y_by_hand(sr: np.ndarray, hr: np.ndarray, crop: int) -> float:
    # BT.601 luma on [0, 255] RGB, in [16, 235]; the border cropped; data range 255
    y = [16 + (65.481 * im[..., 0] + 128.553 * im[..., 1] + 24.966 * im[..., 2]) / 255 for im in (sr.astype(float), hr.astype(float))]
    mse = np.mean((y[0][crop:-crop, crop:-crop] - y[1][crop:-crop, crop:-crop]) ** 2)
    return 10 * np.log10(255**2 / mse)


def test_validate_scores_psnr_y_and_ssim_as_the_evaluate_stage_does():
    rng = np.random.default_rng(0)
    lrs = [rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)]
    hrs = [np.clip(lr.repeat(4, 0).repeat(4, 1).astype(int) + rng.integers(-20, 21, (lr.shape[0] * 4, lr.shape[1] * 4, 3)), 0, 255)
           .astype(np.uint8) for lr in lrs]
    pairs = [(str(i), lr, hr) for i, (lr, hr) in enumerate(zip(lrs, hrs))]
    scores = validate(_Nearest(), Validation(pairs, every=1, crop_border=4, y_channel=True), torch.device("cpu"))
    expected = np.mean([_psnr_y_by_hand(lr.repeat(4, 0).repeat(4, 1), hr, 4) for lr, hr in zip(lrs, hrs)])
    assert scores["val/psnr"] == pytest.approx(expected, abs=1e-6)
    assert 0 < scores["val/ssim"] < 1
