"""Data-parallel training (torchrun + DDP): two CPU processes (gloo), on one "machine" or as two nodes
meeting by c10d rendezvous on 127.0.0.1, give the single-process result of the same global batch."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from esrkd import config
from esrkd.arch import DiscArgs, RRDBArgs, RRDBNet, VGGStyleDiscriminator
from esrkd.data import PatchDataset, prepare_set
from esrkd.dist import World, shard, torchrun_args
from esrkd.errors import UserError
from esrkd.train import Engine, Generator, TrainState

from .conftest import COMMAND_TIMEOUT, ROOT, demo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shard_splits_every_global_batch():
    assert shard(0, 12, 4, World(0, 2)) == [0, 1, 4, 5, 8, 9]
    assert shard(0, 12, 4, World(1, 2)) == [2, 3, 6, 7, 10, 11]
    assert shard(8, 12, 4, World(0, 1)) == [8, 9, 10, 11]
    with pytest.raises(UserError, match="batch_size 3 must be divisible by the 2 training processes"):
        shard(0, 6, 3, World(0, 2))


def test_torchrun_is_asked_for_what_params_and_environment_say():
    argv = ["stages/distill.py", "--width", "16"]
    assert torchrun_args(1, {}, argv) == []  # one process: no torchrun at all
    assert torchrun_args(4, {}, argv) == ["--standalone", "--nproc-per-node=4"]
    env = {"ESRKD_NNODES": "3", "ESRKD_RDZV_ENDPOINT": "node0:29500"}
    nodes = torchrun_args(2, env, argv)
    assert nodes[:4] == ["--nnodes=3", "--nproc-per-node=2", "--rdzv-backend=c10d", "--rdzv-endpoint=node0:29500"]
    # every node runs the same command, so all meet under one id; another stage's command gets another
    assert nodes[4] == torchrun_args(2, env, list(argv))[4] != torchrun_args(2, env, [*argv[:-1], "32"])[4]
    assert torchrun_args(1, {**env, "ESRKD_RDZV_ID": "job42"}, argv)[4] == "--rdzv-id=job42"
    with pytest.raises(UserError, match="ESRKD_NNODES is 2 but ESRKD_RDZV_ENDPOINT is not set"):
        torchrun_args(1, {"ESRKD_NNODES": "2"}, argv)


def _gan_steps_on_rank(rank: int, port: int, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    p = demo()
    p["teacher"].update(batch_size=4, warmup_iters=0, gan_iters=2, perceptual_weight=0)
    cfg = config.parse(p).teacher
    torch.manual_seed(rank)  # different initial weights per rank: DDP must start both from rank 0's
    G = Generator(RRDBNet(RRDBArgs(num_feat=4, num_block=1, num_grow_ch=4)))
    D = VGGStyleDiscriminator(DiscArgs(num_feat=4, input_size=32))
    state = TrainState(G, D, cfg, Engine(world=World(rank, 2)))
    hr = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(10 + rank))  # each rank its own half-batch
    for it in (1, 2):
        state.step(it, hr[:, :, ::4, ::4].contiguous(), hr)
    torch.save({"G": G.state_dict(), "D": D.state_dict()}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ddp_keeps_g_and_d_identical_on_every_rank_through_gan_steps(tmp_path):
    torch.multiprocessing.spawn(_gan_steps_on_rank, args=(_free_port(), str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    torch.manual_seed(0)
    start = RRDBNet(RRDBArgs(num_feat=4, num_block=1, num_grow_ch=4)).state_dict()
    for net in ("G", "D"):
        # BatchNorm's running statistics are each rank's own (DDP broadcasts rank 0's before each D-step forward)
        trained = [k for k in a[net] if "running" not in k and "num_batches" not in k]
        assert all(torch.equal(a[net][k], b[net][k]) for k in trained), net  # averaged gradients, same steps
    assert not torch.equal(a["G"]["net.conv_first.weight"], start["conv_first.weight"])  # it trained


def _teacher(cwd, params, out, env=None):
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.Popen([sys.executable, str(ROOT / "stages/teacher.py"), "--data", "train", "--out", out], cwd=cwd,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _done(process) -> str:
    _, err = process.communicate(timeout=COMMAND_TIMEOUT)
    assert process.returncode == 0, err
    return err


def test_two_processes_and_two_nodes_match_one_on_the_same_global_batch(tmp_path, tiny_params):
    # The warm start (L1 only) has no batch statistics, so averaging the two half-batch gradients
    # is exactly the full-batch gradient: the runs may differ only by float summation order.
    tiny_params["teacher"].update(batch_size=4, warmup_iters=6, gan_iters=0, log_every=2, checkpoint_every=3)
    prepare_set(["skimage:astronaut"], 4, tmp_path / "train")
    err_one = _done(_teacher(tmp_path, tiny_params, "one"))
    tiny_params["base"]["nproc"] = 2
    err_two = _done(_teacher(tmp_path, tiny_params, "two"))
    # Two "machines" sharing the project folder (as on a cluster's shared file system), one process each.
    tiny_params["base"]["nproc"] = 1
    env = {"ESRKD_NNODES": "2", "ESRKD_RDZV_ENDPOINT": f"127.0.0.1:{_free_port()}"}
    nodes = [_teacher(tmp_path, tiny_params, "nodes", env) for _ in range(2)]
    errs_nodes = [_done(n) for n in nodes]
    assert err_one.count("teacher: perceptual loss") == 1 and err_two.count("teacher: perceptual loss") == 2  # two ranks ran
    assert [e.count("teacher: iteration 1 (warmup)") for e in errs_nodes] in ([1, 0], [0, 1])  # only rank 0 reports
    one, *others = (torch.load(tmp_path / out / "net_g.pth", weights_only=True) for out in ("one", "two", "nodes"))
    for other in others:
        for key in one["params"]:
            assert torch.allclose(one["params"][key], other["params"][key], atol=1e-5), key
    a = np.genfromtxt(tmp_path / "one/log/warmup.tsv", delimiter="\t", names=True)
    for out in ("two", "nodes"):
        b = np.genfromtxt(tmp_path / out / "log/warmup.tsv", delimiter="\t", names=True)
        assert a["step"].tolist() == b["step"].tolist() == [2, 4, 6]
        assert np.allclose(a["l_pix"], b["l_pix"], atol=1e-5)  # logged losses are the global batch's
    assert not list((tmp_path / "checkpoints").iterdir())  # rank 0's checkpoint, removed when done
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "nodes", "one", "params.yaml", "train", "two"]  # one writer, no temp dirs
