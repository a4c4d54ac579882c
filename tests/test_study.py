"""The real-students study's report: cells read from their committed files, the seed spread, the verdicts."""

import json

import pytest
import yaml

from esrkd import config
from esrkd.study import load_cells, seed_spread, verdict, write_study


def _cell(root, name, val_psnr, test, width=16, steps=(4, 8, 12, 16)):
    log = root / name / "student/log"
    log.mkdir(parents=True)
    (log / "val.tsv").write_text("step\tpsnr\tssim\n" + "".join(f"{s}\t{p}\t0.8\n" for s, p in zip(steps, val_psnr)))
    (root / name / "metrics").mkdir()
    (root / name / "metrics" / f"student-{width}.json").write_text(json.dumps({
        "params_total": 6_538_115, "average": test, "sets": {"pool": {"fid_samples": 80}}}))


def _params(demo_params, cells):
    demo_params["distill"].update(warmup_iters=16, gan_iters=0, val_every=4)
    demo_params["data"]["val"] = ["skimage:coffee"]
    demo_params["cells"] = cells
    return config.parse(demo_params)


def knobs(mode, seed, **more):
    return {"ratio": 0.3, "finetune": 0, "width": 16, "mode": mode, "loss": "mse_normalized", "weight": 0.05, "ramp": 0,
            "fit": False, "seed": seed, "gan": 0, "d_iters": 0} | more


def test_the_seed_spread_decides_whether_distillation_helps(tmp_path, demo_params):
    cells = {"none": knobs("none", 0), "none-s1": knobs("none", 1), "paper": knobs("features", 0), "ramp": knobs("features", 0, ramp=8)}
    p = _params(demo_params, cells)
    test = {"psnr": 27.0, "ssim": 0.8, "lpips": 0.3, "fid": 50.0}
    _cell(tmp_path, "none", [25.0, 26.0, 27.0, 28.00], test)
    _cell(tmp_path, "none-s1", [25.0, 26.0, 27.0, 28.10], test | {"psnr": 27.2})
    _cell(tmp_path, "paper", [20.0, 24.0, 27.0, 28.15], test)
    _cell(tmp_path, "ramp", [24.0, 26.0, 27.5, 28.50], test | {"psnr": 27.6})
    df = load_cells(p, tmp_path)
    assert df.set_index("cell").loc["ramp", ["val_psnr_q1", "val_psnr_half", "val_psnr_end"]].tolist() == [24.0, 26.0, 28.5]
    assert seed_spread(df, "val_psnr_end") == pytest.approx(0.1)  # none vs none-s1
    assert seed_spread(df, "test_psnr") == pytest.approx(0.2)
    # ramp is the best features cell: +0.5 dB over none, more than twice the 0.1 dB spread
    summary = write_study(p, tmp_path, tmp_path / "no-teachers", {"psnr": 29.0, "ssim": 0.85}, tmp_path / "reports")
    assert summary["claims"]["d"] == "supported" and summary["seed_spread_val_psnr"] == pytest.approx(0.1)
    md = (tmp_path / "reports/students.md").read_text()
    assert "best features cell ramp vs none: +0.500 dB" in md and "Bicubic on the test pool: PSNR 29.00 dB" in md
    assert (tmp_path / "reports/val_curves.png").stat().st_size > 10_000


def test_verdicts_read_within_noise_under_twice_the_spread():
    assert verdict(0.15, 0.1) == "within noise (|+0.150| < 2 x spread 0.100)"
    assert verdict(0.25, 0.1) == "supported" and verdict(-0.25, 0.1) == "not supported"
    assert verdict(-3.0, 1.0, lower_is_better=True) == "supported"
    assert verdict(0.25, None) == "cannot tell (no seed spread measured yet)"
    assert verdict(None, 0.1) == "cannot tell (not measured yet)"


def test_the_study_params_are_valid_and_every_cell_has_the_knobs_it_needs():
    from .conftest import ROOT

    p = config.load(ROOT / "studies/students/params.yaml")
    assert p.net.num_block == 23 and p.distill.warmup_iters == 1500 and p.distill.val_every == 100
    assert {c.width for c in p.cells.values()} <= {16, 32, 48}
    assert set(yaml.safe_load((ROOT / "studies/students/params.yaml").read_text())["cells"]) == set(p.cells)


