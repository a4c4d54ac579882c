"""A stage's process: seeds and device from params, and one GPU per concurrent stage."""

import subprocess
import sys

import torch

from esrkd import config
from esrkd.runtime import claim_gpu, setup


def test_setup_seeds_every_rng_from_params(demo_params):
    demo_params["base"].update(seed=7, device="cpu")
    base = config.parse(demo_params).base
    assert setup(base) == torch.device("cpu")
    first = torch.rand(3)
    setup(base)
    assert torch.equal(torch.rand(3), first)


def test_concurrent_stages_each_claim_a_gpu_of_their_own(tmp_path):
    assert [claim_gpu(3, tmp_path), claim_gpu(3, tmp_path), claim_gpu(3, tmp_path)] == [0, 1, 2]
    assert claim_gpu(3, tmp_path) is None  # all held (here by this one process's three claims)
    # A claim lasts as long as its process: another process finds GPU 0 held, and free once that one exits.
    code = f"from pathlib import Path; from esrkd.runtime import claim_gpu; print(claim_gpu(2, Path({str(tmp_path / 'b')!r})))"
    (tmp_path / "b").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", code + "; import time; time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "0"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip() == "1"
    holder.kill()
    holder.wait(timeout=30)
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip() == "0"
