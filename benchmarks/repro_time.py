"""How long the demo's `dvc repro` takes from clean, for revisions of this repository, on one machine.

Each run clones a revision into a temporary folder (nothing cached: every stage runs) and reproduces it
with this environment's Python and DVC, the clone's own src/ first on PYTHONPATH, one run after the
other, each after the CPU has gone quiet (benchmarks/cpu_quiet.py). DVC's output is timestamped as it
arrives: a stage runs from its "Running stage" line to the next one. Prints the mean seconds per stage
kind (prune = every prune@<ratio>) for each revision, the mean totals and their ratios to the first
revision's, and how many cores other processes took meanwhile. Machines of one kind differ in speed:
compare the ratios, not the seconds. A machine's speed also drifts over minutes (here by up to ±8%), so
`--rounds N` runs the revisions N times in alternating order (A B, B A, ...), which cancels a steady
drift, and prints each round's ratios too.

    python benchmarks/repro_time.py BEFORE [OTHER ...] [--rounds N]    # git revisions; OTHER defaults to HEAD
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cpu_quiet import timed, wait_quiet  # benchmarks/ is on sys.path when a script in it runs

ROOT = Path(__file__).resolve().parents[1]
RUNNING = re.compile(r"Running stage '([^']+)'")


def stage_times(lines: list[tuple[float, str]], end: float) -> dict[str, float]:
    """Seconds per stage kind (the name before any @) from timestamped `dvc repro` output lines; a stage
    lasts from its "Running stage" line to the next one's, the last one until `end`."""
    starts = [(t, m.group(1)) for t, line in lines if (m := RUNNING.search(line))]
    kinds: dict[str, float] = {}
    for (t, name), (t_next, _) in zip(starts, [*starts[1:], (end, "")]):
        kind = name.split("@")[0]
        kinds[kind] = kinds.get(kind, 0.0) + t_next - t
    return kinds


def timed_repro(repo: Path) -> tuple[float, list[tuple[float, str]]]:
    """(seconds, timestamped output lines) of `dvc repro` in `repo`, with `repo`'s own code."""
    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [(time.perf_counter() - start, line.rstrip()) for line in proc.stdout]
    if proc.wait():
        tail = "\n".join(line for _, line in lines[-20:])
        raise SystemExit(f"dvc repro failed in {repo} (exit {proc.returncode}):\n{tail}")
    return time.perf_counter() - start, lines


def _mean_run(runs: list[tuple[dict[str, float], float, float]]) -> tuple[dict[str, float], float, float]:
    """One revision's runs as one: mean seconds per stage kind, mean total, the most cores others took."""
    kinds = dict.fromkeys(k for times, _, _ in runs for k in times)
    n = len(runs)
    return ({k: sum(times.get(k, 0.0) for times, _, _ in runs) / n for k in kinds},
            sum(total for _, total, _ in runs) / n, max(foreign for _, _, foreign in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revs", nargs="+", metavar="REV", help="git revisions; the first is the baseline (one alone: HEAD follows)")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for a quiet CPU before each run")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every revision, in alternating order")
    args = parser.parse_args()
    revs = args.revs if len(args.revs) > 1 else [*args.revs, "HEAD"]
    runs: dict[str, list] = {rev: [] for rev in revs}  # rev -> (stage kind -> seconds, total seconds, cores others took)
    with tempfile.TemporaryDirectory(prefix="repro_time_") as tmp:
        for r in range(args.rounds):
            for rev in revs if r % 2 == 0 else revs[::-1]:
                repo = Path(tmp) / f"{r}-{revs.index(rev)}"
                subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
                subprocess.run(["git", "-C", str(repo), "checkout", "-q", rev], check=True)
                if not wait_quiet(0.2, args.wait):
                    print(f"warning: other processes kept the CPU busy; {rev}'s time includes them", file=sys.stderr)
                _, foreign, (total, lines) = timed(lambda: timed_repro(repo))
                runs[rev].append((stage_times(lines, total), total, foreign))
                print(f"round {r + 1}, {rev}: {total:.1f} s (other processes: {foreign:.2f} cores)", file=sys.stderr)
                shutil.rmtree(repo)
    table = {rev: _mean_run(rs) for rev, rs in runs.items()}
    base = table[revs[0]]
    print(f"{'stage':20s}" + "".join(f" {rev[:12]:>12s} {'ratio':>6s}" for rev in revs))
    for kind in dict.fromkeys(k for kinds, _, _ in table.values() for k in kinds):
        b = base[0].get(kind, 0.0)
        print(f"{kind:20s}" + "".join(f" {kinds.get(kind, 0.0):12.1f} " + (f"{kinds.get(kind, 0.0) / b:6.2f}" if b else f"{'-':>6s}")
                                      for kinds, _, _ in table.values()))
    print(f"{'total':20s}" + "".join(f" {total:12.1f} {total / base[1]:6.3f}" for _, total, _ in table.values()))
    if args.rounds > 1:
        for r in range(args.rounds):
            print(f"{f'round {r + 1}':20s}" + "".join(f" {runs[rev][r][1]:12.1f} {runs[rev][r][1] / runs[revs[0]][r][1]:6.3f}"
                                                      for rev in revs))
    print(f"{'other processes':20s}" + "".join(f" {foreign:11.2f}c {'':6s}" for _, _, foreign in table.values()))


if __name__ == "__main__":
    main()
