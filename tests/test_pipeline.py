"""End to end: the whole DAG with `dvc repro` on a tiny configuration in a temporary git repo."""

import json
import re
import shutil
import subprocess
import time
from contextlib import suppress
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from .conftest import COMMAND_TIMEOUT, ENV, Built, copy_repo, ran, run


@pytest.fixture(scope="module")
def repo(tiny_dag: Built, tmp_path_factory) -> Path:
    """This module's own copy of the session's tiny DAG, built from scratch (tests here change it in turn)."""
    return copy_repo(tiny_dag.repo, tmp_path_factory.mktemp("pipeline") / "repo")


def test_repro_runs_every_stage_then_nothing_then_only_report(tiny_dag, repo):
    log = tiny_dag.log  # the shared build's `dvc repro`, from scratch; `repo` is a copy of it
    expected = {"prepare", "teacher", "prune", "distill@0.3-4", "distill@0.5-4",
                "ablate@0.3-4", "evaluate_teacher", "evaluate", "export", "report"}
    assert set(ran(log)) == expected and len(ran(log)) == len(expected)

    md = (repo / "reports/tables.md").read_text()
    assert "Profile: **test**" in md and "tiny (1 images). Not run (folder not found): MIV (data/raw/MIV). Averages cover the sets that ran only" in md
    t2 = pd.read_csv(repo / "reports/table2.csv")
    assert t2.model.unique().tolist() == ["teacher", "student-4"] and (t2.teacher_prune == 0.3).all()
    psnr = t2[(t2.metric == "PSNR") & t2.dataset.isin(["tiny", "Average"])].ours
    assert len(psnr) == 4 and ((psnr > 5) & (psnr < 40)).all()  # five iterations of a tiny net: scored, not good
    models = ("teachers/0.3/teacher", "teachers/0.5/teacher", "students/0.3/student-4", "students/0.5/student-4",
              "students/0.3/student-4-none", "students/0.3/student-4-output")  # one run each: folders by prune ratio
    for model in models:
        m = json.loads((repo / f"metrics/{model}.json").read_text())
        assert m["sets"]["tiny"]["n_images"] == 1 and m["protocol"]["crop_border"] == 4
        assert (repo / f"results/{model}/tiny/chelsea.png").is_file()
        assert m["sets"]["tiny"]["fid"] is None  # one test image: no FID, said so rather than faked
        assert m["lpips_status"] == "available" and 0.1 < m["sets"]["tiny"]["lpips"] < 2  # AlexNet converted offline; far from HR
        assert m["flops"] > 0 and m["flops_input"] == "1x3x64x64"
        assert json.loads((repo / f"timings/{model}.json").read_text())["median_ms"] > 0
    assert len(list((repo / "data/prepared/train/HR").iterdir())) == 49
    pruned = json.loads((repo / "models/pruned/0.5/prune.json").read_text())
    assert pruned["scope"] == "layer" and abs(pruned["zero_fraction"] - 0.5) < 0.01  # each conv: round(0.5 n)
    sizes = json.loads((repo / "exports/0.3/sizes.json").read_text())
    assert set(sizes) == {"teacher", "student-4"} and sizes["teacher"]["onnx_max_abs_diff"] < 1e-4
    assert (repo / "exports/0.3/student-4.onnx").stat().st_size == sizes["student-4"]["onnx_bytes"]
    assert sizes["student-4"]["ncnn_bytes"] == sum((repo / f"exports/0.3/student-4.{s}").stat().st_size for s in ("param", "bin"))
    assert sizes["teacher"]["weights"] == "models/pruned/0.3/net_g.pth"  # one export run: each ratio in its folder
    assert json.loads((repo / "exports/0.5/sizes.json").read_text())["teacher"]["weights"] == "models/pruned/0.5/net_g.pth"
    assert "ONNX fp16 (MB)" in md and "ncnn fp16 (MB)" in md
    assert not list(repo.rglob(".*.tmp-*"))  # nothing half-written left behind

    assert ran(run(repo, "dvc", "repro")) == []  # in the copy too: its files and cache are the build's

    log = run(repo, "dvc", "exp", "run", "-S", "prune=0.5")
    assert ran(log) == ["report"]
    t2 = pd.read_csv(repo / "reports/table2.csv")
    assert (t2.teacher_prune == 0.5).all()
    diff = run(repo, "dvc", "metrics", "diff")
    assert re.search(r"table2\.teacher\.teacher_prune\s+0\.3\s+0\.5", diff), diff


