"""Compute cost of a generator: parameter counts, FLOPs and wall-clock latency.

Pruning here writes unstructured zeros into dense tensors, so it lowers the non-zero parameter
count but neither the FLOPs nor the latency; these functions measure all three so that reports
can show it.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from esrkd.arch import count_params


def _device_and_dtype(net: nn.Module) -> tuple[torch.device, torch.dtype]:
    # A module has no device of its own; its first parameter (or buffer) stands for it.
    for t in (*net.parameters(), *net.buffers()):
        return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def flops(net: nn.Module, input_shape: tuple[int, ...] = (1, 3, 128, 128)) -> int:
    """FLOPs of one forward pass of `net` on a zero input of `input_shape`, on the module's device.

    Counted by torch.utils.flop_counter.FlopCounterMode, which counts a multiply-add as 2 FLOPs
    (so this is twice the MAC count) and only counts the ops it has formulas for: convolutions
    and matmuls, but not conv bias, activations, additions or interpolation. The count depends on
    shapes only, so zeroed weights do not change it.
    """
    device, dtype = _device_and_dtype(net)
    x = torch.zeros(input_shape, device=device, dtype=dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return int(counter.get_total_flops())


def generator_flops(net: nn.Module, side: int, probe: int = 4) -> int:
    """`flops(net, (1, 3, side, side))` of a fully convolutional generator (an RRDBNet), counted on a
    probe x probe input and scaled: every layer's output is a fixed multiple of the input's pixels, so
    the count is exactly proportional to them (side and probe multiples of the pixel-unshuffle factor,
    1 at x4). A 128x128 forward under the counter costs ~0.4 s on a CPU; this costs ~1000x less."""
    return flops(net, (1, 3, probe, probe)) * side * side // (probe * probe)


def latency(
    net: nn.Module,
    input_shape: tuple[int, ...] = (1, 3, 128, 128),
    device: str | torch.device = "cpu",
    warmup: int = 2,
    repeats: int = 5,
) -> dict:
    """Median wall time in ms of `net(x)` on `device` under inference_mode, after `warmup` untimed runs.

    Returns {"device", "threads", "input", "median_ms", "repeats", "all_ms"} plus "device_name" on
    CUDA. `net` itself is left where it is; a copy is timed if it lives on another device.
    """
    if warmup < 0:
        raise ValueError(f"latency warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise ValueError(f"latency repeats must be >= 1, got {repeats}")
    device = torch.device(device)
    net_device, dtype = _device_and_dtype(net)
    # A bare "cuda" means whichever GPU the net already sits on, though it compares unequal to "cuda:0".
    if net_device != device and not (device.type == net_device.type and device.index is None):
        net = copy.deepcopy(net).to(device)
    else:
        device = net_device
    is_cuda = device.type == "cuda"
    x = torch.zeros(input_shape, device=device, dtype=dtype)

    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if is_cuda:  # kernels are asynchronous: drain the queue so the clock sees only this run
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            net(x)
            if is_cuda:
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)

    result = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "input": "x".join(str(s) for s in input_shape),
        "median_ms": statistics.median(times),
        "repeats": repeats,
        "all_ms": times,
    }
    if is_cuda:
        result["device_name"] = torch.cuda.get_device_name(device)
    return result
