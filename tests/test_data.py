import math

import numpy as np
import pytest
import torch

from esrkd.data import (PatchDataset, bicubic_downscale, crop_to_scale, load_pairs, prepare_set, read_image, subimage_boxes,
                        write_png)
from esrkd.errors import UserError


def _matlab_weights(in_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB imresize's `contributions` for a cubic kernel with antialiasing (scale < 1), written from
    its documented algorithm: output x maps to u = x/scale + 0.5(1 - 1/scale), the kernel is
    scale*cubic(scale*d) over a width of 4/scale, weights normalised, out-of-range indices mirrored."""

    def cubic(x):
        a = np.abs(x)
        return ((1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1)
                + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2)))

    out_len = math.ceil(in_len * scale)
    width = 4 / scale
    x = np.arange(1, out_len + 1)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    w = scale * cubic(scale * (u[:, None] - idx))
    w /= w.sum(axis=1, keepdims=True)
    mirrored = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    idx = mirrored[np.mod(idx - 1, 2 * in_len).astype(int)]
    return w, idx


def _matlab_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    out = img.astype(np.float64)
    wr, ir = _matlab_weights(out.shape[0], scale)
    out = np.einsum("ok,okwc->owc", wr, out[ir])
    wc, ic = _matlab_weights(out.shape[1], scale)
    out = np.einsum("ok,hokc->hoc", wc, out[:, ic])
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1])
def test_bicubic_matches_matlabs_documented_algorithm(seed):
    rng = np.random.default_rng(seed)
    smooth = np.kron(rng.integers(0, 256, (12, 10, 3)), np.ones((8, 8, 1)))  # blocks: real edges
    hr = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
    ours, ref = bicubic_downscale(hr, 4).astype(int), _matlab_imresize(hr, 0.25).astype(int)
    assert ours.shape == (24, 20, 3)
    assert np.abs(ours - ref).max() <= 1  # only rounding ties may differ
    assert (ours == ref).mean() > 0.995


def test_bicubic_keeps_a_constant_image_and_refuses_bad_sizes():
    assert (bicubic_downscale(np.full((16, 12, 3), 77, np.uint8), 4) == 77).all()
    with pytest.raises(UserError, match="not divisible by scale 4"):
        bicubic_downscale(np.zeros((10, 12, 3), np.uint8), 4)


def test_crop_to_scale():
    assert crop_to_scale(np.zeros((103, 98, 3)), 4).shape == (100, 96, 3)


def test_prepare_set_writes_aligned_pairs(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    write_png(src / "a.png", rng.integers(0, 256, (50, 66, 3), dtype=np.uint8))
    write_png(src / "b.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    n = prepare_set([str(src), "skimage:chelsea"], 4, tmp_path / "out")
    assert n == 3
    pairs = {name: (lr, hr) for name, lr, hr in load_pairs(tmp_path / "out", 4)}
    assert pairs["a"][1].shape == (48, 64, 3) and pairs["a"][0].shape == (12, 16, 3)
    assert pairs["chelsea"][1].shape == (300, 448, 3)
    assert (pairs["a"][0] == bicubic_downscale(pairs["a"][1], 4)).all()


def test_prepare_set_takes_the_users_own_lr_images_div2k_style(tmp_path):
    hr_dir, lr_dir = tmp_path / "DIV2K_train_HR", tmp_path / "DIV2K_train_LR_bicubic_X4" / "X4"
    hr_dir.mkdir()
    lr_dir.mkdir(parents=True)
    rng = np.random.default_rng(1)
    write_png(hr_dir / "0001.png", rng.integers(0, 256, (50, 66, 3), dtype=np.uint8))  # mod-cropped to 48x64
    write_png(hr_dir / "0002.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    own = {"0001x4.png": rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), "0002.png": np.full((10, 10, 3), 7, np.uint8)}
    for name, image in own.items():
        write_png(lr_dir / name, image)
    assert prepare_set([str(hr_dir)], 4, tmp_path / "out", lr_sources=[str(lr_dir)]) == 2
    pairs = {name: (lr, hr) for name, lr, hr in load_pairs(tmp_path / "out", 4)}
    assert (pairs["0001"][0] == own["0001x4.png"]).all() and pairs["0001"][1].shape == (48, 64, 3)
    assert (pairs["0002"][0] == 7).all()  # taken as given, not recomputed

    (lr_dir / "0002.png").unlink()
    with pytest.raises(UserError, match=r"no LR image for '0002' \(0002x4.png or 0002.png\)"):
        prepare_set([str(hr_dir)], 4, tmp_path / "out2", lr_sources=[str(lr_dir)])
    write_png(lr_dir / "0002x4.png", np.zeros((9, 10, 3), np.uint8))
    with pytest.raises(UserError, match=r"0002x4.png: 10x9 is not its HR image's 40x40 / 4"):
        prepare_set([str(hr_dir)], 4, tmp_path / "out3", lr_sources=[str(lr_dir)])


def test_subimage_boxes_follow_basicsr_extract_subimages():
    # A DIV2K image of 2040x1356 with BasicSR's 480/240: rows at 0, 240, 480, 720 and one flush with
    # the bottom edge (876); columns at 0, 240, ..., 1440 and one flush with the right edge (1560).
    # (BasicSR's DIV2K_train_HR_sub: 32,592 crops of 800 images, ~40 each.)
    boxes = subimage_boxes(1356, 2040, 480, 240)
    assert len(boxes) == 5 * 8
    assert sorted({b[0] for b in boxes}) == [0, 240, 480, 720, 876]
    assert sorted({b[1] for b in boxes}) == [0, 240, 480, 720, 960, 1200, 1440, 1560]
    assert subimage_boxes(960, 720, 480, 240) == [(t, l, 480, 480) for t in (0, 240, 480) for l in (0, 240)]  # exact fit
    assert all(b[2:] == (480, 480) for b in boxes)
    assert subimage_boxes(300, 500, 480, 240) == [(0, 0, 300, 480), (0, 20, 300, 480)]  # a short side is kept whole


def test_prepare_set_cuts_aligned_subimages(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    image = np.random.default_rng(2).integers(0, 256, (72, 104, 3), dtype=np.uint8)
    write_png(src / "img.png", image)
    assert prepare_set([str(src)], 4, tmp_path / "out", subimages=(32, 16)) == 4 * 6  # rows 0,16,32,40; cols 0..64,72
    lr_whole = bicubic_downscale(image, 4)
    pairs = {name: (lr, hr) for name, lr, hr in load_pairs(tmp_path / "out", 4)}
    assert sorted(pairs)[:2] == ["img_s001", "img_s002"] and len(pairs) == 24
    lr, hr = pairs["img_s008"]  # second row (top 16), second column (left 16)
    assert (hr == image[16:48, 16:48]).all() and (lr == lr_whole[4:12, 4:12]).all()  # LR of the whole, then cut
    lr, hr = pairs["img_s024"]  # flush with the bottom-right corner
    assert (hr == image[40:72, 72:104]).all() and (lr == lr_whole[10:18, 18:26]).all()


def test_patches_read_from_disk_equal_patches_from_memory(tmp_path):
    prepare_set(["skimage:astronaut", "skimage:chelsea"], 4, tmp_path / "out", subimages=(128, 64))
    in_memory = PatchDataset(load_pairs(tmp_path / "out", 4), 4, 32, 20, seed=3)
    on_disk = PatchDataset(load_pairs(tmp_path / "out", 4, decode=False), 4, 32, 20, seed=3)
    assert isinstance(on_disk.pairs[0][1], type(tmp_path))
    for k in range(20):
        (a_lr, a_hr), (b_lr, b_hr) = in_memory[k], on_disk[k]
        assert torch.equal(a_lr, b_lr) and torch.equal(a_hr, b_hr)


def test_patch_dataset_is_aligned_and_deterministic():
    rng = np.random.default_rng(0)
    lr = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    hr = np.kron(lr, np.ones((4, 4, 1), np.uint8))  # each LR pixel a 4x4 HR block: alignment is checkable exactly
    ds = PatchDataset([("x", lr, hr)], scale=4, hr_patch=32, num_samples=20, seed=3)
    for k in range(20):
        lr_t, hr_t = ds[k]
        assert lr_t.shape == (3, 8, 8) and hr_t.shape == (3, 32, 32)
        assert torch.equal(lr_t, hr_t[:, ::4, ::4])
    again = PatchDataset([("x", lr, hr)], scale=4, hr_patch=32, num_samples=20, seed=3)
    assert all(torch.equal(ds[k][1], again[k][1]) for k in range(20))
    assert not torch.equal(ds[0][1], ds[1][1])


def test_patch_dataset_refuses_images_smaller_than_the_patch():
    small = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(UserError, match=r"\['tiny'\] are smaller than the 32-pixel HR patch"):
        PatchDataset([("tiny", small[::4, ::4], small)], scale=4, hr_patch=32, num_samples=1, seed=0)


def test_read_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(UserError, match="broken.png: cannot be read as an image"):
        read_image(bad)
    from PIL import Image

    Image.new("RGBA", (8, 8)).save(tmp_path / "alpha.png")
    with pytest.raises(UserError, match="alpha.png: has an alpha channel"):
        read_image(tmp_path / "alpha.png")
    Image.new("L", (8, 8), 9).save(tmp_path / "gray.png")
    assert read_image(tmp_path / "gray.png").shape == (8, 8, 3)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        prepare_set([str(tmp_path / "nope")], 4, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        prepare_set([str(tmp_path / "empty")], 4, tmp_path / "out2")


def test_photos_other_packages_ship_are_sources_by_name():
    from esrkd.data import load_sources

    images = dict(load_sources(["sporco:monarch", "sporco:barbara", "sklearn:china", "matplotlib:grace_hopper"]))
    assert {k: v.shape for k, v in images.items()} == {"monarch": (512, 768, 3), "barbara": (574, 702, 3),
                                                       "china": (427, 640, 3), "grace_hopper": (600, 512, 3)}
    assert all(v.dtype == np.uint8 for v in images.values())
    with pytest.raises(UserError, match="'sklearn:lena': the sklearn package ships no image of that name"):
        load_sources(["sklearn:lena"])


def test_a_shrunk_set_is_the_bicubic_downscale_of_its_source_then_degraded(tmp_path):
    src = np.random.default_rng(3).integers(0, 256, (35, 42, 3), dtype=np.uint8)  # odd: cropped to 34x42 first
    (tmp_path / "in").mkdir()
    write_png(tmp_path / "in" / "a.png", src)
    assert prepare_set([str(tmp_path / "in")], 4, tmp_path / "out", shrink=2) == 1
    hr = crop_to_scale(bicubic_downscale(src[:34], 2), 4)  # 17x21 -> 16x20
    assert hr.shape == (16, 20, 3)
    assert (read_image(tmp_path / "out/HR/a.png") == hr).all()
    assert (read_image(tmp_path / "out/LR/a.png") == bicubic_downscale(hr, 4)).all()
