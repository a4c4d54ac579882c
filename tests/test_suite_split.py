"""`make test` splits the suite over two pytest-xdist workers by the groups tests/conftest.py gives. If a
pytest or pytest-xdist release ignores the groups (pytest 9.2.0 with xdist 3.8.0 did), a module's tests
scatter and its module fixtures are built twice: this runs the real hook on a small suite and checks where
each test ran, and that the modules that wait for the tiny DAGs start first, with the Makefile's options."""
import re
import shlex
import subprocess
import sys

from tests.conftest import ENV, ROOT

SHARED = """import pytest
@pytest.fixture(scope="session")
def tiny_dags():
    return 1
"""


def test_two_workers_keep_each_module_together_and_start_with_the_tiny_dags(tmp_path):
    (tmp_path / "conftest.py").write_text(f"from tests.conftest import pytest_collection_modifyitems\n{SHARED}")
    # fewer tests in the DAG modules: xdist's default order (most tests first) would start them last
    for name, uses, n in [("a_plain", False, 4), ("b_plain", False, 4), ("y_dags", True, 2), ("z_dags", True, 2)]:
        arg = "tiny_dags" if uses else ""
        (tmp_path / f"test_{name}.py").write_text(
            f"import pytest\n@pytest.mark.parametrize('i', range({n}))\ndef test_{name}(i, {arg}): pass\n")
    make_test = shlex.split(re.search(r"python -m pytest (.*)", (ROOT / "Makefile").read_text()).group(1))
    done = subprocess.run([sys.executable, "-m", "pytest", *(arg for arg in make_test if arg != "-q"), "-v", "-p", "no:cacheprovider",
                           "-o", "addopts=", str(tmp_path)],
                          cwd=tmp_path, env={**ENV, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    ran = re.findall(r"\[(gw\d)\] \[ *\d+%\] PASSED \S+::test_(\w+)\[\d\]@(\S+)", done.stdout)
    assert len(ran) == 12, done.stdout
    assert {name: group for _, name, group in ran} == {name: f"test_{name}" for name in ("a_plain", "b_plain", "y_dags", "z_dags")}
    workers = {name: {worker for worker, n, _ in ran if n == name} for _, name, _ in ran}
    assert all(len(used) == 1 for used in workers.values()), workers
    first = {worker: next(name for w, name, _ in ran if w == worker) for worker, _, _ in ran}
    assert sorted(first.values()) == ["y_dags", "z_dags"], done.stdout
