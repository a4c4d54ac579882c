"""LPIPS loading and scoring, offline.

Every test points torch.hub at a temporary folder, so none reads or writes the user's cache, and
every network path (sockets, urllib, torch.hub's downloader) raises if touched. The scoring tests
use the random AlexNet trunk: they check the plumbing (scaling, cropping, validation), not LPIPS.
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

from esrkd import perceptual_metrics as pm


class NetworkUsed(AssertionError):
    pass


def _no_network(*args, **kwargs):
    raise NetworkUsed("network access attempted")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    return monkeypatch


@pytest.fixture
def empty_hub(offline: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    # TORCH_HOME alone is not enough: torch.hub.set_dir(), if anyone called it, takes precedence.
    offline.setenv("TORCH_HOME", str(tmp_path))
    offline.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.fixture(scope="module")
def random_scorer() -> pm.Scorer:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(torch.hub, "download_url_to_file", _no_network)
        mp.setattr(torch.hub, "_hub_dir", "/nonexistent/hub")
        torch.manual_seed(0)
        score, status = pm.load_lpips(allow_random_backbone=True)
    assert status == pm.RANDOM_BACKBONE_STATUS
    return score


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.ascontiguousarray(chelsea()[50:146, 150:246])  # 96x96 of a real photo


def _noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, img.shape)
    return np.clip(img + noise, 0, 255).round().astype(np.uint8)


def test_file_name_is_torchvisions():
    url = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url
    assert url.rsplit("/", 1)[1] == pm.ALEXNET_FILE


def test_weights_file_follows_torch_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert pm.alexnet_weights_file() == tmp_path / "hub" / "checkpoints" / pm.ALEXNET_FILE
    torch.hub.set_dir(tmp_path / "elsewhere")  # undone by monkeypatch's restore of _hub_dir
    assert pm.alexnet_weights_file() == tmp_path / "elsewhere" / "checkpoints" / pm.ALEXNET_FILE


def test_unavailable_without_weights(empty_hub: Path, offline: pytest.MonkeyPatch):
    import lpips

    offline.setattr(lpips, "LPIPS", _no_network)  # nothing may even be constructed
    offline.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    offline.setattr(torchvision.models._api, "load_state_dict_from_url", _no_network)
    score, msg = pm.load_lpips()
    assert score is None
    assert msg.startswith("unavailable:")
    assert str(empty_hub / "checkpoints" / pm.ALEXNET_FILE) in msg
    assert pm.FETCH_COMMAND in msg
    assert not (empty_hub / "checkpoints").exists()  # not even the folder a download would create


def test_available_with_weights_file(empty_hub: Path):
    # Wiring only: an untrained AlexNet saved under the expected name stands in for the ImageNet
    # checkpoint, to show load_lpips finds it where torchvision does and builds without downloading.
    # The scores of this model are not LPIPS.
    path = empty_hub / "checkpoints" / pm.ALEXNET_FILE
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    # torchvision loads the whole model strictly, so the classifier must be there too; as broadcast
    # views of one zero it is saved as a single float (10 MB of file instead of 244 MB).
    state.update({k: torch.zeros(()).expand(v.shape) for k, v in state.items() if k.startswith("classifier.")})
    torch.save(state, path)
    score, status = pm.load_lpips()
    assert status == "available"
    img = _noisy(np.full((40, 40, 3), 128, np.uint8), 30)
    assert score(img, img, 0) == 0.0
    assert score(_noisy(img, 20, seed=1), img, 0) > 0


def test_identical_images_score_zero(random_scorer, image):
    assert random_scorer(image, image, 0) < 1e-7


def test_different_images_score_positive_and_in_range(random_scorer, image):
    noise = np.random.default_rng(1).integers(0, 256, image.shape, dtype=np.uint8)
    for other in (_noisy(image, 10), noise, 255 - image):
        d = random_scorer(other, image, 0)
        assert np.isfinite(d) and 0 < d <= 1.5


def test_more_noise_scores_higher(random_scorer, image):
    assert random_scorer(_noisy(image, 40), image, 0) > random_scorer(_noisy(image, 5), image, 0)


def test_crop_border_crops(random_scorer, image):
    damaged = image.copy()
    rng = np.random.default_rng(2)
    for region in (np.s_[:4], np.s_[-4:], np.s_[:, :4], np.s_[:, -4:]):
        damaged[region] = rng.integers(0, 256, damaged[region].shape, dtype=np.uint8)
    assert random_scorer(damaged, image, 0) > 0
    assert random_scorer(damaged, image, 4) < 1e-7


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
def test_bad_input_is_refused(random_scorer, sr, hr, crop, match):
    with pytest.raises(ValueError, match=match):
        random_scorer(sr, hr, crop)
