"""dvc.yaml deps are what each stage uses: exactly the esrkd code its script imports, every file or folder
its command reads, and the data folders its params name. DVC re-runs a stage when, and only when, one changes."""

import ast
import json
import posixpath
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

PACKAGE = ROOT / "src/esrkd"
DVC_FILES = ["dvc.yaml", "studies/realsr/dvc.yaml", "studies/students/dvc.yaml"]
IN_PROGRESS = {"studies/students/dvc.yaml"}  # a study trained over several sessions: unfinished cells have no lock entry yet
PACKAGED_PREFIXES = ("skimage:", "sporco:", "sklearn:", "matplotlib:")  # esrkd.data: images that come with a package
PRETRAINED_DIR = "data/pretrained"  # where teacher.init files live (esrkd.weights rejects others)


def _stages(dvc_file: str) -> dict[str, dict]:
    # safe_load resolves YAML aliases; ${...} templates stay as text, which is enough: code deps have none,
    # and a data path is written the same way in cmd and deps. A foreach stage is checked through its `do`.
    stages = yaml.safe_load((ROOT / dvc_file).read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def _has_code(path: Path) -> bool:
    """Whether a module holds more than a docstring (the package's __init__.py runs on every esrkd import)."""
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)


@cache  # each module is parsed once for all stages
def _direct_imports(path: Path) -> frozenset[Path]:
    """The src/esrkd modules a file imports, at any depth: an import inside a function may run, so it counts;
    one under `if TYPE_CHECKING:` never runs, so it does not."""
    found = set()
    tree = ast.parse(path.read_text())
    # `if TYPE_CHECKING:` imports serve annotations only and never run: they are no dep
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
                 for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # `from .x import y` inside the package
                module = f"esrkd.{module}".rstrip(".")
            names = [module, *(f"{module}.{alias.name}" for alias in node.names)]  # `from esrkd import data`
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "esrkd" and len(parts) > 1 and (PACKAGE / f"{parts[1]}.py").is_file():
                found.add(PACKAGE / f"{parts[1]}.py")
    if found and _has_code(PACKAGE / "__init__.py"):
        found.add(PACKAGE / "__init__.py")
    return frozenset(found)


def _code_used(script: Path) -> set[Path]:
    """The script and every esrkd module it imports, directly or through other esrkd modules."""
    seen, todo = {script}, [script]
    while todo:
        for module in _direct_imports(todo.pop()) - seen:
            seen.add(module)
            todo.append(module)
    return seen


def _is_code(path: Path) -> bool:
    return path.suffix == ".py" and (path.is_relative_to(PACKAGE) or path.is_relative_to(ROOT / "stages"))


def _out_paths(stage: dict) -> list[str]:
    """outs, metrics and plots: each entry a path, or a one-key mapping from the path to its options."""
    entries = [e for key in ("outs", "metrics", "plots") for e in stage.get(key) or []]
    return [posixpath.normpath(next(iter(e)) if isinstance(e, dict) else e) for e in entries]


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _scripts_and_args(cmd: str) -> list[tuple[str, list[str]]]:
    """`python stages/x.py --a b && python stages/y.py` -> [("stages/x.py", ["--a", "b"]), ("stages/y.py", [])]."""
    found = []
    for part in cmd.split("&&"):
        words = shlex.split(part)
        at = next(i for i, word in enumerate(words) if word.endswith(".py"))
        found.append((words[at], words[at + 1:]))
    return found


WRITES = {"--out", "--metrics", "--images", "--timings"}  # a script's options that name what it writes


def _cmd_inputs(stage: dict, known_tops: set[str]) -> list[str]:
    """The paths the command reads: arguments that name a path and are neither an output of the stage nor
    written by an earlier script of its chain (a study cell's work/ folder).

    An argument is a path if it has a slash or is a top folder some dep or out of the file starts with
    (report's `--metrics metrics`); `${item.ratio}`, numbers and choices are neither."""
    made, paths = list(_out_paths(stage)), []
    for _, args in _scripts_and_args(stage["cmd"]):
        named = [(flag, posixpath.normpath(a)) for flag, a in zip(["", *args], args)
                 if not a.startswith("-") and ("/" in a or a in known_tops)]
        paths += [p for flag, p in named if flag not in WRITES and not any(_under(p, m) or _under(m, p) for m in made)]
        made += [p for flag, p in named if flag in WRITES]
    return paths


def _as_written(paths: set[Path], here: Path) -> str:
    """Paths as that dvc.yaml writes them: relative to its folder."""
    return ", ".join(sorted(posixpath.relpath(p, here) for p in paths))


@pytest.mark.parametrize("dvc_file", DVC_FILES)
def test_code_deps_are_exactly_the_modules_each_script_imports(dvc_file):
    here = (ROOT / dvc_file).parent
    problems = []
    for name, stage in _stages(dvc_file).items():
        used = set().union(*(_code_used((here / script).resolve()) for script, _ in _scripts_and_args(stage["cmd"])))
        listed = {(here / d).resolve() for d in stage.get("deps") or [] if _is_code((here / d).resolve())}
        if missing := used - listed:
            problems.append(f"{dvc_file} stage {name}: add to deps {_as_written(missing, here)}")
        if extra := listed - used:
            problems.append(f"{dvc_file} stage {name}: remove from deps {_as_written(extra, here)} (not imported by its script)")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("dvc_file", DVC_FILES)
def test_every_path_a_command_reads_is_a_dep(dvc_file):
    stages = _stages(dvc_file)
    entries = [p for s in stages.values() for p in [*(s.get("deps") or []), *_out_paths(s)]]
    tops = {posixpath.normpath(p).split("/")[0] for p in entries}
    problems = []
    for name, stage in stages.items():
        deps = [posixpath.normpath(d) for d in stage.get("deps") or []]
        for path in _cmd_inputs(stage, tops):
            if not any(_under(path, dep) for dep in deps):
                problems.append(f"{dvc_file} stage {name}: add {path} to deps (its cmd reads it)")
    assert not problems, "\n".join(problems)


