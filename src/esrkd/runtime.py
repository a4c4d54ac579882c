"""How a stage's process runs: its seeds, CPU threads and device, set once from params `base`."""

from __future__ import annotations

import fcntl
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from esrkd import config
from esrkd.errors import UserError


def claim_gpu(count: int, lock_dir: Path) -> int | None:
    """The first of `count` GPUs that no other esrkd process on this machine holds, now held by this one
    until it exits (an flock on lock_dir/esrkd-gpu-<i>.lock); None when every one is held."""
    for gpu in range(count):
        fd = os.open(lock_dir / f"esrkd-gpu-{gpu}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return gpu  # fd stays open on purpose: the kernel drops the lock when the process ends
    return None


def _own_gpu() -> torch.device:
    # `dvc queue start -j N` runs N stages at once on one machine: each takes a GPU of its own, and the
    # N+1-th waits for one to be free. torchrun's processes (LOCAL_RANK) get theirs from esrkd.dist.
    count = torch.cuda.device_count()
    if count == 1 or "LOCAL_RANK" in os.environ:
        return torch.device("cuda")
    while (gpu := claim_gpu(count, Path(tempfile.gettempdir()))) is None:
        print(f"all {count} GPUs are held by other esrkd stages; waiting for one", file=sys.stderr)
        time.sleep(10)
    torch.cuda.set_device(gpu)
    return torch.device("cuda", gpu)


def setup(base: config.Base) -> torch.device:
    """Seed every RNG from params and pick the device; call once at the start of a stage."""
    random.seed(base.seed)
    np.random.seed(base.seed)
    torch.manual_seed(base.seed)
    if base.threads:
        torch.set_num_threads(base.threads)
    if base.device == "cuda" and not torch.cuda.is_available():
        raise UserError("params.yaml base.device is 'cuda' but no CUDA device is visible; set it to 'auto' or 'cpu'.")
    use_cuda = base.device == "cuda" or (base.device == "auto" and torch.cuda.is_available())
    return _own_gpu() if use_cuda else torch.device("cpu")


def rng_states() -> dict:
    """Every RNG's state (python, numpy, torch, CUDA), for set_rng_states."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
