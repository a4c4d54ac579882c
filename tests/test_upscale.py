"""`esrkd upscale`: tiled output equals the whole-image output once the pad covers the receptive
field, for 16-bit, RGBA and grey images too; ONNX and ncnn files run like checkpoints; bf16 on the CPU
stays close to fp32; bad inputs are skipped, inputs never overwritten."""

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from esrkd.arch import RRDBArgs, RRDBNet
from esrkd.checkpoint import save_generator
from esrkd.cli import main
from esrkd.data import read_image, write_png
from esrkd.export import export_ncnn, export_onnx
from esrkd.metrics import psnr
from esrkd.tiles import receptive_radius, super_resolve
from esrkd.upscale import GRAY, Model, cpu_bf16, load_model, read_photo, upscale_files, upscale_image, write_photo

CPU = torch.device("cpu")


def _net(num_block: int = 1, scale: int = 4) -> RRDBNet:
    """A random RRDBNet whose outputs spread over [0, 1]: a fresh one saturates to 0 or 255, where seams would not show."""
    torch.manual_seed(0)
    net = RRDBNet(RRDBArgs(num_feat=8, num_block=num_block, num_grow_ch=4, scale=scale)).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        net.conv_last.weight.mul_(0.2 / net(x).std())
        net.conv_last.bias.add_(0.5 - net(x).mean())
    return net


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "net_g.pth"
    net = _net()
    save_generator(path, net, None, {"role": "teacher"})
    return path, net


