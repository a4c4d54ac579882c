"""Data-parallel training across processes and machines (torchrun + DistributedDataParallel).

A training stage asks `relaunch(nproc)` first: with several processes and not yet under torchrun, it
runs the very same command again under `torch.distributed.run`, so dvc.yaml keeps one plain command.
Across machines, ESRKD_NNODES and ESRKD_RDZV_ENDPOINT (host:port of one of them) tell torchrun to meet
the other nodes by c10d rendezvous; every node runs the same command in the same (shared) project folder.
Every rank builds the same networks from the same seed and takes its slice of each global batch; DDP
averages the gradients in backward; global rank 0 alone writes files.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from esrkd.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def torchrun_args(nproc: int, env: dict[str, str], argv: list[str]) -> list[str]:
    """torchrun's options for `nproc` processes on this machine and, with ESRKD_NNODES > 1 in `env`, on as many
    machines meeting at ESRKD_RDZV_ENDPOINT; [] when one process on one machine is all there is."""
    nnodes = int(env.get("ESRKD_NNODES", "1"))
    if nnodes == 1:
        return ["--standalone", f"--nproc-per-node={nproc}"] if nproc > 1 else []
    endpoint = env.get("ESRKD_RDZV_ENDPOINT")
    if not endpoint:
        raise UserError(f"ESRKD_NNODES is {nnodes} but ESRKD_RDZV_ENDPOINT is not set; set it on every node to the "
                         "same host:port of one of them (e.g. the first node of the job, a free port).")
    # Every node runs the same command, so the command names the run: nodes of another stage never meet it.
    run_id = env.get("ESRKD_RDZV_ID") or hashlib.sha256(" ".join(argv).encode()).hexdigest()[:16]
    return [f"--nnodes={nnodes}", f"--nproc-per-node={nproc}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run_id}"]


def relaunch(nproc: int) -> None:
    """Re-run this command under torchrun when there is more than one process to run, and exit with its status."""
    options = torchrun_args(nproc, dict(os.environ), sys.argv)
    if options and "LOCAL_RANK" not in os.environ:
        sys.exit(subprocess.call([sys.executable, "-m", "torch.distributed.run", *options, *sys.argv]))


def init(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); one process: World()."""
    if "LOCAL_RANK" not in os.environ:
        return World(), device
    local = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size()), device


def wrap(module: nn.Module, world: World, device: torch.device) -> nn.Module:
    """`module` under DDP when several processes train (rank 0's weights broadcast, gradients averaged in
    backward), else `module` itself."""
    if world.size == 1:
        return module
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def mean_over_ranks(values: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of `values` over ranks, so logged losses are those of the whole global batch."""
    if world.size > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= world.size
    return values


def shard(first_sample: int, last_sample: int, batch: int, world: World) -> list[int]:
    """This rank's sample indices: its `batch / size` slice of every global batch, in order."""
    if batch % world.size:
        raise UserError(f"batch_size {batch} must be divisible by the {world.size} training processes (base.nproc x "
                        "ESRKD_NNODES); change the batch size in params.yaml or the process count.")
    local = batch // world.size
    return [i + world.rank * local + j for i in range(first_sample, last_sample, batch) for j in range(local)]


def finish(world: World) -> None:
    if world.size > 1:
        dist.barrier()
        dist.destroy_process_group()
