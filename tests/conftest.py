import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# One command of a test (a tiny DAG's whole `dvc repro` takes ~1-2 min); pyproject.toml's pytest
# timeout bounds a whole test above it, so a hang fails with the command rather than the test's ceiling.
COMMAND_TIMEOUT = 600
# Two xdist workers and the DAGs' stages share 2 cores: OpenMP threads that spin while they wait would take
# the cores from the other processes. Set before any test module imports torch; the subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}  # the venv's dvc


def demo() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def tiny() -> dict:
    """The demo params shrunk to seconds: an 8-feature, 1-block teacher, one width, two prune ratios."""
    p = demo()
    p["base"]["profile"] = "test"
    p["grid"] = {"prune": [0.3, 0.5], "width": [4]}
    p["ablation"] = {"prune": 0.3, "width": [4]}
    p["data"]["train"] = ["skimage:astronaut"]
    p["data"]["test"] = {"tiny": ["skimage:chelsea"]}
    p["net"] = {"num_feat": 8, "num_block": 1, "num_grow_ch": 4, "d_num_feat": 4}
    for block in ("teacher", "distill"):
        p[block].update(batch_size=2, warmup_iters=3, gan_iters=2, log_every=1)
    return p


@pytest.fixture
def demo_params() -> dict:
    """A fresh copy of the demo params.yaml as a plain dict, for tests to alter."""
    return demo()


@pytest.fixture
def tiny_params() -> dict:
    return tiny()


def run(repo: Path, *args: str, log: Path | None = None) -> str:
    """Run a command in `repo` (ENV), assert it succeeded and return its output.

    A command that leaves processes behind (`dvc queue start`) writes to `log` instead of a pipe: they
    would inherit the pipe, hold it open, and the wait for its end would never end.
    """
    with open(log, "w") if log else contextlib.nullcontext() as out:
        streams = {"stdout": out, "stderr": subprocess.STDOUT} if log else {"capture_output": True}
        done = subprocess.run(args, cwd=repo, env=ENV, text=True, timeout=COMMAND_TIMEOUT, **streams)
    output = log.read_text() if log else done.stdout + done.stderr
    assert done.returncode == 0, f"{args} failed:\n{output}"
    return output


def ran(log: str) -> list[str]:
    """The stages a dvc log says it ran, in order."""
    return re.findall(r"Running stage '([^']+)'", log)


def new_repo(repo: Path) -> Path:
    """A git + DVC repository holding the project's DAG with the tiny params, committed."""
    for item in ("dvc.yaml", "stages", "src", "data/raw/README.md", "data/pretrained/README.md", "data/paper_tables.csv"):
        src, dst = ROOT / item, repo / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")) if src.is_dir() else shutil.copy(src, dst)
    params = tiny()
    params["data"]["test"]["MIV"] = ["data/raw/MIV"]  # not public: skipped, and the report says so
    params["data"]["train_subimages"] = {"size": 128, "step": 64}  # astronaut (512x512): 7 x 7, read when drawn
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(repo, "git", "init", "-q")
    run(repo, "git", "config", "user.name", "esrkd test")
    run(repo, "git", "config", "user.email", "test@esrkd.invalid")
    run(repo, "dvc", "init", "-q")
    run(repo, "dvc", "config", "core.autostage", "true")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "tiny")
    return repo


def copy_repo(src: Path, dst: Path) -> Path:
    """A copy of a repository with its DVC cache and run-cache: stages whose inputs a test leaves alone
    are up to date there, and the ones it changes run. .dvc/tmp (locks, the experiment queue) stays behind."""
    shutil.copytree(src, dst, symlinks=True, ignore=lambda folder, names: ["tmp"] if Path(folder).name == ".dvc" else [])
    return dst


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`make test` runs two pytest-xdist workers (--dist loadgroup) and sends each group to one of them: a module
    is a group, so its module fixtures are built once. The modules that use the tiny DAGs go first, so that
    their build (`tiny_dags`, both cores) starts at once and the other worker waits for it, not the reverse."""
    for item in items:
        item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    items.sort(key=lambda item: "tiny_dags" not in item.fixturenames)  # stable: the order within a module stays


@dataclass(frozen=True)
class Built:
    repo: Path
    log: str  # that `dvc repro`, from scratch


@pytest.fixture(scope="session")
def tiny_dags(tmp_path_factory) -> tuple[Built, Built]:
    """The tiny DAG built from scratch twice, independently and side by side (two processes on 2 cores).

    The first is shared and no test changes it: tests take a `copy_repo` of it, so that only what they
    change runs. The second is for the determinism check (tests/test_pipeline.py). Under pytest-xdist the
    first worker to need them builds them in the session's shared folder; the other waits on the lock and
    takes the same two.
    """
    shared = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        shared = shared.parent  # each worker's own folder sits in the session's
    record = shared / "tiny-dags.json"
    with FileLock(shared / "tiny-dags.lock"):
        if not record.exists():
            repos = [new_repo(shared / name) for name in ("tiny-dag", "again")]
            with ThreadPoolExecutor() as pool:
                logs = list(pool.map(lambda repo: run(repo, "dvc", "repro"), repos))
            run(repos[0], "git", "add", "-A")
            run(repos[0], "git", "commit", "-qm", "baseline results")  # a baseline for the copies' experiments
            record.write_text(json.dumps([[str(repo), log] for repo, log in zip(repos, logs)]))
    first, second = (Built(Path(repo), log) for repo, log in json.loads(record.read_text()))
    return first, second


@pytest.fixture(scope="session")
def tiny_dag(tiny_dags) -> Built:
    return tiny_dags[0]
