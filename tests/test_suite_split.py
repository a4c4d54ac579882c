"""`make test` splits the suite over two pytest-xdist workers by the groups tests/conftest.py gives. If a
pytest or pytest-xdist release ignores the groups (pytest 9.2.0 with xdist 3.8.0 did), every worker builds
the tiny DAGs itself: this runs the real hook on a small suite and checks where each test ran."""
import re
import subprocess
import sys

from tests.conftest import ENV, ROOT

SHARED = """import pytest
@pytest.fixture(scope="session")
def tiny_dags():
    return 1
"""


def test_two_workers_keep_each_module_and_the_tiny_dag_modules_together(tmp_path):
    (tmp_path / "conftest.py").write_text(f"from tests.conftest import pytest_collection_modifyitems\n{SHARED}")
    for name, uses in [("dags_a", True), ("dags_b", True), ("plain_c", False), ("plain_d", False)]:
        arg = "tiny_dags" if uses else ""
        (tmp_path / f"test_{name}.py").write_text(
            f"import pytest\n@pytest.mark.parametrize('i', range(4))\ndef test_{name}(i, {arg}): pass\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-n", "2",
                           "--dist", "loadgroup", "-o", "addopts=", str(tmp_path)],
                          cwd=tmp_path, env={**ENV, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    ran = re.findall(r"\[(gw\d)\] \[ *\d+%\] PASSED \S+::test_(\w+)\[\d\]@(\S+)", done.stdout)
    assert len(ran) == 16, done.stdout
    groups = {name: group for _, name, group in ran}
    assert groups == {"dags_a": "tiny-dags", "dags_b": "tiny-dags", "plain_c": "test_plain_c", "plain_d": "test_plain_d"}
    workers = {group: {worker for worker, _, g in ran if g == group} for group in groups.values()}
    assert all(len(used) == 1 for used in workers.values()), workers
