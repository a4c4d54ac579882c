"""benchmarks/gpu_check.sh --cpu-dry: the GPU check's steps at toy sizes, so that it cannot rot between GPU loans.

The slice is listed, not run (--dvc-dry: test_pipeline.py runs such a DAG), and the compiled part is left out (an
inductor compile on a CPU takes minutes); the throughput benchmark and the upscale run for real.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from esrkd.losses import PerceptualLoss, vgg_features

from .conftest import ROOT


@pytest.fixture(scope="module")
def check(tmp_path_factory) -> tuple[dict, Path]:
    out, torch_home = tmp_path_factory.mktemp("gpu_check"), tmp_path_factory.mktemp("torch_home")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "TORCH_HOME": str(torch_home)}
    done = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--cpu-dry", "--dvc-dry", "slice", "bench", "upscale",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [result] = out.glob("gpu_check_*_cpu_slice-bench-upscale.json")  # the name holds the date and the device
    return json.loads(result.read_text()), out


def test_the_slice_is_one_cell_of_the_grid_teacher_through_report(check):
    result, _ = check
    part = result["parts"]["slice"]
    assert result["cpu_dry"] is True and result["gpu"] == "cpu" and part["status"] == "ok"
    assert part["stages"] == ["prepare", "teacher", "prune", "evaluate_teacher", "distill@0.3-4", "ablate@0.3-4",
                              "evaluate", "export", "report"]
    assert part["sizes"] == {"blocks": 1, "batch": 2, "hr_patch": 32, "ratio": 0.3, "width": 4,
                             "iters_per_training": {"warmup": 3, "gan": 2}, "teacher_init": None}


def test_the_benchmark_times_every_path_of_the_recipes_step_perceptual_loss_included(check):
    bench = check[0]["parts"]["bench"]
    assert bench["status"] == "ok"
    out = bench["result"]
    assert out["device"] == "cpu" and out["sizes"]["blocks"] == 1 and out["sizes"]["batch"] == 2
    assert out["perceptual"].startswith("vgg19 with random weights") and out["bf16_matmul_tflops"] > 0
    # a lower bound of what one step counts: VGG19 to conv5_4 on SR and HR, and back through SR's branch
    with torch.device("meta"), FlopCounterMode(display=False) as vgg:  # shapes alone: nothing allocated
        vgg_features("vgg19", PerceptualLoss.LAYER["vgg19"])(torch.rand(2, 3, 32, 32))
    assert set(out["models"]) == {"teacher", "student-4"}
    for name, model in out["models"].items():
        assert model["step_flop"] > 3 * vgg.get_total_flops()
        row = model["paths"]["fp32"]
        assert model["paths"]["cuda_graphs_bf16"] == "n/a (CPU)" and set(model["paths"]) == {"fp32", "cuda_graphs_bf16"}
        assert row["it_s"] > 0 and row["peak_memory_gib"] == "n/a (CPU)" and row["l_pix_minus_fp32"] == 0 and row["l_pix"] > 0
        assert row["tflops"] == pytest.approx(model["step_flop"] * row["it_s"] / 1e12, rel=2e-3)
        assert row["pct_of_bf16_matmul"] == pytest.approx(100 * row["tflops"] / out["bf16_matmul_tflops"], rel=2e-3)
    assert out["models"]["student-4"]["params_g"] < out["models"]["teacher"]["params_g"]


def test_the_upscale_compares_fp32_and_bf16_on_one_frame(check):
    result, out = check
    up = result["parts"]["upscale"]
    assert up["frame"] == "64x36 -> 256x144"
    for precision in ("fp32", "bf16"):
        assert up[precision]["network_s"] > 0 and up[precision]["esrkd_upscale_s"] > 0 and up[precision]["runs_as"] == "fp32"
        assert np.asarray(Image.open(out / "work" / f"sr_{precision}.png")).shape == (144, 256, 3)
    assert up["psnr_bf16_vs_fp32_db"] is None and up["max_abs_diff_levels"] == 0  # the CPU: identical images
