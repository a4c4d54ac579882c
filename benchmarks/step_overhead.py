"""What esrkd.train.fit costs on top of a bare PyTorch loop doing the same distillation math.

Both sides train the same student (from the same initial weights, with the same frozen teacher,
1x1 adapters, discriminator, Adam optimisers, foreach EMA update and learning-rate schedule) on the
same batches, in one process, on the CPU, with the same thread count:

  project  `fit(TrainState(G, D, cfg, distiller=...), data)`: DataLoader over the PatchDataset, tqdm
           bar, loss dict, logging every `log_every` iterations, the once-per-phase balance line; no
           checkpoint file (resume=None), perceptual loss off.
  bare     a plain loop over the same batches, materialised in memory beforehand: forward, losses,
           backward, optimiser steps, EMA; no logging, no checkpoints, no data loading.

Each trial is one whole call (setup included: optimisers, EMA copy) of `--warmup-iters` L1 +
distillation iterations then `--gan-iters` GAN-phase iterations, from fresh copies of the same
initial networks (copied outside the clock). After an untimed warm-up of each, trials alternate
(A B B A A B ...) `--repeats` times each, and the ratio project / bare (goal: <= 1.05) is
printed three ways: of the median trial times, the median of the paired ratios, and of the fastest
trials (noise only ever adds time; this VM's trial times spread by +-20% even when quiet, so many
short trials beat a few long ones). A pair during which other processes used `--busy` cores or
more (from /proc/stat) is dropped and run again (at most 3 x repeats pairs, within `--budget` s);
before each pair the script waits (up to `--wait` s) for a quiet machine (benchmarks/cpu_quiet.py).
Since both sides do the same math, their final weights (G, its EMA, D, adapters) must agree
bitwise; the script checks it. `--profile` then runs one trial of each under cProfile and prints
where the project's extra time goes (per iteration).

    python benchmarks/step_overhead.py [--params params.yaml] [--blocks 2] [--width 16] [--batch 4]
        [--patch 32] [--warmup-iters 5] [--gan-iters 5] [--repeats 25] [--threads 2] [--profile]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import json
import pstats
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import get_ema_multi_avg_fn
from torch.utils.data import DataLoader, default_collate

from esrkd import config
from esrkd.arch import DiscArgs, RRDBArgs, RRDBNet, VGGStyleDiscriminator
from esrkd.data import PatchDataset
from esrkd.distill import Distiller, student_args
from esrkd.losses import ragan_loss
from esrkd.train import Generator, TrainState, distill_weight, fit, learning_rate

from cpu_quiet import timed, wait_quiet  # benchmarks/ is on sys.path when a script in it runs


@dataclass
class Nets:
    G: Generator  # the student and its adapters
    D: VGGStyleDiscriminator
    distiller: Distiller


def _initial_nets(p: config.Params, args: argparse.Namespace) -> Nets:
    torch.manual_seed(p.base.seed)
    teacher = RRDBNet(RRDBArgs(num_feat=args.teacher_width, num_block=args.blocks, num_grow_ch=p.net.num_grow_ch,
                               scale=p.base.scale))
    layers = list(range(args.blocks))
    G = Generator(RRDBNet(student_args(teacher.args, args.width)), layers, teacher.args.num_feat)
    D = VGGStyleDiscriminator(DiscArgs(num_feat=p.net.d_num_feat, input_size=args.patch))
    distiller = Distiller(teacher, layers, p.distill.feature_loss)
    return Nets(G, D, distiller)


def _data(p: config.Params, args: argparse.Namespace, iters: int) -> PatchDataset:
    # One noise image four patches wide: the crops (and flips) differ from sample to sample.
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (args.patch * 4, args.patch * 4, 3), dtype=np.uint8)
    lr = hr[:: p.base.scale, :: p.base.scale].copy()
    return PatchDataset([("noise", lr, hr)], p.base.scale, args.patch, iters * args.batch, p.base.seed)


def _materialise(data: PatchDataset, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batches fit's DataLoader yields (default collate, in order), built before the bare loop runs."""
    return [default_collate([data[k] for k in range(i, i + batch)]) for i in range(0, len(data), batch)]


