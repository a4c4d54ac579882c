import json

import pandas as pd
import pytest

from esrkd import config
from esrkd.report import Inputs, write_report

from .conftest import ROOT


def _metrics_file(folder, role, prune, width, psnr, ssim, nonzero, timings=None, mode="features"):
    meta = {"role": role, "prune": prune, "perceptual": "unavailable: test"}
    if role == "student":
        meta["width"] = width
        meta["distill"] = {"mode": mode}
    body = {
        "model": meta,
        "params_total": 2 * nonzero,
        "params_nonzero": nonzero,
        "flops": (width or 64) * 1e9,
        "flops_input": "1x3x128x128",
        "protocol": {"y_channel": True, "crop_border": 4, "scale": 4},
        "average": {"psnr": (psnr + psnr + 1) / 2, "ssim": ssim, "fid": 100.0},
        "sets": {
            "A": {"n_images": 2, "psnr": psnr, "ssim": ssim, "fid": 100.0, "images": {}},
            "B": {"n_images": 1, "psnr": psnr + 1, "ssim": ssim, "fid": None, "images": {}},  # too few for FID
        },
    }
    name = f"{role}-{prune}" + (f"-{width}-{mode}" if role == "student" else "")
    (folder / f"{name}.json").write_text(json.dumps(body))
    if timings is not None:
        ms = 100.0 * (1 + prune / 10) if role == "teacher" else float(width)
        (timings / f"{name}.json").write_text(json.dumps({"device": "cpu", "threads": 2, "median_ms": ms}))