def _teacher(root, name, finetune, test):
    (root / name / "metrics").mkdir(parents=True)
    (root / name / "metrics" / "teacher.json").write_text(json.dumps({
        "model": {"prune": 0.3, "prune_stats": {"finetune_iters": finetune}}, "params_total": 16_697_987, "average": test}))


def test_each_student_is_held_against_the_teacher_it_learned_from(tmp_path, demo_params):
    cells = {"none": knobs("none", 0), "none-s1": knobs("none", 1), "ft50": knobs("features", 0, finetune=50)}
    p = _params(demo_params, cells)
    test = {"psnr": 27.0, "ssim": 0.8, "lpips": 0.3, "fid": 50.0}
    _cell(tmp_path / "cells", "none", [25.0, 26.0, 27.0, 28.0], test)
    _cell(tmp_path / "cells", "none-s1", [25.0, 26.0, 27.0, 28.1], test | {"psnr": 27.1, "lpips": 0.31})
    _cell(tmp_path / "cells", "ft50", [25.0, 26.0, 27.0, 28.2], test | {"psnr": 28.0, "lpips": 0.40})
    _teacher(tmp_path / "teachers", "ft0", 0, test | {"psnr": 26.0, "lpips": 0.20})
    _teacher(tmp_path / "teachers", "ft50", 50, test | {"psnr": 30.0, "lpips": 0.35})
    summary = write_study(p, tmp_path / "cells", tmp_path / "teachers", {"psnr": 29.0, "ssim": 0.85}, tmp_path / "reports")
    md = (tmp_path / "reports/students.md").read_text()
    # against ft50 (30.0 dB, LPIPS 0.35), not ft0: -2 dB (spread 0.1) and +0.05 LPIPS (spread 0.01)
    assert "Student_16 (ft50) -2.000 vs the teacher (not supported)" in md
    assert "Student_16 (ft50) +0.050 vs the teacher (supported)" in md
    assert summary["claims"]["a"] == "not supported" and summary["claims"]["b"] == "supported"


def test_a_gan_phase_cell_is_the_student_of_claims_a_and_b_and_its_warm_up_twin_the_before(tmp_path, demo_params):
    cells = {"none": knobs("none", 0), "none-s1": knobs("none", 1), "ramp": knobs("features", 0, ramp=8),
             "ramp-gan": knobs("features", 0, ramp=8, gan=8, d_iters=4)}
    p = _params(demo_params, cells)
    test = {"psnr": 27.0, "ssim": 0.8, "lpips": 0.3, "fid": 50.0}
    _cell(tmp_path / "cells", "none", [25.0, 26.0, 27.0, 28.0], test)
    _cell(tmp_path / "cells", "none-s1", [25.0, 26.0, 27.0, 28.1], test | {"psnr": 27.1, "lpips": 0.31})
    _cell(tmp_path / "cells", "ramp", [24.0, 26.0, 27.5, 28.5], test | {"lpips": 0.40, "fid": 60.0})
    # the same warm-up to the last digit but at step 12, then two GAN-phase scores
    _cell(tmp_path / "cells", "ramp-gan", [24.0, 26.0, 27.25, 28.5, 28.2, 27.9], test | {"psnr": 26.5, "lpips": 0.25, "fid": 40.0},
          steps=(4, 8, 12, 16, 20, 24))
    _teacher(tmp_path / "teachers", "ft0", 0, test | {"psnr": 27.5, "lpips": 0.20, "fid": 30.0})
    df = load_cells(p, tmp_path / "cells").set_index("cell")
    assert df.loc["ramp-gan", "val_psnr_end"] == 27.9 and df.loc["ramp", "val_psnr_end"] == 28.5  # each at its own end
    summary = write_study(p, tmp_path / "cells", tmp_path / "teachers", {"psnr": 29.0, "ssim": 0.85}, tmp_path / "reports")
    md = (tmp_path / "reports/students.md").read_text()
    # (d) compares warm-up cells: ramp +0.5 dB over none; (a), (b) the student after its GAN phase: -1 dB, +0.05 LPIPS
    assert "best features cell ramp vs none: +0.500 dB" in md
    assert "Student_16 (ramp-gan) -1.000 vs the teacher (not supported)" in md
    assert "Student_16 (ramp-gan) +0.050 vs the teacher (supported)" in md
    row = next(line for line in md.splitlines() if line.startswith("| Student_16"))
    assert [c.strip() for c in row.split("|")[1:-1]] == [
        "Student_16", "6.54", "ramp", "27.00", "0.400", "60.0", "ramp-gan", "26.50", "0.250", "40.0", "0.250"]
    assert summary["claims"]["a"] == "not supported" and summary["claims"]["b"] == "supported"


