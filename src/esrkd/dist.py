"""Data-parallel training across processes (torchrun), kept out of the way of the one-process path.

A training stage asks `relaunch(nproc)` first: with nproc > 1 and not yet under torchrun, it runs
the very same command again under `torch.distributed.run`, so dvc.yaml keeps one plain command.
Every rank builds the same networks from the same seed, takes its slice of each global batch, and
averages gradients with all-reduce before each optimiser step; rank 0 alone writes files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def relaunch(nproc: int) -> None:
    """Re-run this command under torchrun with `nproc` processes, and exit with its status."""
    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *sys.argv]
        sys.exit(subprocess.call(cmd))


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


def broadcast_parameters(modules: list[nn.Module], world: World) -> None:
    """Start every rank from rank 0's weights (the seeds already agree; this makes sure)."""
    if world.size > 1:
        for module in modules:
            for tensor in (*module.parameters(), *module.buffers()):
                dist.broadcast(tensor.data, src=0)


def average_gradients(params: list[torch.Tensor], world: World) -> None:
    """Make each gradient the mean over ranks: the gradient of the whole global batch."""
    grads = [p.grad for p in params if p.grad is not None]
    if world.size > 1 and grads:
        # One collective over a flat copy instead of one per tensor (a 23-block RRDBNet has ~350),
        # as DDP's gradient buckets do.
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(world.size)
        torch._foreach_copy_(grads, [part.view_as(g) for part, g in zip(flat.split([g.numel() for g in grads]), grads)])


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
        raise ValueError(f"batch_size {batch} must be divisible by the {world.size} training processes (base.nproc)")
    local = batch // world.size
    return [i + world.rank * local + j for i in range(first_sample, last_sample, batch) for j in range(local)]


def finish(world: World) -> None:
    if world.size > 1:
        dist.barrier()
        dist.destroy_process_group()
