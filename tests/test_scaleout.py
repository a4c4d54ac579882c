"""README "Scale-out": the grid on several machines that share a git remote and a DVC remote.

One clone holds the teachers and pushes; two worker clones train their own grid cells side by side and
push them with the run-cache; the first clone, as collector, `dvc repro --pull`s the whole grid and gets
every cell from the run-cache, none trained twice.
"""

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import yaml

from .conftest import copy_repo, ran, run

WIDTHS = (4, 6)
CELLS = ("distill@", "ablate@")  # the grid's training stages, one DVC stage per cell
TRAINING = ("teacher", "prune", *CELLS)


def _clone(origin: Path, path: Path) -> Path:
    # a worker machine: a plain clone of the git remote; the DVC remote comes with it in .dvc/config
    run(origin.parent, "git", "clone", "-q", "-c", "user.name=esrkd worker", "-c",
        "user.email=worker@esrkd.invalid", str(origin), str(path))
    return path


def _students(repo: Path) -> dict[str, str]:
    nets = [*repo.glob("models/students/*/*/net_g.pth"), *repo.glob("models/ablations/*/net_g.pth")]
    return {str(p.relative_to(repo)): hashlib.md5(p.read_bytes()).hexdigest() for p in nets}


def test_workers_train_disjoint_cells_and_the_collector_restores_every_one(tiny_dag, tmp_path):
    # The teachers come with a copy of the shared build; a new distill.lr makes every cell train on a worker.
    trainer = copy_repo(tiny_dag.repo, tmp_path / "trainer")
    params = yaml.safe_load((trainer / "params.yaml").read_text())
    params["grid"]["width"] = list(WIDTHS)
    params["distill"]["lr"] /= 2
    (trainer / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    origin = tmp_path / "origin.git"
    run(tmp_path, "git", "init", "-q", "--bare", str(origin))
    run(trainer, "git", "remote", "add", "origin", str(origin))
    run(trainer, "dvc", "remote", "add", "-d", "store", str(tmp_path / "store"))
    assert ran(run(trainer, "dvc", "repro", "prune")) == []  # the teachers are trained
    run(trainer, "git", "add", "-A")
    run(trainer, "git", "commit", "-qm", "teachers")
    run(trainer, "git", "push", "-q", "origin", "HEAD")
    run(trainer, "dvc", "push")

    cells = [s for s in run(trainer, "dvc", "stage", "list", "--name-only").split() if s.startswith(CELLS)]
    assert sorted(cells) == ["ablate@0.3-4", "distill@0.3-4", "distill@0.3-6", "distill@0.5-4", "distill@0.5-6"]

    def work(width: int) -> tuple[Path, list[str]]:  # one worker per width, as one SLURM array task per width would be
        worker = _clone(origin, tmp_path / f"w{width}")
        mine = [c for c in cells if c.endswith(f"-{width}")]
        log = run(worker, "dvc", "exp", "run", "--pull", "-n", f"w{width}", *mine)
        assert sorted(ran(log)) == sorted(mine), log
        assert "Pulling data for stage: 'teacher'" in log  # from the DVC remote, not trained again
        run(worker, "dvc", "exp", "push", "--run-cache", "origin", f"w{width}")
        return worker, ran(log)

    with ThreadPoolExecutor() as pool:  # the workers run at the same time
        workers, logs = zip(*pool.map(work, WIDTHS))
    assert sorted(sum(logs, [])) == sorted(cells)  # every cell trained, each on exactly one worker

    log = run(trainer, "dvc", "repro", "--pull")
    restored = re.findall(r"Stage '([^']+)' is cached - skipping run, checking out outputs", log)
    assert sorted(restored) == sorted(cells), log
    assert not [s for s in ran(log) if s.startswith(TRAINING)], log
    trained = {path: md5 for worker in workers for path, md5 in _students(worker).items()}
    assert len(trained) == len(cells) + 1 and _students(trainer) == trained  # byte for byte what the workers made
    assert pd.read_csv(trainer / "reports/table2.csv").model.unique().tolist() == ["teacher", "student-4", "student-6"]
