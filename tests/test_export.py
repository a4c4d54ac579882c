"""ONNX and ncnn exports of a generator give PyTorch's output, at any image size."""

import json
import runpy
import sys

import onnx
import onnxruntime as ort
import pytest
import torch

from esrkd.arch import RRDBArgs, RRDBNet
from esrkd.checkpoint import save_generator
from esrkd.cli import main
from esrkd import export
from esrkd.errors import UserError
from esrkd.export import export_ncnn, export_onnx, onnx_max_abs_diffs, onnx_model, save_onnx

from .conftest import ROOT

ONNX_TOL = 1e-4  # fp32 ONNX vs PyTorch, max abs on [0, 1] outputs; measured ~3e-8
FP16_TOL = 1e-3  # weights rounded to fp16; measured ~5e-5 on this net


@pytest.fixture(scope="module")
def net() -> RRDBNet:
    torch.manual_seed(0)
    return RRDBNet(RRDBArgs(num_feat=16, num_block=1, num_grow_ch=8)).eval()


@pytest.fixture(scope="module")
def onnx_files(net, tmp_path_factory) -> tuple:
    folder = tmp_path_factory.mktemp("onnx")
    return (export_onnx(net, folder / "g.onnx"), folder / "g.onnx",
            export_onnx(net, folder / "g.fp16.onnx", fp16=True), folder / "g.fp16.onnx")


def test_onnx_matches_pytorch_at_two_odd_sizes_through_one_file(net, onnx_files):
    _, path, _, _ = onnx_files
    [first] = onnx_max_abs_diffs(net, [path], torch.rand(1, 3, 13, 21))
    [second] = onnx_max_abs_diffs(net, [path], torch.rand(2, 3, 17, 9))  # another batch, height and width: dynamic axes
    print(f"ONNX vs PyTorch max abs: 13x21 {first:.2e}, 2 x 17x9 {second:.2e}")
    assert first < ONNX_TOL and second < ONNX_TOL


def test_fp16_onnx_is_about_half_the_size_and_close(net, onnx_files):
    fp32_bytes, path32, fp16_bytes, path = onnx_files
    diff32, diff = onnx_max_abs_diffs(net, [path32, path], torch.rand(1, 3, 13, 21))
    print(f"fp16 ONNX: {fp16_bytes / fp32_bytes:.3f} of fp32's {fp32_bytes} bytes, max abs {diff:.2e}")
    assert 0.45 < fp16_bytes / fp32_bytes < 0.6  # above 0.5 by the graph and the casts
    assert diff < FP16_TOL and diff32 < diff / 10  # one PyTorch output, each file its own difference (fp16 rounds more)


def test_one_trace_gives_both_files_as_two_exports_do(net, onnx_files, tmp_path):
    """The export stage traces each model once: its fp16 file must not change the traced model it came from."""
    _, path32, _, path16 = onnx_files
    model = onnx_model(net)
    assert save_onnx(model, tmp_path / "g.fp16.onnx", fp16=True) == path16.stat().st_size
    assert save_onnx(model, tmp_path / "g.onnx") == path32.stat().st_size
    assert (tmp_path / "g.onnx").read_bytes() == path32.read_bytes()
    assert (tmp_path / "g.fp16.onnx").read_bytes() == path16.read_bytes()


