"""Timing on a shared CPU: how much of the machine other processes took while something ran.

On a 2-core machine shared with other jobs, a timing taken beside one is not a measurement of the
code timed: PyTorch's OpenMP threads wait on a descheduled sibling, and a step can run 10-40x
slower. The benchmarks here time with `timed`, drop (or redo) what ran beside another job, and
`wait_quiet` before they start. Linux only (/proc/stat); elsewhere every timing counts as quiet.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def machine_busy_seconds() -> float | None:
    """CPU seconds every process has used since boot (steal included: the VM's host took the core),
    or None where there is no /proc/stat."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and of the child processes it has waited for (with theirs)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(run: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, cores' worth of CPU that other processes used meanwhile, run's result).

    The second number has the resolution of the kernel's tick (10 ms of CPU), so over a short run
    it is coarse; it is 0 where /proc/stat is missing.
    """
    busy0, own0, start = machine_busy_seconds(), _own_cpu_seconds(), time.perf_counter()
    out = run()
    wall, own, busy1 = time.perf_counter() - start, _own_cpu_seconds() - own0, machine_busy_seconds()
    foreign = 0.0 if busy0 is None or busy1 is None else max(busy1 - busy0 - own, 0.0) / wall
    return wall, foreign, out


def wait_quiet(busy: float, timeout: float, window: float = 2.0) -> bool:
    """Wait (up to `timeout` s) until other processes use < `busy` cores over `window` s; True when they do."""
    deadline = time.perf_counter() + timeout
    while True:
        if timed(lambda: time.sleep(window))[1] < busy:
            return True
        if time.perf_counter() > deadline:
            return False
