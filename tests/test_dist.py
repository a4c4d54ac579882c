"""Data-parallel training: two CPU processes (gloo) give the single-process result of the same global batch."""

import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from esrkd.data import prepare_set
from esrkd.dist import World, average_gradients, shard

from .conftest import ROOT


def test_shard_splits_every_global_batch():
    assert shard(0, 12, 4, World(0, 2)) == [0, 1, 4, 5, 8, 9]
    assert shard(0, 12, 4, World(1, 2)) == [2, 3, 6, 7, 10, 11]
    assert shard(8, 12, 4, World(0, 1)) == [8, 9, 10, 11]
    with pytest.raises(ValueError, match="batch_size 3 must be divisible by the 2 training processes"):
        shard(0, 6, 3, World(0, 2))


def _average_on_rank(rank: int, port: int, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    params = [torch.zeros(2, 3, requires_grad=True), torch.zeros(4, requires_grad=True), torch.zeros(1, requires_grad=True)]
    params[0].grad = torch.full((2, 3), 1.0 + 2 * rank)  # rank 0: 1, rank 1: 3 -> mean 2
    params[1].grad = torch.arange(4.0) * (rank + 1)  # mean 1.5 * [0, 1, 2, 3]
    average_gradients(params, World(rank, 2))  # params[2] has no gradient: left alone
    torch.save([p.grad for p in params], f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_gradients_are_averaged_over_ranks_tensor_by_tensor(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_average_on_rank, args=(port, str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        grads = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(grads[0], torch.full((2, 3), 2.0))
        assert torch.equal(grads[1], torch.tensor([0.0, 1.5, 3.0, 4.5]))
        assert grads[2] is None


def _teacher(tmp_path, params, out):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run([sys.executable, str(ROOT / "stages/teacher.py"), "--data", "train", "--out", out],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return torch.load(tmp_path / out / "net_g.pth", weights_only=True), done.stderr


def test_two_processes_match_one_on_the_same_global_batch(tmp_path, tiny_params):
    # The warm start (L1 only) has no batch statistics, so averaging the two half-batch gradients
    # is exactly the full-batch gradient: the runs may differ only by float summation order.
    tiny_params["teacher"].update(batch_size=4, warmup_iters=6, gan_iters=0, log_every=2, checkpoint_every=3)
    prepare_set(["skimage:astronaut"], 4, tmp_path / "train")
    (one, err_one) = _teacher(tmp_path, tiny_params, "one")
    tiny_params["base"]["nproc"] = 2
    (two, err_two) = _teacher(tmp_path, tiny_params, "two")
    assert err_one.count("teacher: perceptual loss") == 1 and err_two.count("teacher: perceptual loss") == 2  # two ranks ran
    for key in one["params"]:
        assert torch.allclose(one["params"][key], two["params"][key], atol=1e-5), key
    a = np.loadtxt(tmp_path / "one/log/plots/metrics/warmup/l_pix.tsv", skiprows=1)
    b = np.loadtxt(tmp_path / "two/log/plots/metrics/warmup/l_pix.tsv", skiprows=1)
    assert a[:, 0].tolist() == b[:, 0].tolist() == [2, 4, 6]
    assert np.allclose(a[:, 1], b[:, 1], atol=1e-5)  # logged losses are the global batch's
    assert not list((tmp_path / "checkpoints").iterdir())  # rank 0's checkpoint, removed when done
    assert not list(tmp_path.glob(".two.tmp-*"))