def bare_fit(nets: Nets, batches: list[tuple[torch.Tensor, torch.Tensor]], cfg: config.Train) -> RRDBNet:
    """The same math as fit (same op order, so bitwise the same weights) with nothing else; returns the EMA."""
    G, D, distiller = nets.G, nets.D, nets.distiller
    G.train()
    D.train()
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
    ema = copy.deepcopy(G.net).requires_grad_(False)
    ema_update, ema_params, live_params = get_ema_multi_avg_fn(cfg.ema_decay), list(ema.parameters()), list(G.net.parameters())
    rate = cfg.lr
    D.requires_grad_(False)  # only the D step needs D's gradients
    for it, (lr, hr) in enumerate(batches, start=1):
        if cfg.lr_milestones and learning_rate(it, cfg) != rate:
            rate = learning_rate(it, cfg)
            for group in (*opt_g.param_groups, *opt_d.param_groups):
                group["lr"] = rate
        gan_phase = it > cfg.warmup_iters
        sr, feats = G(lr)  # feats: the adapted f_i(C_i)
        l_pix = F.l1_loss(sr, hr)
        if gan_phase:
            loss = cfg.l1_weight * l_pix + cfg.gan_weight * ragan_loss(D(sr), D(hr).detach())
        else:
            loss = l_pix
        loss = loss + distill_weight(it, cfg) * distiller(lr, sr, feats)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        ema_update(ema_params, live_params, None)
        if gan_phase:
            D.requires_grad_(True)
            l_d = ragan_loss(D(hr), D(sr.detach()))
            opt_d.zero_grad(set_to_none=True)
            l_d.backward()
            opt_d.step()
            D.requires_grad_(False)
    return ema


def project_fit(nets: Nets, data: PatchDataset, cfg: config.Train) -> RRDBNet:
    return fit(TrainState(nets.G, nets.D, cfg, distiller=nets.distiller), data, "project").ema


def _same_weights(a: tuple[Nets, RRDBNet], b: tuple[Nets, RRDBNet]) -> bool:
    def states(nets: Nets, ema: RRDBNet) -> list[dict]:
        return [nets.G.state_dict(), ema.state_dict(), nets.D.state_dict()]  # G's holds its adapters

    return all(sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa) for sa, sb in zip(states(*a), states(*b)))


# Where a profiled function lives, for the per-area table: the project's code, the libraries it calls
# around the math, and the C calls (the torch kernels themselves, equal on both sides).
AREAS = (("esrkd/", "esrkd"), ("tqdm/", "tqdm"), ("torch/utils/data/", "torch DataLoader"), ("torch/optim/", "torch.optim (python)"),
         ("torch/nn/", "torch.nn (python)"), ("torch/", "torch other (python)"), ("numpy/", "numpy (python)"))


def _area(filename: str) -> str:
    if filename == "~":
        return "C calls (kernels, builtins)"
    name = filename.replace("\\", "/")
    return next((label for key, label in AREAS if key in name), "other python")


def _profile(run) -> pstats.Stats:
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    return pstats.Stats(profiler)


def _by_area(stats: pstats.Stats) -> dict[str, float]:
    areas: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():
        areas[_area(filename)] = areas.get(_area(filename), 0.0) + tottime
    return areas


def _label(key: tuple[str, int, str]) -> str:
    filename, line, name = key
    if filename == "~":
        return name
    parts = Path(filename).parts
    return f"{'/'.join(parts[-2:])}:{line}({name})"


def _wraps_the_math(key: tuple[str, int, str]) -> bool:
    """A call whose cumulative time is mostly the math both sides do (the bare loop does it inline): the
    trial itself, and fit's TrainState, whose setup and step() are the bare loop's own code."""
    filename, _, name = key
    in_train = filename.replace("\\", "/").endswith("esrkd/train.py")
    return name in ("project_fit", "_profile", "<lambda>") or (in_train and name in ("fit", "__init__", "step"))