def test_one_graph_serves_every_width_and_no_deprecation_shows(net, recwarn):
    """The exporter runs once per block count; a network of another width gets its own weights in that graph."""
    torch.manual_seed(1)
    other = RRDBNet(RRDBArgs(num_feat=5, num_block=1, num_grow_ch=3)).eval()
    for t in other.state_dict().values():
        t.normal_(0, 0.1)  # biases too: the graph must carry every one
    model = onnx_model(other)
    assert {i.name for i in model.graph.initializer} >= set(other.state_dict())
    onnx.checker.check_model(model)
    x = torch.rand(1, 3, 11, 7)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        assert abs(session.run(None, {"lr": x.numpy()})[0] - other(x).numpy()).max() < ONNX_TOL
    deprecations = [w for w in recwarn if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert not deprecations, deprecations[0].message  # the TorchScript-based exporter warned here


def test_cli_exports_beside_the_model_and_refuses_a_foreign_file(net, tmp_path, capsys):
    save_generator(tmp_path / "net_g.pth", net, None, {"role": "teacher"})
    main(["export", str(tmp_path / "net_g.pth"), "--fp16"])
    assert (tmp_path / "net_g.fp16.onnx").stat().st_size > 0
    main(["export", str(tmp_path / "net_g.pth"), "--format", "ncnn", "--out", str(tmp_path / "ncnn" / "g.param")])
    assert sorted(p.name for p in (tmp_path / "ncnn").iterdir()) == ["g.bin", "g.param"]  # none of pnnx's side files
    capsys.readouterr()
    (tmp_path / "foreign.pth").write_bytes(b"not a checkpoint")
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    for name, reason in (("foreign.pth", "not a readable PyTorch weights file"), ("other.pth", "it was not written by esrkd")):
        with pytest.raises(SystemExit) as done:
            main(["export", str(tmp_path / name)])
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {tmp_path / name}: ") and reason in err
    assert not list(tmp_path.glob("*.onnx.tmp-*"))


def test_stage_exports_every_model_and_records_sizes(net, tmp_path, monkeypatch):
    save_generator(tmp_path / "models" / "teacher" / "net_g.pth", net, None, {"role": "teacher"})
    student = RRDBNet(RRDBArgs(num_feat=4, num_block=1, num_grow_ch=4))
    save_generator(tmp_path / "models" / "students" / "4" / "net_g.pth", student, None, {"role": "student", "width": 4})
    monkeypatch.setattr(sys, "argv", ["export", "--models", str(tmp_path / "models"), "--out", str(tmp_path / "out")])
    runpy.run_path(str(ROOT / "stages" / "export.py"), run_name="__main__")
    sizes = json.loads((tmp_path / "out" / "sizes.json").read_text())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "sizes.json", "student-4.bin", "student-4.fp16.onnx", "student-4.onnx", "student-4.param",
        "teacher.bin", "teacher.fp16.onnx", "teacher.onnx", "teacher.param"]
    teacher = sizes["teacher"]
    assert teacher["onnx_bytes"] == (tmp_path / "out" / "teacher.onnx").stat().st_size
    assert teacher["ncnn_bytes"] == sum((tmp_path / "out" / f"teacher.{s}").stat().st_size for s in ("param", "bin"))
    assert teacher["params_bytes"] == 4 * teacher["params"]
    assert teacher["onnx_max_abs_diff"] < ONNX_TOL and teacher["onnx_fp16_max_abs_diff"] < FP16_TOL


def test_a_pnnx_that_fails_is_named_and_leaves_no_file(tmp_path, monkeypatch):
    pnnx = pytest.importorskip("pnnx")
    monkeypatch.setattr(pnnx, "EXEC_PATH", "false")  # a converter that exits 1
    net = RRDBNet(RRDBArgs(num_feat=6, num_block=1, num_grow_ch=4))  # a shape no other test converts (cached)
    with pytest.raises(UserError, match=r"pnnx could not convert an RRDBNet with RRDBArgs\(num_feat=6.* \(exit 1\).*ship ONNX instead"):
        export_ncnn(net, tmp_path / "g.param")
    assert list(tmp_path.iterdir()) == []


def _canonical(lines: list[str]) -> list[str]:
    """A .param's layers with layer names dropped and blobs numbered by first use: equal graphs compare equal."""
    blobs: dict[str, str] = {}
    out = [lines[1]]
    for line in lines[2:]:
        fields = line.split()
        n = 4 + int(fields[2]) + int(fields[3])
        fields[1] = "-"
        fields[4:n] = [blobs.setdefault(blob, str(len(blobs))) for blob in fields[4:n]]
        out.append(" ".join(fields))
    return out


@pytest.mark.parametrize("num_block", [3, 4])
def test_a_net_deeper_than_pnnx_converts_gets_pnnxs_own_graph(num_block):
    """pnnx's memory grows ~1.7x a block (23 blocks: over 20 GB), so it converts two and the rest repeat."""
    args = RRDBArgs(num_feat=8, num_block=num_block, num_grow_ch=4)
    ours = export._ncnn_param(args).splitlines()
    theirs = [line.replace(" in0", " data").replace(" out0", " output") for line in export._pnnx_param(args)]
    assert len(ours) == len(theirs) == 2 + 10 + 47 * num_block  # header, 10 layers around the trunk, 47 a block
    assert _canonical(ours) == _canonical(theirs)