def _out_hashes(lock_text: str) -> dict[str, str]:
    lock = yaml.safe_load(lock_text)
    # Timings differ run to run by nature; they live apart (timings/), and so do reports that quote them.
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])
            if not out["path"].startswith(("timings/", "reports/"))}


def test_two_fresh_runs_give_bitwise_equal_weights_and_metrics(tiny_dags):
    first, second = (_out_hashes((built.repo / "dvc.lock").read_text()) for built in tiny_dags)  # two independent builds
    assert "models/teacher" in first and "metrics/students" in first and "metrics/teachers" in first and "models/ablations/none-4" in first
    assert first == second


def _stop_queue(repo: Path) -> None:
    """`dvc queue stop`, then kill what is left of the queue's workers: every process working inside `repo`."""
    with suppress(subprocess.TimeoutExpired):
        subprocess.run(["dvc", "queue", "stop"], cwd=repo, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    inside = [p for p in psutil.process_iter(["cwd"]) if p.info["cwd"] and Path(p.info["cwd"]).is_relative_to(repo)]
    for proc in inside:
        with suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(inside, timeout=30)


def test_queued_experiments_train_grid_cells_in_parallel_and_repro_gathers_them(tiny_dag, tmp_path):
    """README's recipe: teachers once, one queued experiment per width naming its cells, run side by side
    (-j 2), then the full grid's `dvc repro` takes every cell from DVC's run-cache.

    The teachers come with a copy of the shared build; a new distill.lr makes every cell train here."""
    repo = copy_repo(tiny_dag.repo, tmp_path / "queue").resolve()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["grid"]["width"] = [2, 4]
    params["distill"]["lr"] /= 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(run(repo, "dvc", "repro", "prune")) == []
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "two widths, another distill.lr")
    cells = run(repo, "dvc", "stage", "list", "--name-only").split()
    for width in (2, 4):
        mine = [c for c in cells if c.startswith(("distill@", "ablate@")) and c.endswith(f"-{width}")]
        run(repo, "dvc", "exp", "run", "--queue", "-n", f"w{width}", *mine)
    try:
        run(repo, "dvc", "queue", "start", "-j", "2", log=tmp_path / "queue-start.log")  # its workers outlive it
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while re.search(r"Queued|Running", status := run(repo, "dvc", "queue", "status")) and time.monotonic() < deadline:
            time.sleep(5)  # the workers run in the background
    finally:
        _stop_queue(repo)
    assert re.search(r"w2\s.*Success", status) and re.search(r"w4\s.*Success", status), status

    log = run(repo, "dvc", "repro")
    restored = re.findall(r"Stage '([^']+)' is cached - skipping run", log)
    assert sorted(restored) == ["ablate@0.3-4", "distill@0.3-2", "distill@0.3-4", "distill@0.5-2", "distill@0.5-4"]
    assert not [s for s in ran(log) if s.startswith(("distill", "ablate", "teacher", "prune"))]
    t2 = pd.read_csv(repo / "reports/table2.csv")
    assert t2.model.unique().tolist() == ["teacher", "student-2", "student-4"]


def test_a_new_test_set_reruns_prepare_evaluation_and_report_not_training(repo):
    """A private test set dropped into data/raw costs an evaluation, not a re-trained teacher and grid."""
    run(repo, "dvc", "repro")  # a no-op after the tests above (the copy is built)
    (repo / "data/raw/newset").mkdir()
    shutil.copy(repo / "data/prepared/test/tiny/HR/chelsea.png", repo / "data/raw/newset/chelsea.png")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["test"]["newset"] = ["data/raw/newset"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert sorted(ran(run(repo, "dvc", "repro"))) == ["evaluate", "evaluate_teacher", "prepare", "report"]  # no teacher, prune, distill, ablate, export
    scored = [json.loads(f.read_text())["sets"]["newset"]["n_images"] for f in (repo / "metrics").rglob("*.json")]
    assert scored == [1] * 6  # every model: 2 pruned teachers, 2 students, 2 ablations
