"""benchmarks/step_overhead.py and benchmarks/latency_vs_flops.py run end to end at toy sizes."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from esrkd.arch import RRDBArgs, RRDBNet

from .conftest import ROOT


def _run(script: str, *args: str, cwd=ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=env)


def test_step_overhead_runs_the_same_math_on_both_sides(tmp_path):
    out = tmp_path / "overhead.json"
    done = _run("step_overhead.py", "--blocks", "1", "--teacher-width", "8", "--width", "4", "--batch", "2",
                "--warmup-iters", "2", "--gan-iters", "2", "--log-every", "1", "--repeats", "1", "--threads", "1",
                "--profile", "--top", "3", "--busy", "99", "--json", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["bitwise_same_weights"] is True  # project and bare loop train identical weights
    assert result["ratio"] > 0 and result["project_it_s"] > 0 and result["bare_it_s"] > 0
    assert "ratio project/bare" in done.stdout and "what the project calls more often" in done.stdout


def test_latency_vs_flops_prints_every_part(tmp_path):
    out, scratch = tmp_path / "latency.json", tmp_path / "scratch"
    scratch.mkdir()
    done = _run("latency_vs_flops.py", "--depth", "1", "--teacher-width", "8", "--widths", "4", "--tile", "16",
                "--frame", "40x24", "--parts", "a", "b", "c", "--repeats", "1", "--warmup", "0", "--threads", "1",
                "--busy", "99", "--json", str(out), env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr
    assert list(scratch.glob("esrkd_latency_*")) == []  # the ONNX files of part (c) go with their temporary folder
    result = json.loads(out.read_text())
    assert result["a"]["teacher_8"]["flop_ratio"] == 1.0 and 0 < result["a"]["student_4"]["flop_ratio"] < 1
    assert result["b"]["student_4"]["flop_ratio"] == result["a"]["student_4"]["flop_ratio"]  # FLOPs scale with pixels
    assert result["tiles"] == 3 * 2
    assert result["c"]["student_4"]["max_abs_diff"] < 1e-4 and result["c"]["student_4"]["ort_ms"] > 0


def _bench(monkeypatch, name: str = "latency_vs_flops"):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # as when the script runs: its helpers import
    spec = importlib.util.spec_from_file_location(name, ROOT / f"benchmarks/{name}.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_tiled_upscale_with_enough_context_equals_the_whole_image(monkeypatch):
    bench = _bench(monkeypatch)
    torch.manual_seed(0)
    net = RRDBNet(RRDBArgs(num_feat=8, num_block=1, num_grow_ch=4)).eval()
    lr = torch.rand(1, 3, 21, 37)
    with torch.no_grad():
        whole, tiled = net(lr), bench.upscale_tiled(net, lr, tile=8, overlap=24)  # 24 > the LR receptive radius
    assert tiled.shape == whole.shape == (1, 3, 84, 148)
    assert torch.allclose(tiled, whole, atol=1e-5)
    assert len(bench.tile_boxes(540, 960, 128, 16)) == 5 * 8


def test_the_tiles_are_those_of_the_project_upscaler(monkeypatch):
    upscale = pytest.importorskip("esrkd.upscale")
    bench = _bench(monkeypatch)
    torch.manual_seed(0)
    net = RRDBNet(RRDBArgs(num_feat=8, num_block=1, num_grow_ch=4)).eval()
    lr = (torch.rand(21, 37, 3) * 255).to(torch.uint8).numpy()
    with torch.no_grad():
        ours = bench.to_uint8(bench.upscale_tiled(net, bench.to_tensor(lr).unsqueeze(0), 8, 3)[0])
    model = upscale.Model(lambda x: net(x).float(), torch.device("cpu"), net.args)
    theirs = upscale.upscale_image(model, lr, 8, 3)
    # a pad of 3 is far below the receptive radius: only the same tiles and context give the same image
    assert ours.shape == theirs.shape == (84, 148, 3)
    assert abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_repro_time_gives_each_stage_kind_the_time_until_the_next_stage_starts(monkeypatch):
    bench = _bench(monkeypatch, "repro_time")
    lines = [(0.5, "Running stage 'prepare':"), (0.6, "> python stages/prepare.py --out data/prepared"),
             (3.0, "Updating lock file 'dvc.lock'"), (3.5, "Running stage 'prune@0.3':"), (5.0, "Running stage 'prune@0.5':"),
             (7.25, "Running stage 'report':"), (9.0, "Updating lock file 'dvc.lock'")]
    assert bench.stage_times(lines, 10.0) == {"prepare": 3.0, "prune": 1.5 + 2.25, "report": 2.75}
    assert bench.stage_times([(1.0, "Data and pipelines are up to date.")], 1.5) == {}


def test_cpu_quiet_counts_the_child_processes_it_waits_for_as_its_own(monkeypatch):
    quiet = _bench(monkeypatch, "cpu_quiet")
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass"
    before = quiet._own_cpu_seconds()
    subprocess.run([sys.executable, "-c", burn], check=True, timeout=60)
    # the child's 0.5 s of CPU are ours, so `timed` does not count them as other processes' load (and
    # this holds however busy the machine is, unlike the load `timed` reports)
    assert quiet._own_cpu_seconds() - before >= 0.5
