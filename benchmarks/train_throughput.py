"""Training iterations per second of the paper-profile teacher and a student: fast path vs plain fp32.

The fast path is what the stages use on CUDA (bf16 autocast, channels_last); the baseline is the
same loop in plain fp32; `--compile` adds the fast path under torch.compile. All run here, in one
process, on the same batches from the same initial weights, so the ratios are measured in one run
and the last pixel L1 of each path shows whether the fast one loses quality. On a CPU both paths
are fp32 and the ratio is ~1 (a smoke test only).

    python benchmarks/train_throughput.py --params params.paper.yaml --iters 30 [--compile]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from esrkd import config
from esrkd.arch import RRDBNet, VGGStyleDiscriminator
from esrkd.data import PatchDataset
from esrkd.distill import Distiller, student_args
from esrkd.checkpoint import model_name
from esrkd.runtime import setup
from esrkd.train import Engine, Generator, TrainState, fit


def _data(p: config.Params, iters: int) -> PatchDataset:
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (p.teacher.patch_size * 2, p.teacher.patch_size * 2, 3), dtype=np.uint8)
    lr = hr[:: p.base.scale, :: p.base.scale].copy()
    return PatchDataset([("noise", lr, hr)], p.base.scale, p.teacher.patch_size, iters * p.teacher.batch_size, p.base.seed)


def _its_per_second(p: config.Params, cfg, width: int | None, precision: str, iters: int, device: torch.device,
                    compile: bool = False) -> tuple[float, float]:
    """Iterations/s of `iters` GAN-phase iterations after a warm-up, and the last logged pixel L1
    (the same seed and batches on every path, so a quality loss of the fast path would show there)."""
    torch.manual_seed(0)
    teacher = RRDBNet(p.teacher_arch)
    if width is None:
        G, distiller = Generator(teacher), None
    else:
        G = Generator(RRDBNet(student_args(p.teacher_arch, width)), p.distill_layers, p.teacher_arch.num_feat)
        distiller = Distiller(teacher, p.distill_layers, 1.0, "mse")
    D = VGGStyleDiscriminator(p.disc_arch)
    cfg = cfg.model_copy(update={"warmup_iters": 0, "gan_iters": iters, "log_every": iters})
    # One state for the warm-up and the timed run: the timed run reuses what the warm-up compiled.
    state = TrainState(G, D, cfg, Engine(device, precision, compile), distiller=distiller)
    fit(state, _data(p, 2), "warm-up")  # and compilation, with compile
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fit(state, _data(p, iters))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return iters / (time.perf_counter() - start), result.history[-1][1]["gan/l_pix"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.paper.yaml")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--width", type=int, default=32, help="the student width to time")
    parser.add_argument("--compile", action="store_true", help="also time the fast path under torch.compile")
    args = parser.parse_args()
    p = config.load(args.params)
    device = setup(p.base)
    rows = {}
    student = {"role": "student", "width": args.width}
    for meta, cfg, width in (({"role": "teacher"}, p.teacher, None), (student, p.distill, args.width)):
        name = model_name(meta)
        plain, plain_l1 = _its_per_second(p, cfg, width, "fp32", args.iters, device)
        fast, fast_l1 = _its_per_second(p, cfg, width, "bf16", args.iters, device)
        rows[name] = {"fp32_it_s": round(plain, 3), "fast_it_s": round(fast, 3), "speedup": round(fast / plain, 2),
                      "fp32_l_pix": round(plain_l1, 5), "fast_l_pix": round(fast_l1, 5)}
        if args.compile:
            compiled, compiled_l1 = _its_per_second(p, cfg, width, "bf16", args.iters, device, compile=True)
            rows[name] |= {"compiled_it_s": round(compiled, 3), "compiled_speedup": round(compiled / plain, 2),
                           "compiled_l_pix": round(compiled_l1, 5)}
    print(json.dumps({"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                      "batch": p.teacher.batch_size, "patch": p.teacher.patch_size, "blocks": p.net.num_block, **rows}, indent=2))


if __name__ == "__main__":
    main()
