import math

import numpy as np
import pytest

from esrkd.metrics import psnr, ssim


def _pair(value=100, delta=10, shape=(32, 40, 3)):
    hr = np.full(shape, value, np.uint8)
    return hr + np.uint8(delta), hr


def test_psnr_y_of_a_uniform_offset_by_hand():
    sr, hr = _pair()
    # Gray v has BT.601 Y = 16 + v * (65.481 + 128.553 + 24.966) / 255 = 16 + v * 219 / 255.
    dy = 10 * 219 / 255
    assert psnr(sr, hr, crop_border=4) == pytest.approx(20 * math.log10(255 / dy), abs=1e-9)
    assert psnr(sr, hr, crop_border=4, y_channel=False) == pytest.approx(20 * math.log10(255 / 10), abs=1e-9)


def test_border_is_cropped_before_scoring():
    sr, hr = _pair()
    sr[:4] = 0
    sr[:, -4:] = 255  # damage confined to the 4-pixel border
    clean = _pair()[0]
    assert psnr(sr, hr, crop_border=4) == psnr(clean, hr, crop_border=4)
    assert psnr(sr, hr, crop_border=0) < psnr(clean, hr, crop_border=0) - 10


def test_ssim_of_constant_images_by_hand():
    sr, hr = _pair(value=100, delta=20)
    y1, y2 = 16 + 120 * 219 / 255, 16 + 100 * 219 / 255
    c1 = (0.01 * 255) ** 2
    expected = (2 * y1 * y2 + c1) / (y1**2 + y2**2 + c1)  # no variance: only the luminance term is left
    assert ssim(sr, hr, crop_border=4) == pytest.approx(expected, abs=1e-9)


def test_identical_images():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
    assert ssim(img, img, 4) == pytest.approx(1.0)
    assert psnr(img, img, 4) == math.inf


def test_shape_errors():
    with pytest.raises(ValueError, match="equal-sized"):
        psnr(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8), 0)
    with pytest.raises(ValueError, match="too small"):
        ssim(np.zeros((12, 12, 3), np.uint8), np.zeros((12, 12, 3), np.uint8), 4)