def test_report_tables_beside_the_papers_numbers(tmp_path, demo_params):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    for i, prune in enumerate([0.0, 0.3]):
        _metrics_file(metrics, "teacher", prune, None, 24.0 + i, 0.70, 1_000_000)
        for width in (16, 32):
            _metrics_file(metrics, "student", prune, width, 25.0 + i + width / 100, 0.75, width * 10_000)
    for mode, psnr in (("none", 24.0), ("output", 25.0)):
        _metrics_file(metrics, "student", 0.3, 16, psnr, 0.7, 160_000, mode=mode)
    demo_params["grid"].update(prune=[0.0, 0.3], width=[16, 32])
    p = config.parse(demo_params)
    out = tmp_path / "reports"
    metrics_json = write_report(p, Inputs(metrics, ROOT / "data" / "paper_tables.csv"), out)

    t2 = pd.read_csv(out / "table2.csv")
    assert t2.model.tolist() == ["Teacher", "Student_16", "Student_32"]  # teacher first, as in the paper
    assert t2.psnr.tolist() == [25.5, 26.66, 26.82]  # mean of sets A and B
    assert t2.psnr_paper.tolist() == [24.87, 25.98, 25.97]
    assert t2.params_m.tolist() == [1.0, 0.16, 0.32]
    assert t2.fid.tolist() == [100.0] * 3 and t2.fid_paper.tolist() == [90.97, 104.99, 128.53]
    assert t2.lpips.isna().all() and t2.lpips_paper.tolist() == [0.12, 0.23, 0.23]
    t1 = pd.read_csv(out / "table1.csv")
    assert t1.teacher_prune.tolist() == [0.0, 0.3] and t1.ssim_paper.tolist() == [0.78, 0.78]
    assert len(pd.read_csv(out / "grid.csv")) == 8 * 3  # 6 models + 2 ablations, x (2 sets + Average)
    ab = pd.read_csv(out / "ablation.csv")
    assert ab.distillation.tolist() == ["features", "output", "none"]
    assert ab.psnr.tolist() == [26.66, 25.5, 24.5]
    assert ab.psnr_gain.tolist()[:2] == pytest.approx([2.16, 1.0]) and ab.psnr_gain.isna().tolist()[2]
    assert metrics_json["ablation"]["none_16"]["psnr"] == 24.5
    assert metrics_json["grid"]["prune30"]["student_16_none"] == {"psnr": 24.5, "ssim": 0.7, "fid": 100.0,
                                                                  "params_nonzero": 160_000, "gflops": 16.0}
    assert metrics_json["table2"]["student_16"] == {"teacher_prune": 0.3, "params_m": 0.16, "psnr": 26.66, "ssim": 0.75, "fid": 100.0}
    assert json.loads((out / "metrics.json").read_text()) == metrics_json
    assert set(metrics_json["table1"]) == {"prune00", "prune30"}

    md = (out / "tables.md").read_text()
    assert "Profile: **demo**" in md and "does not reproduce the paper" in md
    assert ("| Student_16 |         0.16 | 26.66 (25.98, +0.68) | 0.7500 (0.7800, -0.0300) "
            "| 100.00 (104.99, -4.99)  | n/a (0.2300) |") in md
    assert "A (2 images), B (1 images)" in md and "4 pixels cropped" in md
    assert "- VGG perceptual loss: teacher: unavailable: test; student: unavailable: test." in md
    assert (out / "quality_vs_params.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "table1.png").is_file() and "| features       |" in md and "(+2.16)" in md


def test_report_states_flops_and_latency_ratios(tmp_path, demo_params):
    metrics, timings = tmp_path / "metrics", tmp_path / "timings"
    metrics.mkdir()
    timings.mkdir()
    for prune in (0.0, 0.5):
        _metrics_file(metrics, "teacher", prune, None, 24.0, 0.7, 1_000_000 if prune == 0 else 500_000, timings)
        _metrics_file(metrics, "student", prune, 16, 25.0, 0.75, 160_000, timings)
    demo_params["grid"].update(prune=[0.0, 0.5], width=[16])
    demo_params["prune"] = 0.5
    demo_params["ablation"]["prune"] = 0.5
    write_report(config.parse(demo_params), Inputs(metrics, ROOT / "data" / "paper_tables.csv", timings), tmp_path / "out")
    md = (tmp_path / "out/tables.md").read_text()
    assert ("the teacher pruned at 0.5 keeps 1.00x the FLOPs and runs at 1.05x the latency of the one pruned at 0, "
            "with 0.50x the non-zero parameters") in md
    assert "- Student_16: 0.25x the teacher's FLOPs, 0.16x its latency." in md
    assert "on cpu (2 threads)" in md
    assert (tmp_path / "out/quality_vs_latency.png").is_file()
    grid = json.loads((tmp_path / "out/metrics.json").read_text())["grid"]
    assert grid["prune50"]["teacher"]["latency_ms"] == 105.0 and grid["prune00"]["student_16"]["gflops"] == 16.0


def test_pruning_study_table_has_a_row_per_ratio_scope_and_finetune(tmp_path):
    from esrkd.data import prepare_test_sets
    from esrkd.report import pruning_study

    metrics, timings = tmp_path / "metrics", tmp_path / "timings"
    rows = [(0.0, "layer", 0, 28.8), (0.3, "layer", 0, 28.4), (0.3, "global", 0, 21.4), (0.3, "layer", 50, 29.9)]
    for prune, scope, iters, psnr in rows:
        folder = metrics / f"{scope}-ft{iters}" / str(prune)
        folder.mkdir(parents=True)
        (timings / f"{scope}-ft{iters}" / str(prune)).mkdir(parents=True)
        _metrics_file(folder, "teacher", prune, None, psnr, 0.8, round(16_697_987 * (1 - prune)),
                      timings / f"{scope}-ft{iters}" / str(prune))
        body = json.loads((folder / f"teacher-{prune}.json").read_text())
        body["model"]["prune_stats"] = {"scope": scope, "finetune_iters": iters}
        body["protocol"].update(fid="patches", fid_patch_size=64)
        body["sets"]["A"]["fid_samples"], body["sets"]["B"]["fid_samples"] = 28, 54
        (folder / f"teacher-{prune}.json").write_text(json.dumps(body))
    prepare_test_sets({"tiny": ["skimage:chelsea"]}, 4, tmp_path / "test")
    p = config.load(ROOT / "studies/realsr/params.yaml")
    table = pruning_study(p, metrics, timings, tmp_path / "test", ROOT / "data/paper_tables.csv", tmp_path / "out")

    # fine-tune first by length, then scope, then ratio; PSNR = mean of sets A (psnr) and B (psnr + 1)
    assert list(zip(table.finetune_iters, table.prune_scope, table.teacher_prune, table.psnr)) == [
        (0, "global", 0.3, 21.9), (0, "layer", 0.0, 29.3), (0, "layer", 0.3, 28.9), (50, "layer", 0.3, 30.4)]
    assert table.params_nonzero.tolist() == [11_688_591, 16_697_987, 11_688_591, 11_688_591]
    assert json.loads((tmp_path / "out/metrics.json").read_text())["layer_ft50"]["prune30"]["psnr"] == 30.4
    md = (tmp_path / "out/pruning.md").read_text()
    assert "`realsr-df2k`" in md and "crops per set: A 28, B 54" in md and "PSNR-Y (dB) 24.87" in md  # the paper's Teacher_0.3
    assert md.count("\n|") == 2 + len(rows)  # header, rule, one row per pruned teacher