@pytest.mark.parametrize("scale", [4, 2])
def test_receptive_radius_is_the_support_of_an_output_pixels_gradient(scale):
    args = RRDBArgs(num_feat=4, num_block=1, num_grow_ch=4, scale=scale)
    net = RRDBNet(args).double()  # float32 underflows to exact zeros this far out
    n = 2 * receptive_radius(args) + 8
    x = torch.rand(1, 3, n, n, dtype=torch.float64, requires_grad=True)
    reach = 0
    for k in range(n // 2 * scale, n // 2 * scale + 4):  # every phase of an HR pixel within its LR pixel and unshuffled block
        x.grad = None
        net(x)[0, :, k, k].sum().backward()
        rows = torch.nonzero(x.grad[0].abs().sum((0, 2))).flatten()
        reach = max(reach, k // scale - int(rows.min()), int(rows.max()) - k // scale)
    assert reach == receptive_radius(args)


def test_tiles_match_the_whole_image():
    net = _net()
    lr = _image(70, 100)  # 3 x 4 tiles of 32, the last row and column partial
    whole = super_resolve(net, lr, CPU)
    model = Model(net, CPU, net.args)
    db = {pad: psnr(upscale_image(model, lr, tile=32, pad=pad), whole, 0, False) for pad in (0, 16)}
    radius = receptive_radius(net.args)  # 19 > the default 16
    covered = upscale_image(model, lr, tile=32, pad=radius)
    off = np.abs(covered.astype(int) - whole).max(), np.mean(covered != whole)
    print(f"tiled vs whole: pad 0 {db[0]:.1f} dB, pad 16 {db[16]:.1f} dB; pad {radius}: max {off[0]} level(s) on {off[1]:.1e} of values")
    assert db[0] < 50 <= db[16]  # without context the seams show; the default pad hides them
    assert off[0] <= 1 and off[1] < 1e-4  # fp32: convs on other sizes round differently
    net64 = net.double()
    model64 = Model(lambda x: net64(x.double()).float(), CPU, net.args)
    assert np.array_equal(upscale_image(model64, lr, tile=32, pad=radius), super_resolve(model64.run, lr, CPU))


def test_onnx_file_runs_like_the_checkpoint(weights, tmp_path):
    path, net = weights
    export_onnx(net, tmp_path / "g.onnx")
    onnx, torch_model = load_model(tmp_path / "g.onnx"), load_model(path, fp32=True)
    assert onnx.args == net.args  # read from the file's metadata
    x = torch.rand(1, 3, 13, 21)
    with torch.no_grad():
        diff = float((onnx.run(x) - torch_model.run(x)).abs().max())
    print(f"ONNX vs PyTorch through upscale: max abs {diff:.1e}")
    assert diff < 1e-4
    lr = _image(40, 50)
    assert np.abs(upscale_image(onnx, lr, 32, 8).astype(int) - upscale_image(torch_model, lr, 32, 8)).max() <= 1


def test_folder_with_bad_files_writes_the_rest_and_exits_1(weights, tmp_path, capsys):
    path, net = weights
    src = tmp_path / "in"
    src.mkdir()
    lr = _image(20, 30)
    write_png(src / "good.png", lr)
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(src / "alpha.png")  # upscaled now, as Real-ESRGAN does
    (src / "broken.png").write_bytes(b"not a png")
    cv2.imwrite(str(src / "float.tiff"), np.zeros((8, 8), np.float32))  # decodes, but is no 8- or 16-bit image
    with pytest.raises(SystemExit) as done:
        main(["upscale", str(path), str(src), "-o", str(tmp_path / "out"), "--tile", "16", "--pad", "8", "--fp32"])
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert "broken.png: cannot be read as an image" in err and "float.tiff: holds float32 pixels" in err
    assert "error: 2 of 4 input(s) not upscaled" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["alpha.png", "good.png"]
    assert read_photo(tmp_path / "out" / "alpha.png").shape == (32, 32, 4)
    expected = upscale_image(Model(net, CPU, net.args), lr, 16, 8)
    assert np.array_equal(read_image(tmp_path / "out" / "good.png"), expected)


def test_files_to_a_folder_and_one_file_to_a_file(weights, tmp_path):
    path, _ = weights
    write_png(tmp_path / "a.png", _image(6, 9))
    Image.fromarray(_image(7, 5)).save(tmp_path / "b.jpg")
    main(["upscale", str(path), str(tmp_path / "a.png"), str(tmp_path / "b.jpg"), "-o", str(tmp_path / "out")])
    assert read_image(tmp_path / "out" / "b.png").shape == (28, 20, 3)
    main(["upscale", str(path), str(tmp_path / "a.png"), str(tmp_path / "a_x4.png")])  # the usage before -o existed
    assert read_image(tmp_path / "a_x4.png").shape == (24, 36, 3)


@pytest.mark.parametrize(("args", "message"), [
    (["in", "in"], "in/a.png: is an input and would be overwritten"),
    (["in/a.png", "in/a.png"], "in/a.png: is an input and would be overwritten"),
    (["in/a.png", "other/a.jpg", "out"], "several inputs would be written to the same file(s) ['a.png']"),
    (["in/a.png"], "give an output"),
    (["in/a.png", "out.jpg"], "esrkd writes PNG images"),
    (["missing.png", "out"], "no such file or folder: missing.png"),
])
def test_refused_before_anything_is_written(weights, tmp_path, monkeypatch, capsys, args, message):
    path, _ = weights
    monkeypatch.chdir(tmp_path)
    for folder in ("in", "other"):
        (tmp_path / folder).mkdir()
    write_png(tmp_path / "in" / "a.png", _image(6, 9))
    Image.fromarray(_image(6, 9, seed=1)).save(tmp_path / "other" / "a.jpg")
    before = (tmp_path / "in" / "a.png").read_bytes()
    with pytest.raises(SystemExit) as done:
        main(["upscale", str(path), *args])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert (tmp_path / "in" / "a.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "other"]


def test_x2_model_skips_an_image_with_an_odd_side(tmp_path):
    net = _net(scale=2)
    model = Model(net, CPU, net.args)
    write_png(tmp_path / "even.png", _image(8, 10))
    write_png(tmp_path / "odd.png", _image(7, 10))
    pairs = [(tmp_path / f"{n}.png", tmp_path / "out" / f"{n}.png") for n in ("even", "odd")]
    assert upscale_files(model, pairs, tile=4, pad=2) == [tmp_path / "odd.png"]
    assert read_image(tmp_path / "out" / "even.png").shape == (16, 20, 3)


def _exact(net: RRDBNet) -> Model:
    """The net in float64: tiles and one pass then agree exactly, not just within float32 rounding."""
    net64 = RRDBNet(net.args).double()
    net64.load_state_dict(net.state_dict())
    return Model(lambda x: net64(x.double()).float(), CPU, net.args)


def test_rgba_16_bit_and_grey_images_through_tiles_equal_one_pass():
    model = _exact(_net())
    radius = receptive_radius(model.args)
    rng = np.random.default_rng(3)
    images = {"rgba": _image(30, 41).repeat(2, axis=2)[..., :4],
              "16-bit": rng.integers(0, 65536, (30, 41, 3), dtype=np.uint16),
              "grey": rng.integers(0, 256, (30, 41, 1), dtype=np.uint8),
              "16-bit rgba": rng.integers(0, 65536, (30, 41, 4), dtype=np.uint16)}
    for name, lr in images.items():
        for alpha in ("model", "resize"):
            one = upscale_image(model, lr, tile=64, pad=0, alpha=alpha)
            assert one.dtype == lr.dtype and one.shape == (120, 164, lr.shape[2]), name
            assert np.array_equal(upscale_image(model, lr, tile=16, pad=radius, alpha=alpha), one), name


def test_plain_resize_alpha_is_opencvs_linear_resize_and_model_alpha_is_the_grey_images():
    model = _exact(_net())
    rgba = _image(20, 27).repeat(2, axis=2)[..., :4]
    rgba[..., 3] = np.random.default_rng(1).integers(0, 256, (20, 27))
    resized = upscale_image(model, rgba, alpha="resize")[..., 3]
    opencv = cv2.resize(rgba[..., 3], (27 * 4, 20 * 4), interpolation=cv2.INTER_LINEAR)  # Real-ESRGAN's plain path
    print(f"resize alpha vs OpenCV INTER_LINEAR: max {np.abs(resized.astype(int) - opencv).max()} level(s)")
    assert np.abs(resized.astype(int) - opencv).max() <= 1
    grey = upscale_image(model, np.repeat(rgba[..., 3:], 3, axis=2))
    luma = np.round(grey.astype(np.float32) @ GRAY)  # the model's alpha: the alpha run as a grey image
    assert np.abs(upscale_image(model, rgba)[..., 3] - luma).max() <= 1
    assert np.array_equal(upscale_image(model, rgba)[..., :3], upscale_image(model, rgba[..., :3]))


def test_grey_in_grey_out_the_luma_of_the_rgb_output():
    model = _exact(_net())
    grey = _image(12, 17)[..., :1]
    sr = upscale_image(model, grey)
    assert sr.shape == (48, 68, 1)
    rgb = upscale_image(model, grey.repeat(3, axis=2)).astype(np.float32)
    assert np.abs(sr[..., 0] - rgb @ GRAY).max() <= 1  # BT.601 luma, as OpenCV's RGB2GRAY (Real-ESRGAN's grey output)


def test_16_bit_in_16_bit_out_and_the_low_byte_counts(weights, tmp_path):
    path, _ = weights
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (10, 14, 3), dtype=np.uint16) * 256  # the low byte 0 ...
    b = a + rng.integers(1, 256, a.shape, dtype=np.uint16)  # ... and not: the same 8-bit image
    for name, image in (("a", a), ("b", b)):
        write_photo(tmp_path / f"{name}.png", image)
    main(["upscale", str(path), str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "out"), "--fp32"])
    sr_a, sr_b = read_photo(tmp_path / "out" / "a.png"), read_photo(tmp_path / "out" / "b.png")
    assert sr_a.dtype == np.uint16 and sr_a.shape == (40, 56, 3)
    differ = np.mean(sr_a != sr_b)
    print(f"16-bit inputs differing below 8 bits: {differ:.1%} of output values differ")
    assert differ > 0.5


def test_ncnn_param_runs_like_the_checkpoint(weights, tmp_path):
    path, net = weights
    export_ncnn(net, tmp_path / "g.param")
    ncnn_model, torch_model = load_model(tmp_path / "g.param", fp32=True), load_model(path, fp32=True)
    assert ncnn_model.args == net.args
    lr = _image(20, 30)
    diff = np.abs(upscale_image(ncnn_model, lr, 16, 8).astype(int) - upscale_image(torch_model, lr, 16, 8)).max()
    print(f"ncnn file (fp16 weights) vs checkpoint through upscale: max {diff} level(s)")
    assert diff <= 1


# bf16 keeps 8 mantissa bits: on this 1-block net measured 2 grey levels at most, 0.50 on average (51.1 dB)
BF16_MAX, BF16_MEAN = 4, 1.0


@pytest.mark.skipif(not cpu_bf16(), reason="this CPU has no bf16 instructions: upscale runs fp32")
def test_bf16_on_the_cpu_stays_close_to_fp32(weights):
    path, _ = weights
    lr = _image(40, 50)
    bf16, fp32 = (upscale_image(load_model(path, fp32=f), lr).astype(int) for f in (False, True))
    off = np.abs(bf16 - fp32)
    print(f"bf16 vs fp32: max {off.max()} level(s), mean {off.mean():.3f}, {psnr(bf16, fp32, 0, False):.1f} dB")
    assert 0 < off.max() <= BF16_MAX and off.mean() <= BF16_MEAN  # > 0: bf16 really ran
