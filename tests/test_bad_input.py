"""Bad input stops a stage with one sentence naming the item, exit status 2, and no output left."""

import json
import runpy
import struct
import sys
import zlib

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from esrkd.arch import RRDBArgs, RRDBNet
from esrkd.checkpoint import save_generator
from esrkd.data import image_size, write_png
from esrkd.errors import UserError

from .conftest import ROOT


def _stage(monkeypatch, cwd, script, *args):
    """Run stages/<script>.py in-process as DVC would; return (exit status, stderr)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [script, *args])
    code = 0
    try:
        runpy.run_path(str(ROOT / "stages" / f"{script}.py"), run_name="__main__")
    except SystemExit as done:
        code = done.code
    return code


def _prepare(tmp_path, monkeypatch, capsys, params, files=None):
    """Write params.yaml (train from the folder tmp/train), the given files, run prepare."""
    train = tmp_path / "train"
    train.mkdir(exist_ok=True)
    params["data"]["train"] = [str(train)]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for name, write in (files or {}).items():
        write(train / name)
    code = _stage(monkeypatch, tmp_path, "prepare", "--out", "prepared")
    return code, capsys.readouterr().err


def _rgb(h=64, w=64):
    return lambda path: write_png(path, np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _assert_refused(code, err, *fragments, out=None):
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ")
    for fragment in fragments:
        assert fragment in line
    if out is not None:
        assert not out.exists()
        assert not list(out.parent.glob(f".{out.name}.tmp-*"))


def test_corrupt_and_truncated_images(tmp_path, monkeypatch, capsys, tiny_params):
    def truncated(path):
        _rgb()(path)
        path.write_bytes(path.read_bytes()[:200])

    code, err = _prepare(tmp_path, monkeypatch, capsys, tiny_params, {"good.png": _rgb(), "cut.png": truncated})
    _assert_refused(code, err, "cut.png: cannot be read as an image", "replace or remove the file", out=tmp_path / "prepared")
    (tmp_path / "train/cut.png").write_bytes(b"not an image at all")
    code, err = _prepare(tmp_path, monkeypatch, capsys, tiny_params)
    _assert_refused(code, err, "cut.png: cannot be read as an image", out=tmp_path / "prepared")


def test_non_image_files_are_skipped_with_a_warning(tmp_path, monkeypatch, capsys, tiny_params):
    notes = lambda path: path.write_text("notes")  # noqa: E731
    with pytest.warns(UserWarning, match=r"skipping 1 non-image file\(s\): notes.txt"):
        code, err = _prepare(tmp_path, monkeypatch, capsys, tiny_params, {"a.png": _rgb(), "notes.txt": notes})
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "prepared/train/HR").iterdir()) == ["a.png"]


def test_grayscale_becomes_rgb_and_odd_sizes_are_cropped(tmp_path, monkeypatch, capsys, tiny_params):
    gray = lambda path: Image.fromarray(np.full((70, 66), 90, np.uint8)).save(path)  # noqa: E731
    code, err = _prepare(tmp_path, monkeypatch, capsys, tiny_params, {"g.png": gray})
    assert code == 0, err
    hr = np.asarray(Image.open(tmp_path / "prepared/train/HR/g.png"))
    assert hr.shape == (68, 64, 3) and (hr == 90).all()  # mod-crop to a multiple of scale 4


def test_rgba_is_refused(tmp_path, monkeypatch, capsys, tiny_params):
    rgba = lambda path: Image.new("RGBA", (64, 64)).save(path)  # noqa: E731
    code, err = _prepare(tmp_path, monkeypatch, capsys, tiny_params, {"a.png": rgba})
    _assert_refused(code, err, "a.png: has an alpha channel", out=tmp_path / "prepared")


def _png(path, width, height, depth, color_type, raw):
    """A PNG written by hand: PIL writes no 16-bit RGB, nor a huge image without holding its pixels."""
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _png16(path, a):
    h, w, c = a.shape
    _png(path, w, h, 16, {1: 0, 3: 2}[c], b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h)))


def _bomb(side):
    """A real decompression bomb: a black 1-bit side x side PNG, ~20 KB on disk, 3 bytes a pixel decoded as RGB."""
    return lambda path: _png(path, side, side, 1, 0, (b"\x00" + bytes((side + 7) // 8)) * side)


# PIL only warns from 89,478,485 pixels (9500 x 9500) and raises past twice that (13500 x 13500): both are refused.
@pytest.mark.parametrize("side", [9500, 13500])
def test_decompression_bomb_is_refused(tmp_path, monkeypatch, capsys, tiny_params, side):
    code, err = _prepare(tmp_path, monkeypatch, capsys, tiny_params, {"good.png": _rgb(), "bomb.png": _bomb(side)})
    _assert_refused(code, err, "bomb.png: too many pixels to decode safely", f"({side * side} pixels)",
                    "esrkd refuses images over 89,478,485 pixels, so crop or downscale it, or remove it", out=tmp_path / "prepared")
    with pytest.raises(UserError, match=f"bomb.png: too many pixels.*{side * side} pixels"):  # the header-only reader too
        image_size(tmp_path / "train/bomb.png")


@pytest.mark.parametrize("channels", [3, 1])
def test_16_bit_png_is_refused(tmp_path, monkeypatch, capsys, tiny_params, channels):
    deep = lambda path: _png16(path, np.full((64, 64, channels), 40000, np.uint16))  # noqa: E731
    code, err = _prepare(tmp_path, monkeypatch, capsys, tiny_params, {"deep.png": deep})
    _assert_refused(code, err, "deep.png: is a 16-bit (or float) image; convert it to 8-bit RGB", out=tmp_path / "prepared")


def test_image_smaller_than_the_patch(tmp_path, monkeypatch, capsys, tiny_params):
    code, err = _prepare(tmp_path, monkeypatch, capsys, tiny_params, {"small.png": _rgb(20, 40)})
    _assert_refused(code, err, "image 'small' (40x20) is smaller than 32 pixels", out=tmp_path / "prepared")


def test_empty_and_missing_folders(tmp_path, monkeypatch, capsys, tiny_params):
    code, err = _prepare(tmp_path, monkeypatch, capsys, tiny_params)
    _assert_refused(code, err, "train holds no images", out=tmp_path / "prepared")
    tiny_params["data"]["test"] = {"gone": [str(tmp_path / "nowhere")], "MIV": ["data/raw/MIV"]}
    code, err = _prepare(tmp_path, monkeypatch, capsys, tiny_params, {"a.png": _rgb()})
    _assert_refused(code, err, "data.test: none of the test sets ['MIV', 'gone'] was found", out=tmp_path / "prepared")


def test_missing_training_data_says_how_to_download_it(tmp_path, monkeypatch, capsys, tiny_params):
    tiny_params["data"]["train_lr"] = ["data/raw/DIV2K_train_LR_bicubic_X4/X4"]
    code, err = _prepare(tmp_path, monkeypatch, capsys, tiny_params, {"a.png": _rgb()})
    _assert_refused(code, err, "params.yaml data.train_lr: data/raw/DIV2K_train_LR_bicubic_X4/X4 not found; "
                    "`esrkd download div2k` (--lr 4 for DIV2K's LR) fetches DIV2K into data/raw", out=tmp_path / "prepared")


def test_a_missing_test_set_is_skipped_and_listed(tmp_path, monkeypatch, capsys, tiny_params):
    tiny_params["data"]["test"] = {"tiny": ["skimage:chelsea"], "MIV": ["data/raw/MIV"]}
    code, err = _prepare(tmp_path, monkeypatch, capsys, tiny_params, {"a.png": _rgb()})
    assert code == 0, err
    assert "test/MIV: skipped, data/raw/MIV not found" in err
    prepared = tmp_path / "prepared" / "test"
    assert sorted(p.name for p in prepared.iterdir() if p.is_dir()) == ["tiny"]
    assert json.loads((prepared / "sets.json").read_text()) == {"prepared": {"tiny": 1}, "missing": {"MIV": ["data/raw/MIV"]}}


def test_perceptual_loss_without_vgg_weights_stops_training(tmp_path, monkeypatch, capsys, tiny_params):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))  # where torchvision would keep vgg19
    code, _ = _prepare(tmp_path, monkeypatch, capsys, tiny_params, {"a.png": _rgb()})
    assert code == 0
    tiny_params["teacher"].update(perceptual_weight=1.0, perceptual_net="vgg19")  # vgg16 would be built offline
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    code = _stage(monkeypatch, tmp_path, "teacher", "--data", "prepared/train", "--out", "teacher")
    _assert_refused(code, capsys.readouterr().err, "teacher.perceptual_weight is 1 but torchvision's vgg19 ImageNet weights are not at",
                    "vgg19-dcbb9e9d.pth", "or set teacher.perceptual_weight: 0", out=tmp_path / "teacher")


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda p: p.update(prune=1.2), "prune: 1.2 is not one of grid.prune"),
        (lambda p: p["grid"].update(prune=[0.3, -0.1]), "grid.prune.1: prune ratio -0.1 is outside [0, 1)"),
        (lambda p: p["grid"].update(width=[-4]), "grid.width: width -4 must be > 0"),
        (lambda p: p["grid"].update(width=[8]), "grid.width: width 8 must be > 0 and < net.num_feat (8)"),
        (lambda p: p["teacher"].update(lr_decay=0.5), "teacher.lr_decay: unknown key"),
        (lambda p: p["net"].update(num_feat="wide"), "net.num_feat: Input should be a valid integer"),
        (lambda p: p["grid"].update(prune=[0.3, 0.5, 0.3]), "grid.prune: [0.3] listed more than once; list each value once"),
        (lambda p: p["grid"].update(width=[4, 4]), "grid.width: [4] listed more than once"),
        (lambda p: p["ablation"].update(width=[4, 4]), "ablation.width: [4] listed more than once"),
        (lambda p: p["teacher"].update(lr=float("inf")), "teacher.lr: Input should be a finite number (got inf)"),
        (lambda p: p["distill"].update(betas=[0.9, float("nan")]), "distill.betas.1: Input should be a finite number (got nan)"),
    ],
)
def test_bad_params_stop_every_stage(tmp_path, monkeypatch, capsys, tiny_params, change, fragment):
    change(tiny_params)
    code, err = _prepare(tmp_path, monkeypatch, capsys, tiny_params, {"a.png": _rgb()})
    _assert_refused(code, err, "params.yaml: ", fragment, out=tmp_path / "prepared")


def test_prune_ratio_argument_out_of_range(tmp_path, monkeypatch, capsys):
    code = _stage(monkeypatch, tmp_path, "prune", "--teacher", "t.pth", "--ratio", "1.5", "--out", "o")
    assert code == 2 and "prune ratio 1.5 is outside [0, 1)" in capsys.readouterr().err


def test_two_models_that_would_write_the_same_files_are_refused_unless_their_ratios_tell_them_apart(tmp_path, monkeypatch, capsys):
    net = RRDBNet(RRDBArgs(num_feat=8, num_block=1, num_grow_ch=4))
    for ratio in (0.3, 0.5):  # as models/pruned/<ratio>/: both named "teacher"
        save_generator(tmp_path / "pruned" / str(ratio) / "net_g.pth", net, None, {"role": "teacher", "prune": ratio})
    code = _stage(monkeypatch, tmp_path, "export", "--models", "pruned", "--out", "x")
    _assert_refused(code, capsys.readouterr().err, "pruned/0.5/net_g.pth: a second model named teacher (first: pruned/0.3/net_g.pth)",
                    "--by-ratio", out=tmp_path / "x")
    assert _stage(monkeypatch, tmp_path, "export", "--models", "pruned", "--by-ratio", "--out", "x") == 0
    for ratio in ("0.3", "0.5"):
        sizes = json.loads((tmp_path / "x" / ratio / "sizes.json").read_text())
        assert sizes["teacher"]["weights"] == f"pruned/{ratio}/net_g.pth" and (tmp_path / "x" / ratio / "teacher.onnx").is_file()


def test_missing_and_incompatible_weights(tmp_path, monkeypatch, capsys, tiny_params):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    args = ["--test", "test", "--metrics", "m", "--images", "sr", "--timings", "t"]
    code = _stage(monkeypatch, tmp_path, "evaluate", "--models", "nothing.pth", *args)
    _assert_refused(code, capsys.readouterr().err, "nothing.pth: no such weights file or folder", out=tmp_path / "sr")

    torch.save({"params_ema": {"conv_first.weight": torch.zeros(1)}, "arch_args": {"num_feat": 8}}, tmp_path / "foreign.pth")
    code = _stage(monkeypatch, tmp_path, "evaluate", "--models", "foreign.pth", *args)
    _assert_refused(code, capsys.readouterr().err, "foreign.pth: weights do not fit RRDBNet", "missing ['conv_first.bias'",
                    out=tmp_path / "sr")

    torch.save({"RRDB_trunk.0.RDB1.conv1.weight": torch.zeros(1)}, tmp_path / "original.pth")
    code = _stage(monkeypatch, tmp_path, "evaluate", "--models", "original.pth", *args)
    _assert_refused(code, capsys.readouterr().err, "original.pth: lacks ['arch_args', 'params_ema']", out=tmp_path / "sr")

    net = RRDBNet(RRDBArgs(num_feat=8, num_block=1, num_grow_ch=4))
    save_generator(tmp_path / "ok.pth", net, None, {"role": "teacher", "prune": 0.0})
    (tmp_path / "test").mkdir()
    code = _stage(monkeypatch, tmp_path, "evaluate", "--models", "ok.pth", *args)
    _assert_refused(code, capsys.readouterr().err, "test: holds no prepared test sets", out=tmp_path / "sr")
    assert not (tmp_path / "m").exists() and not (tmp_path / "t").exists()
