import json
from pathlib import Path

import pandas as pd
import pytest

from esrkd import config
from esrkd.checkpoint import TEACHER, model_label, model_name, ratio_folder
from esrkd.errors import UserError
from esrkd.report import Inputs, findings, findings_md, write_report

from .conftest import ROOT


def _metrics_file(folder, role, prune, width, psnr, ssim, nonzero, timings=None, mode="features", sets=("A", "B")):
    """A metrics file (and a timings file) where the evaluate stage puts one: <folder>/<prune>/<model name>.json."""
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
            sets[0]: {"n_images": 2, "psnr": psnr, "ssim": ssim, "fid": 100.0, "images": {}},
            sets[1]: {"n_images": 1, "psnr": psnr + 1, "ssim": ssim, "fid": None, "images": {}},  # too few for FID
        },
    }
    path = folder / str(prune) / f"{model_name(meta)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body))
    if timings is not None:
        ms = 100.0 * (1 + prune / 10) if role == "teacher" else float(width)
        timing = timings / path.relative_to(folder)
        timing.parent.mkdir(parents=True, exist_ok=True)
        timing.write_text(json.dumps({"device": "cpu", "threads": 2, "median_ms": ms}))
    return path


SETS = ("BSD100", "skimage")  # one of the paper's test sets, one it lacks


def _hand_made_run(tmp_path, demo_params, exports=None) -> dict:
    """Teachers pruned at 0 and 0.3, students 16 and 32 of each, the two ablations of Student_16 from 0.3; the report
    written to tmp_path/reports. Returns what metrics.json holds."""
    metrics = tmp_path / "metrics"
    for i, prune in enumerate([0.0, 0.3]):
        _metrics_file(metrics, "teacher", prune, None, 24.0 + i, 0.70, 1_000_000, sets=SETS)
        for width in (16, 32):
            _metrics_file(metrics, "student", prune, width, 25.0 + i + width / 100, 0.75, width * 10_000, sets=SETS)
    for mode, psnr in (("none", 24.0), ("output", 25.0)):
        _metrics_file(metrics, "student", 0.3, 16, psnr, 0.7, 160_000, mode=mode, sets=SETS)
    demo_params["grid"].update(prune=[0.0, 0.3], width=[16, 32])
    src = Inputs(metrics, ROOT / "data" / "paper_tables.csv", exports=exports)
    return write_report(config.parse(demo_params), src, tmp_path / "reports")