def test_a_gan_phase_cell_with_its_own_warm_up_snapshot_is_its_own_before(tmp_path, demo_params):
    cells = {"ramp": knobs("features", 0, ramp=8), "w32-gan": knobs("features", 0, width=32, gan=8, d_iters=4)}
    p = _params(demo_params, cells)
    test = {"psnr": 27.0, "ssim": 0.8, "lpips": 0.3, "fid": 50.0}
    _cell(tmp_path / "cells", "ramp", [24.0, 26.0, 27.5, 28.5], test)
    _cell(tmp_path / "cells", "w32-gan", [24.0, 26.0, 27.5, 28.5, 28.2, 27.9], test | {"psnr": 26.5, "lpips": 0.25, "fid": 40.0},
          width=32, steps=(4, 8, 12, 16, 20, 24))
    (tmp_path / "cells/w32-gan/metrics/student-32-warmup.json").write_text(json.dumps({
        "params_total": 9_000_000, "average": test | {"psnr": 27.25, "lpips": 0.45, "fid": 70.0}, "sets": {"pool": {"fid_samples": 80}}}))
    df = load_cells(p, tmp_path / "cells").set_index("cell")
    # the final scores come from student-32.json, whatever the order of the two files
    assert df.loc["w32-gan", ["test_psnr", "warmup_psnr", "warmup_lpips"]].tolist() == [26.5, 27.25, 0.45]
    write_study(p, tmp_path / "cells", tmp_path / "no-teachers", {"psnr": 29.0, "ssim": 0.85}, tmp_path / "reports")
    row = next(line for line in (tmp_path / "reports/students.md").read_text().splitlines() if line.startswith("| Student_32"))
    assert [c.strip() for c in row.split("|")[1:-1]] == [
        "Student_32", "6.54", "w32-gan at 16", "27.25", "0.450", "70.0", "w32-gan", "26.50", "0.250", "40.0", "0 (same run)"]


def test_table_1_holds_the_setting_that_ran_at_every_ratio(tmp_path, demo_params):
    # a lighter λ tried at 0.3 alone ends higher than the ramp; Table 1 and claim (c) still compare the ramp's cells
    cells = {"none": knobs("none", 0), "none-s1": knobs("none", 1), "ramp": knobs("features", 0, ramp=8),
             "ramp-r50": knobs("features", 0, ramp=8, ratio=0.5), "light": knobs("features", 0, ramp=8, weight=0.005)}
    p = _params(demo_params, cells)
    test = {"psnr": 27.0, "ssim": 0.8, "lpips": 0.3, "fid": 50.0}
    _cell(tmp_path, "none", [25.0, 26.0, 27.0, 28.0], test)
    _cell(tmp_path, "none-s1", [25.0, 26.0, 27.0, 28.1], test | {"fid": 51.0})
    _cell(tmp_path, "ramp", [25.0, 26.0, 27.0, 28.2], test | {"fid": 60.0})
    _cell(tmp_path, "ramp-r50", [25.0, 26.0, 27.0, 28.1], test | {"fid": 64.0})
    _cell(tmp_path, "light", [25.0, 26.0, 27.0, 28.6], test | {"fid": 40.0})
    summary = write_study(p, tmp_path, tmp_path / "no-teachers", {"psnr": 29.0, "ssim": 0.85}, tmp_path / "reports")
    md = (tmp_path / "reports/students.md").read_text()
    assert "best features cell light vs none: +0.600 dB" in md  # claim (d) takes the best features cell
    assert "patch FID by prune ratio: 0.3: 60.00, 0.5: 64.00" in md  # claim (c): the ramp at both ratios
    assert summary["claims"]["c"] == "supported"  # 64 - 60 = 4 > 2 x FID spread 1
    table = md[md.index("teacher pruned at"):].splitlines()
    assert [row.split("|")[2].strip() for row in table[2:4]] == ["ramp", "ramp-r50"]