def _packaged_names() -> set[str]:
    """esrkd.weights.PRETRAINED's keys, read from the source: importing it would cost torch's import."""
    tree = ast.parse((PACKAGE / "weights.py").read_text())
    found = (n.value for n in tree.body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "PRETRAINED")
    return set(ast.literal_eval(next(found)))


def _data_sources(params: dict) -> list[str]:
    """The folders params `data` reads (skimage:<name>, sporco:<name>, ... images come with a package)."""
    data = params["data"]
    sources = [*data["train"], *(data["train_lr"] or []), *data["val"], *(s for v in data["test"].values() for s in v)]
    return [posixpath.normpath(s) for s in sources if not s.startswith(PACKAGED_PREFIXES)]


@pytest.mark.parametrize("dvc_file", DVC_FILES)
def test_data_named_by_params_is_a_dep_of_its_stage_only(dvc_file):
    """New raw data (a private test set) re-runs prepare, not the teacher; the teacher's pretrained weights
    have a folder of their own, except a packaged name, whose files come with a pip package."""
    here = (ROOT / dvc_file).parent
    deps = {name: [posixpath.normpath(d) for d in s.get("deps") or []] for name, s in _stages(dvc_file).items()}
    problems = [f"{dvc_file} stage {name}: remove {d} from deps (only prepare reads data/raw)"
                for name, ds in deps.items() if name != "prepare" for d in ds if _under(d, "data/raw")]
    for params_file in sorted(here.glob("params*.yaml")):
        params = yaml.safe_load(params_file.read_text())
        for folder in _data_sources(params):
            if not any(_under(folder, d) for d in deps["prepare"]):
                problems.append(f"{dvc_file} stage prepare: add {folder} (or a folder above it) to deps "
                                f"({params_file.name} data)")
        init = params["teacher"]["init"]
        if init not in _packaged_names() and PRETRAINED_DIR not in deps["teacher"]:
            problems.append(f"{dvc_file} stage teacher: add {PRETRAINED_DIR} to deps "
                            f"({params_file.name} teacher.init: {init})")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("dvc_file", DVC_FILES)
def test_the_lock_file_holds_the_stages_of_its_dvc_yaml_and_no_others(dvc_file):
    """DVC keeps the entry of a stage that was renamed or dropped, and parses and rewrites the whole dvc.lock
    after every stage it runs: 27 stale entries cost each stage ~0.65 s."""
    folder = (ROOT / dvc_file).parent
    listed = subprocess.run([str(Path(sys.executable).parent / "dvc"), "stage", "list", "--name-only"], cwd=folder,
                            capture_output=True, text=True, check=True, timeout=120).stdout.split()
    lock = folder / "dvc.lock"
    locked = yaml.safe_load(lock.read_text())["stages"] if lock.is_file() or dvc_file not in IN_PROGRESS else {}
    stale, missing = sorted(set(locked) - set(listed)), sorted(set(listed) - set(locked))
    if dvc_file in IN_PROGRESS:
        missing = []
    assert not stale and not missing, (f"{folder / 'dvc.lock'}: stale entries {stale}, stages without one {missing}; "
                                       f"re-record it (rm dvc.lock && dvc commit -f) or run dvc repro")


def test_a_fresh_clone_of_the_students_study_has_nothing_to_run_for_its_finished_cells(tmp_path):
    """A cell's outputs are committed and it depends on code and params only: a new machine with a clone, and
    no DVC cache, must not train a finished cell again."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(tmp_path / "clone")], check=True, timeout=120)
    study = tmp_path / "clone/studies/students"
    finished = yaml.safe_load((study / "dvc.lock").read_text())["stages"]
    status = subprocess.run([str(Path(sys.executable).parent / "dvc"), "status", "--json"], cwd=study, capture_output=True,
                            text=True, check=True, timeout=120).stdout
    to_run = set(json.loads(status))
    assert finished and not to_run & set(finished), f"finished cells DVC would train again: {sorted(to_run & set(finished))}"


def test_the_students_report_hashes_the_cells_results_and_not_the_weights_left_beside_them():
    """The machine that trained a cell keeps its weights in cells/<cell>/student/ (gitignored); were they hashed
    into the report's `cells` dep, a clone would see the report as changed."""
    dvc, study = str(Path(sys.executable).parent / "dvc"), ROOT / "studies/students"
    weights = ["cells/a-none/student/net_g.pth", "cells/a-ramp/student/net_d.pth", "cells/a-ramp/student/adapters.pth"]
    assert subprocess.run([dvc, "check-ignore", *weights], cwd=study, capture_output=True, timeout=120).returncode == 0
    results = subprocess.run([dvc, "check-ignore", "cells/a-none/student/log/val.tsv", "cells/a-none/metrics/student-16.json"],
                             cwd=study, capture_output=True, text=True, timeout=120)
    assert results.returncode == 1 and not results.stdout  # what the report reads stays hashed


def test_a_training_stage_does_not_depend_on_code_it_only_names_in_annotations():
    """Editing the distiller must not re-run a teacher (hours on a GPU for the paper profile)."""
    teacher = {d for d in _stages("dvc.yaml")["teacher"]["deps"]}
    assert "src/esrkd/train.py" in teacher and "src/esrkd/distill.py" not in teacher
    assert "src/esrkd/distill.py" not in {d for d in _stages("dvc.yaml")["prune"]["deps"]}
    assert "src/esrkd/evaluate.py" not in {d for d in _stages("dvc.yaml")["report"]["deps"]}