def test_report_tables_beside_the_papers_numbers(tmp_path, demo_params):
    metrics_json = _hand_made_run(tmp_path, demo_params)
    out = tmp_path / "reports"

    t2 = pd.read_csv(out / "table2.csv")
    assert t2.columns.tolist() == ["model", "teacher_prune", "width", "params_m", "dataset", "metric", "ours", "paper"]
    assert t2.model.unique().tolist() == ["teacher", "student-16", "student-32"]  # teacher first, as in the paper
    # the paper's sets in its order, then the one only this run has, then the Average; 4 metrics each
    assert t2.dataset.unique().tolist() == ["BSD100", "Set14", "KHU", "MIV", "VRroom", "Urban100", "skimage", "Average"]
    assert len(t2) == 3 * 8 * 4 and (t2.teacher_prune == 0.3).all()
    cell = t2.set_index(["model", "dataset", "metric"])[["ours", "paper", "params_m"]]
    assert cell.loc[("teacher", "BSD100", "PSNR")].tolist() == [25.0, 24.24, 1.0]
    assert cell.loc[("student-16", "BSD100", "SSIM")].tolist() == [0.75, 0.71, 0.16]
    assert cell.loc[("student-32", "Average", "PSNR")].tolist() == [26.82, 25.97, 0.32]  # mean of the two sets
    assert cell.loc[("student-32", "Average", "FID")].tolist() == [100.0, 128.53, 0.32]
    ours_nan, paper_nan = cell.ours.isna(), cell.paper.isna()
    assert ours_nan[("teacher", "Set14", "PSNR")] and cell.paper[("teacher", "Set14", "PSNR")] == 24.81  # not run
    assert cell.ours[("student-16", "skimage", "PSNR")] == 27.16 and paper_nan[("student-16", "skimage", "PSNR")]
    assert ours_nan[("teacher", "skimage", "FID")]  # one image: no FID
    assert ours_nan.xs("LPIPS", level="metric").all() and cell.paper[("student-16", "Average", "LPIPS")] == 0.23

    t1 = pd.read_csv(out / "table1.csv")
    assert t1.columns.tolist() == t2.columns.tolist() and (t1.dataset == "Average").all()
    t1_cell = t1.set_index(["teacher_prune", "metric"])
    assert t1_cell.loc[(0.0, "SSIM"), ["model", "ours", "paper"]].tolist() == ["student-16", 0.75, 0.78]
    assert t1_cell.loc[(0.3, "FID"), ["ours", "paper"]].tolist() == [100.0, 104.99]
    assert len(pd.read_csv(out / "grid.csv")) == 8 * 3  # 6 models + 2 ablations, x (2 sets + Average)
    ab = pd.read_csv(out / "ablation.csv")
    assert ab.distillation.tolist() == ["features", "output", "none"]
    assert ab.model.tolist() == ["student-16", "student-16-output", "student-16-none"]
    assert ab.psnr.tolist() == [26.66, 25.5, 24.5]
    assert ab.psnr_gain.tolist()[:2] == pytest.approx([2.16, 1.0]) and ab.psnr_gain.isna().tolist()[2]

    # metrics.json: the headline numbers only; every model's averages go to grid.json
    assert set(metrics_json) == {"table2", "table1", "ablation"}
    assert json.loads((out / "metrics.json").read_text()) == metrics_json
    assert metrics_json["table2"]["student-16"] == {"teacher_prune": 0.3, "params_m": 0.16, "psnr": 26.66, "ssim": 0.75, "fid": 100.0}
    assert metrics_json["table1"] == {"prune00": {"psnr": 25.66, "ssim": 0.75, "fid": 100.0},
                                      "prune30": {"psnr": 26.66, "ssim": 0.75, "fid": 100.0}}
    assert set(metrics_json["ablation"]) == {"student-16", "student-16-output"}  # each one's gain over student-16-none
    assert metrics_json["ablation"]["student-16"]["psnr_gain"] == pytest.approx(2.16)
    grid = json.loads((out / "grid.json").read_text())
    assert "grid" not in metrics_json and set(grid) == {"prune00", "prune30"}
    assert grid["prune30"]["student-16-none"] == {"psnr": 24.5, "ssim": 0.7, "fid": 100.0, "params_nonzero": 160_000, "gflops": 16.0}

    md = (out / "tables.md").read_text()
    assert "Profile: **demo**" in md and "does not reproduce the paper" in md
    assert "| SSIM-Y ↑      | 0.7500 (0.7800, -0.0300)      | 0.7500 (0.7800, -0.0300) |" in md  # Table 1: a row per metric
    assert ("| Teacher    |         1.00 | 25.00 (24.24, +0.76) | not run (24.81) | not run (27.95) | not run (22.03) "
            "| not run (28.78) | not run (21.39) | 26.00 (—) | 25.50 (24.87, +0.63) |") in md  # Table 2, PSNR
    assert "| Student_16 |         0.16 | 100.00 (64.71, +35.29) | not run (9.80)  |" in md  # Table 2, FID
    assert "Not run here: BSD100" not in md and "Not run here: Set14, KHU, MIV, VRroom, Urban100." in md
    assert "BSD100 (2 images), skimage (1 images)" in md and "4 pixels cropped" in md
    assert "- VGG perceptual loss: teacher: unavailable: test; student: unavailable: test." in md
    assert "1. Every student beats the teacher in PSNR" in md and "would read: supported**. PSNR: Teacher 25.50;" in md
    assert (out / "quality_vs_params.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "table1.png").is_file() and "| features       |" in md and "(+2.16)" in md
    assert "| Student_16 (distillation: none)   |" in md  # the full grid, in the paper's labels


def test_every_model_has_one_name_in_every_output(tmp_path, demo_params):
    exports = tmp_path / "exports" / "0.3"
    exports.mkdir(parents=True)
    (exports / "sizes.json").write_text(json.dumps({"student-16": {"onnx_bytes": 2e6, "onnx_fp16_bytes": 1e6, "ncnn_bytes": 0.9e6}}))
    metrics_json = _hand_made_run(tmp_path, demo_params, exports.parent)
    out = tmp_path / "reports"

    # (teacher prune, name) of every model, as the metrics files are named: <prune>/<name>.json
    stems = {(float(f.parent.name), f.stem) for f in (tmp_path / "metrics").rglob("*.json")}
    assert stems == {(r, n) for r in (0.0, 0.3) for n in ("teacher", "student-16", "student-32")} | {
        (0.3, "student-16-none"), (0.3, "student-16-output")}
    grid = pd.read_csv(out / "grid.csv")
    assert set(zip(grid.teacher_prune, grid.model)) == stems
    assert grid.set_index(["teacher_prune", "model", "dataset"]).onnx_mb.dropna().to_dict() == {
        (0.3, "student-16", d): 2.0 for d in (*SETS, "Average")}  # sizes.json joined by name: the ablations stay out
    assert grid.set_index(["teacher_prune", "model", "dataset"]).ncnn_mb.dropna().to_dict() == {
        (0.3, "student-16", d): 0.9 for d in (*SETS, "Average")}
    grid_json = json.loads((out / "grid.json").read_text())
    assert {(int(key.removeprefix("prune")) / 100, name) for key, models in grid_json.items() for name in models} == stems
    t2 = pd.read_csv(out / "table2.csv")
    assert set(t2.model) == set(metrics_json["table2"]) == {"teacher", "student-16", "student-32"}
    assert set(pd.read_csv(out / "table1.csv").model) == {"student-16"}
    assert set(metrics_json["ablation"]) < set(pd.read_csv(out / "ablation.csv").model) < {n for _, n in stems}


@pytest.mark.parametrize("meta, name, label", [
    ({"role": "teacher", "prune": 0.3}, "teacher", "Teacher"),
    ({"role": "student", "width": 16, "distill": {"mode": "features"}}, "student-16", "Student_16"),
    ({"role": "student", "width": 48}, "student-48", "Student_48"),  # the paper's rows: features by default
    ({"role": "student", "width": 16, "distill": {"mode": "none"}}, "student-16-none", "Student_16 (distillation: none)"),
])
def test_a_models_label_is_the_papers_spelling_of_its_name(meta, name, label):
    assert model_name(meta) == name and model_label(name) == label


def test_models_are_grouped_in_the_folders_dvc_yaml_names_by_ratio():
    assert ratio_folder({"role": "teacher", "prune": 0.0}, Path("a")) == "0.0"  # as ${item.ratio} renders 0.0
    assert ratio_folder({"role": "student", "prune": 0.3, "width": 16}, Path("b")) == "0.3"
    with pytest.raises(UserError, match=r"models/teacher/net_g.pth: holds no prune ratio .* without --by-ratio"):
        ratio_folder({"role": "teacher", "prune": None}, Path("models/teacher/net_g.pth"))  # the unpruned teacher


def _average_rows(ours: dict[tuple[str, float], dict[str, float | None]]) -> pd.DataFrame:
    """A long table (as table1/table2 return it) of Average rows: (model, teacher prune) -> metric -> ours."""
    return pd.DataFrame([
        {"model": model, "teacher_prune": prune, "width": 0 if model == TEACHER else int(model.split("-")[1]),
         "params_m": 1.0, "dataset": "Average", "metric": metric, "ours": value, "paper": None}
        for (model, prune), by_metric in ours.items() for metric, value in by_metric.items()]).astype({"ours": float, "paper": float})


def _verdicts(profile="paper", teacher=(24.0, 0.12), students=((25.0, 0.23), (25.5, 0.22)),
              fid_by_prune=None, gains=None) -> list[str]:
    """The four verdicts on hand-made results; by default every claim of the paper holds."""
    t2 = _average_rows({(TEACHER, 0.3): {"PSNR": teacher[0], "SSIM": 0.7, "FID": 90.0, "LPIPS": teacher[1]}}
                       | {(f"student-{w}", 0.3): {"PSNR": psnr, "SSIM": 0.75, "FID": 100.0, "LPIPS": lpips}
                          for w, (psnr, lpips) in zip((16, 32), students)})
    fid_by_prune = {0.0: 126.0, 0.3: 105.0, 0.5: 127.0} if fid_by_prune is None else fid_by_prune
    t1 = _average_rows({("student-16", r): {"FID": fid} for r, fid in fid_by_prune.items()})
    gains = {"psnr": 1.0, "ssim": 0.01, "fid": -5.0} if gains is None else gains
    ab = pd.DataFrame([{"model": "student-16", "width": 16, "distillation": "features", **{f"{k}_gain": g for k, g in gains.items()}},
                       {"model": "student-16-none", "width": 16, "distillation": "none"}] if gains else [])
    return [verdict for _, verdict, _ in findings(t1, t2, ab, profile)]


def test_findings_support_every_claim_that_holds():
    assert _verdicts() == ["supported"] * 4


@pytest.mark.parametrize("change, claim, verdict", [
    # (a) every student above the teacher in PSNR
    ({"students": ((25.0, 0.23), (23.9, 0.22))}, 0, "not supported (Student_32 not above the teacher)"),
    ({"students": ((24.0, 0.23), (25.0, 0.22))}, 0, "not supported (Student_16 not above the teacher)"),  # a tie
    ({"teacher": (None, 0.12)}, 0, "cannot tell (no PSNR for the teacher)"),
    # (b) every student's LPIPS above (worse than) the teacher's
    ({"students": ((25.0, 0.10), (25.5, 0.22))}, 1, "not supported (Student_16 not above the teacher)"),
    ({"students": ((25.0, 0.23), (25.5, None))}, 1, "cannot tell (no LPIPS for Student_32)"),
    # (c) Student_16's lowest FID from the teacher pruned at 0.3
    ({"fid_by_prune": {0.0: 100.0, 0.3: 105.0, 0.5: 127.0}}, 2, "not supported (0 gives 100.00, 0.3 105.00)"),
    ({"fid_by_prune": {0.0: 105.0, 0.3: 105.0}}, 2, "not supported (0 gives 105.00, 0.3 105.00)"),  # a tie is no win
    ({"fid_by_prune": {0.0: 100.0, 0.5: 105.0}}, 2, "cannot tell (no FID from the teacher pruned at 0.3)"),
    ({"fid_by_prune": {0.3: 105.0}}, 2, "cannot tell (no other prune ratio has a FID)"),
    # (d) feature distillation beats none
    ({"gains": {"psnr": -1.0, "fid": 5.0}}, 3, "not supported"),
    ({"gains": {"psnr": 1.0, "ssim": 0.0, "fid": 5.0}}, 3, "mixed: better in PSNR; worse in FID"),
    ({"gains": {"psnr": 1.0, "fid": 0.0}}, 3, "supported"),  # no change in FID: not against it
    ({"gains": {}}, 3, "cannot tell (missing the ablation: a student trained without distillation)"),
])
def test_findings_say_when_a_claim_fails_or_cannot_be_tested(change, claim, verdict):
    verdicts = _verdicts(**change)
    assert verdicts[claim] == verdict
    assert [v for i, v in enumerate(verdicts) if i != claim] == ["supported"] * 3  # the others untouched


def test_findings_of_a_small_run_say_what_they_would_conclude():
    t2 = _average_rows({(TEACHER, 0.3): {"PSNR": 24.0, "SSIM": 0.7, "FID": 90.0, "LPIPS": None},
                        ("student-4", 0.3): {"PSNR": 23.0, "SSIM": 0.75, "FID": 100.0, "LPIPS": None}})
    t2["paper"] = [24.87, 0.74, 90.97, 0.12, None, None, None, None]
    t1 = _average_rows({("student-4", 0.3): {"FID": 100.0}, ("student-4", 0.5): {"FID": 90.0}})
    items = findings(t1, t2, pd.DataFrame(), "test")
    assert [verdict for _, verdict, _ in items] == [
        "too small to test (test run); would read: not supported (Student_4 not above the teacher)",
        "too small to test (test run); would read: cannot tell (no LPIPS for the teacher)",
        "too small to test (test run); would read: not supported (0.5 gives 90.00, 0.3 100.00)",
        "too small to test (test run); would read: cannot tell (missing the ablation: a student trained without distillation)"]
    assert items[0][2] == ("PSNR: Teacher 24.00; Student_4 23.00 (-1.00 vs the teacher; paper n/a). "
                           "SSIM: Teacher 0.7000; Student_4 0.7500 (+0.0500 vs the teacher; paper n/a).")
    assert items[2][2] == ("Student_4 (this run has no Student_16)'s FID by teacher prune ratio: "
                           "0.3: 100.00 (paper n/a), 0.5: 90.00 (paper n/a).")
    md = findings_md(items, "test")
    assert md.startswith("This is a **test** run: far too few images") and "\n4. Distillation beats no distillation" in md


def test_report_states_flops_and_latency_ratios(tmp_path, demo_params):
    metrics, timings = tmp_path / "metrics", tmp_path / "timings"
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
    grid = json.loads((tmp_path / "out/grid.json").read_text())
    assert grid["prune50"]["teacher"]["latency_ms"] == 105.0 and grid["prune00"]["student-16"]["gflops"] == 16.0


def test_pruning_study_table_has_a_row_per_ratio_scope_and_finetune(tmp_path):
    from esrkd.data import prepare_test_sets
    from esrkd.report import pruning_study

    metrics, timings = tmp_path / "metrics", tmp_path / "timings"
    rows = [(0.0, "layer", 0, 28.8), (0.3, "layer", 0, 28.4), (0.3, "global", 0, 21.4), (0.3, "layer", 50, 29.9)]
    for prune, scope, iters, psnr in rows:
        path = _metrics_file(metrics / f"{scope}-ft{iters}", "teacher", prune, None, psnr, 0.8,
                             round(16_697_987 * (1 - prune)), timings / f"{scope}-ft{iters}")
        body = json.loads(path.read_text())
        body["model"]["prune_stats"] = {"scope": scope, "finetune_iters": iters}
        body["protocol"].update(fid="patches", fid_patch_size=64)
        body["sets"]["A"]["fid_samples"], body["sets"]["B"]["fid_samples"] = 28, 54
        path.write_text(json.dumps(body))
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


def test_report_says_fid_is_na_and_why_when_its_weights_were_missing(tmp_path, demo_params):
    metrics = tmp_path / "metrics"
    why = "unavailable: FID needs pytorch-fid's Inception weights at /h/pt_inception-2015-12-05-6726825d.pth: install it"
    for role, width in (("teacher", None), ("student", 16), ("student", 32)):
        path = _metrics_file(metrics, role, 0.3, width, 25.0, 0.75, 160_000)
        body = json.loads(path.read_text())  # as stages/evaluate.py writes it without the weights (fid.load_fid)
        body["fid_status"], body["average"]["fid"] = why, None
        for s in body["sets"].values():
            s["fid"], s["fid_skipped"] = None, f"FID {why}"
        path.write_text(json.dumps(body))
    demo_params["grid"].update(prune=[0.3], width=[16, 32])
    metrics_json = write_report(config.parse(demo_params), Inputs(metrics, ROOT / "data" / "paper_tables.csv"), tmp_path / "out")
    md = (tmp_path / "out/tables.md").read_text()
    assert f"- FID: n/a ({why})\n" in md and "pytorch-fid's InceptionV3" not in md
    assert "| FID ↓         | n/a (104.99)             |" in md  # Table 1: ours n/a, the paper's beside it
    assert "| Student_16 |         0.16 | not run (64.71) |" in md and "| n/a (—) | n/a (—) | n/a (104.99) |" in md  # Table 2
    assert metrics_json["table2"]["student-16"] == {"teacher_prune": 0.3, "params_m": 0.16, "psnr": 25.5, "ssim": 0.75}  # no FID key
