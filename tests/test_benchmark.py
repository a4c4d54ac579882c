"""benchmarks/train_throughput.py runs and compares its paths on the same weights and batches."""

import json
import subprocess
import sys

import yaml

from .conftest import ROOT


def test_throughput_benchmark_reports_every_path_with_its_loss(tmp_path, tiny_params):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/train_throughput.py"), "--params", "params.yaml",
                           "--iters", "2", "--width", "4"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["device"] == "cpu" and out["blocks"] == 1 and out["batch"] == 2
    for name in ("teacher", "student-4"):  # esrkd.checkpoint.model_name
        row = out[name]
        assert row["fp32_it_s"] > 0 and row["fast_it_s"] > 0
        assert abs(row["speedup"] - row["fast_it_s"] / row["fp32_it_s"]) <= 0.01
        # the CPU trains in fp32 on both paths: the same math from the same weights on the same batches
        assert row["fp32_l_pix"] == row["fast_l_pix"]