def print_profile(project: pstats.Stats, bare: pstats.Stats, iters: int, top: int) -> None:
    """Seconds per iteration by area (self time), then the functions whose cumulative time grew most."""
    pa, ba = _by_area(project), _by_area(bare)
    print(f"\ncProfile, ms per iteration (self time; cProfile inflates Python calls, both sides alike)")
    print(f"{'area':32s} {'project':>9s} {'bare':>9s} {'extra':>9s}")
    for area in sorted(set(pa) | set(ba), key=lambda a: -(pa.get(a, 0) - ba.get(a, 0))):
        p, b = pa.get(area, 0.0) * 1e3 / iters, ba.get(area, 0.0) * 1e3 / iters
        print(f"{area:32s} {p:9.3f} {b:9.3f} {p - b:+9.3f}")
    total_p, total_b = sum(pa.values()) * 1e3 / iters, sum(ba.values()) * 1e3 / iters
    print(f"{'total':32s} {total_p:9.3f} {total_b:9.3f} {total_p - total_b:+9.3f}")
    # The functions the project calls more often than the bare loop (what it adds; a function both call
    # equally differs only by noise), by the cumulative time of those extra calls, nested calls included.
    def calls(s: pstats.Stats, k: tuple) -> int:
        return s.stats[k][1] if k in s.stats else 0

    added = []
    for key, (_, ncalls, _, cumtime, _) in project.stats.items():
        if not _wraps_the_math(key) and ncalls > calls(bare, key):
            added.append((cumtime * (ncalls - calls(bare, key)) / ncalls, ncalls - calls(bare, key), key))
    print("\nwhat the project calls more often than the bare loop: cumulative ms per iteration of the extra calls")
    for cumtime, extra_calls, key in sorted(added, reverse=True)[:top]:
        print(f"  {cumtime * 1e3 / iters:8.3f}  {extra_calls:6d} extra calls  {_label(key)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="distill.* (lr, betas, ema_decay, weights, log_every, ...)")
    parser.add_argument("--blocks", type=int, default=2, help="RRDB blocks of teacher and student (all distilled)")
    parser.add_argument("--teacher-width", type=int, default=64)
    parser.add_argument("--width", type=int, default=16, help="student width")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=32, help="HR patch side (a multiple of 32 and of the scale)")
    parser.add_argument("--warmup-iters", type=int, default=5, help="L1 + distillation iterations per trial")
    parser.add_argument("--gan-iters", type=int, default=5, help="then GAN-phase iterations per trial")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=25, help="timed trials of each side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--busy", type=float, default=0.03,
                        help="drop a pair of trials when other processes used this many cores meanwhile")
    parser.add_argument("--wait", type=float, default=120, help="seconds to wait for a quiet machine before each pair")
    parser.add_argument("--budget", type=float, default=240,
                        help="seconds for the timed pairs (waits included); then the pairs measured so far are reported")
    parser.add_argument("--profile", action="store_true", help="then profile one trial of each side with cProfile")
    parser.add_argument("--top", type=int, default=15, help="functions listed by the profile")
    parser.add_argument("--json", type=Path, help="also write the results there")
    args = parser.parse_args()

    p = config.load(args.params)
    torch.set_num_threads(args.threads)
    iters = args.warmup_iters + args.gan_iters
    cfg = p.distill.model_copy(update={"patch_size": args.patch, "batch_size": args.batch, "num_workers": 0,
                                       "warmup_iters": args.warmup_iters, "gan_iters": args.gan_iters,
                                       "log_every": args.log_every, "perceptual_weight": 0.0})
    initial = _initial_nets(p, args)
    data = _data(p, args, iters)
    batches = _materialise(data, args.batch)
    sides = {"project": lambda nets: project_fit(nets, data, cfg), "bare": lambda nets: bare_fit(nets, batches, cfg)}

    def trial(side: str) -> tuple[float, float, tuple[Nets, RRDBNet]]:
        nets = copy.deepcopy(initial)  # outside the clock
        seconds, foreign, ema = timed(lambda: sides[side](nets))
        return seconds, foreign, (nets, ema)

    ends = {side: trial(side)[2] for side in sides}  # warm-up (allocator, first-call costs), untimed
    bitwise = _same_weights(ends["project"], ends["bare"])
    # Pairs of trials (alternating which side goes first) until `repeats` pairs ran on a quiet machine,
    # or 3 x repeats pairs were tried; a pair is dropped when another process took >= --busy cores in either trial.
    times: dict[str, list[float]] = {side: [] for side in sides}
    foreign: dict[str, list[float]] = {side: [] for side in sides}  # of the kept trials: how quiet they were
    dropped: list[dict[str, tuple[float, float]]] = []
    deadline = time.perf_counter() + args.budget
    for r in range(3 * args.repeats):
        if time.perf_counter() > deadline and times["bare"]:
            break  # report what was measured rather than nothing
        wait_quiet(args.busy, args.wait)
        pair = {}
        for side in ("project", "bare") if r % 2 == 0 else ("bare", "project"):
            seconds, busy, _ = trial(side)
            pair[side] = (seconds, busy)
        quiet = all(busy < args.busy for _, busy in pair.values())
        if quiet:
            for side, (seconds, busy) in pair.items():
                times[side].append(seconds)
                foreign[side].append(busy)
        else:
            dropped.append(pair)
        print(f"step_overhead: pair {r + 1} {'kept' if quiet else 'dropped (machine busy)'}: "
              + ", ".join(f"{side} {t:.3f} s ({b:.2f} cores busy)" for side, (t, b) in pair.items()), file=sys.stderr)
        if len(times["bare"]) == args.repeats:
            break
    if not times["bare"]:
        busy = ", ".join(f"{p['project'][1]:.2f}/{p['bare'][1]:.2f}" for p in dropped)
        sys.exit(f"every one of {len(dropped)} pairs of trials ran beside another job (cores busy, project/bare: {busy}; "
                 f"limit {args.busy}); try again on a quiet machine or raise --busy")
    median = {side: statistics.median(t) for side, t in times.items()}
    pair_ratios = [a / b for a, b in zip(times["project"], times["bare"])]
    result = {
        "device": "cpu", "threads": torch.get_num_threads(), "blocks": args.blocks, "teacher_width": args.teacher_width,
        "width": args.width, "batch": args.batch, "patch": args.patch, "iters_per_trial": iters,
        "warmup_iters": args.warmup_iters, "gan_iters": args.gan_iters, "log_every": args.log_every, "repeats": args.repeats,
        "project_it_s": round(iters / median["project"], 3), "bare_it_s": round(iters / median["bare"], 3),
        "project_ms_per_it": round(median["project"] * 1e3 / iters, 2), "bare_ms_per_it": round(median["bare"] * 1e3 / iters, 2),
        "ratio": round(median["project"] / median["bare"], 4),
        "median_pair_ratio": round(statistics.median(pair_ratios), 4),
        "min_ratio": round(min(times["project"]) / min(times["bare"]), 4),
        "pair_ratios": [round(x, 4) for x in pair_ratios],
        "trial_seconds": {side: [round(t, 4) for t in v] for side, v in times.items()},
        "foreign_cores": {side: [round(b, 3) for b in v] for side, v in foreign.items()},
        "bitwise_same_weights": bitwise, "pairs_kept": len(pair_ratios), "pairs_dropped_busy": len(dropped),
    }
    print(f"distillation step, CPU, {result['threads']} threads: teacher {args.teacher_width}f/{args.blocks} blocks, "
          f"student {args.width}f, batch {args.batch}, HR patch {args.patch}, {args.warmup_iters}+{args.gan_iters} "
          f"iterations per trial, {len(pair_ratios)} trials each (alternating; {len(dropped)} pairs dropped: another "
          f"process was busy), perceptual off, no checkpoint file")
    print(f"{'side':8s} {'it/s':>8s} {'ms/it':>8s}   trial seconds: min median max; most cores other processes used")
    for side in sides:
        t = times[side]
        print(f"{side:8s} {iters / median[side]:8.3f} {median[side] * 1e3 / iters:8.2f}   "
              f"{min(t):.3f} {median[side]:.3f} {max(t):.3f}; {max(foreign[side]):.3f}")
    print(f"ratio project/bare: of the median trial times {result['ratio']:.4f}; median of the paired ratios "
          f"{result['median_pair_ratio']:.4f}; of the fastest trials {result['min_ratio']:.4f} (goal <= 1.05)")
    print(f"final weights (G, EMA, D, adapters) bitwise equal on both sides: {bitwise}")
    # The one piece of real work only the project side does: drawing its batches (the bare loop reads memory).
    loading = min(timed(lambda: list(DataLoader(data, batch_size=args.batch, num_workers=0, drop_last=True)))[0]
                  for _ in range(5))
    result["data_loading_ms_per_it"] = round(loading * 1e3 / iters, 3)
    print(f"data loading alone, which only the project side does (DataLoader over the PatchDataset, fastest of 5): "
          f"{result['data_loading_ms_per_it']:.3f} ms/it")
    if args.profile:
        profiled = {}
        for side in sides:
            for _ in range(3):  # a profile taken beside another job is retaken
                wait_quiet(args.busy, args.wait)
                busy, stats = timed(lambda s=side: _profile(lambda: sides[s](copy.deepcopy(initial))))[1:]
                if busy < args.busy:
                    break
            profiled[side] = stats
        print_profile(profiled["project"], profiled["bare"], iters, args.top)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
