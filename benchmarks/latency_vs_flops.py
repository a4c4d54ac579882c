"""Does a narrower student run as much faster on the CPU as its FLOPs say? And onnxruntime vs PyTorch.

The teacher (`--teacher-width`, 64) and each student width (`--widths`, 16 32 48) are built at depth
`--depth` (the paper's 23 RRDB blocks by default) with random weights: latency depends on shapes
only. For each model it prints its FLOPs (esrkd.cost.flops: 2 per multiply-add, convolutions
only) and CPU latency, each as a ratio to the teacher's, and latency ratio / FLOP ratio (goal:
<= 1.1), for:

  a  one `--tile` x `--tile` LR tile (128: a 512x512 output);
  b  a tiled 4K upscale: `--frame` LR (960x540 -> 3840x2160 at x4), cut into non-overlapping
     `--tile` cores, each run with `--overlap` LR pixels of context on every side (clipped at the
     frame's border) and only its core kept. Tiles of equal input shape cost the same, so by
     default one tile of each distinct input shape is timed and weighted by how many tiles have
     it (the frame's estimated time: the forwards only); `--full-frame` times whole uint8 frames
     through the project's tiled upscaler esrkd.upscale.upscale_image (same tiling: `tile` cores,
     `pad` = `--overlap`; this script's own tiler when the package lacks it). FLOPs are the tiles'
     (exactly proportional to input pixels for these fully-convolutional nets);
  c  onnxruntime vs PyTorch on the tile of (a): each model exported by torch.onnx.export
     (dynamo=False, dynamic height and width; esrkd.export.export_onnx when the package has it),
     run by onnxruntime's CPU provider with the same thread count; latency ratio ORT / PyTorch,
     and the largest output difference.

Timings are medians over `--repeats` rounds after `--warmup` untimed rounds; a round runs every
model once in turn (teacher, students, and their ORT sessions), so slow drift hits all of them
alike. A run during which other processes used `--busy` cores or more (/proc/stat) is redone after
waiting for a quiet machine (benchmarks/cpu_quiet.py). PyTorch runs under inference_mode with
`--threads` threads.

    python benchmarks/latency_vs_flops.py [--depth 23] [--widths 16 32 48] [--parts a c] [--repeats 3]
    python benchmarks/latency_vs_flops.py --parts b [--frame 960x540] [--overlap 16] [--full-frame]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from esrkd.arch import RRDBArgs, RRDBNet
from esrkd.cost import flops
from esrkd.data import to_tensor, to_uint8
from esrkd.distill import student_args

from cpu_quiet import timed, wait_quiet  # benchmarks/ is on sys.path when a script in it runs

Box = tuple[int, int, int, int]  # top, left, height, width


def build_models(teacher_width: int, widths: list[int], depth: int, seed: int = 0) -> dict[str, RRDBNet]:
    torch.manual_seed(seed)
    teacher = RRDBArgs(num_feat=teacher_width, num_block=depth)
    nets = {f"teacher_{teacher_width}": RRDBNet(teacher)}
    nets |= {f"student_{w}": RRDBNet(student_args(teacher, w)) for w in widths}
    return {name: net.eval() for name, net in nets.items()}


def tile_boxes(height: int, width: int, tile: int, overlap: int) -> list[tuple[Box, Box]]:
    """(core, input) boxes: non-overlapping `tile` cores covering the frame (the last row and column
    smaller), each input the core grown by `overlap` on every side, clipped to the frame."""
    boxes = []
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            core = (top, left, min(tile, height - top), min(tile, width - left))
            t0, l0 = max(top - overlap, 0), max(left - overlap, 0)
            t1, l1 = min(top + core[2] + overlap, height), min(left + core[3] + overlap, width)
            boxes.append((core, (t0, l0, t1 - t0, l1 - l0)))
    return boxes


def upscale_tiled(net: RRDBNet, lr: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """The whole SR image of `lr` (1, C, H, W), tile by tile, each tile's core pasted in place."""
    s = net.args.scale
    out = lr.new_empty(lr.shape[0], net.args.num_out_ch, lr.shape[2] * s, lr.shape[3] * s)
    for (top, left, h, w), (t0, l0, ih, iw) in tile_boxes(lr.shape[2], lr.shape[3], tile, overlap):
        sr = net(lr[:, :, t0 : t0 + ih, l0 : l0 + iw])
        dt, dl = (top - t0) * s, (left - l0) * s
        out[:, :, top * s : (top + h) * s, left * s : (left + w) * s] = sr[:, :, dt : dt + h * s, dl : dl + w * s]
    return out


def round_robin(runners: dict[str, Callable[[], object]], warmup: int, repeats: int, busy: float = 0.1,
                wait: float = 120.0) -> tuple[dict[str, list[float]], int]:
    """Seconds of each runner per timed round, and how many runs had to be redone; every round runs
    every runner once, in turn. A run during which other processes used >= `busy` cores is redone
    (twice at most) after waiting up to `wait` s for a quiet machine; the last try is kept."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    redone = 0
    wait_quiet(busy, wait)
    for r in range(warmup + repeats):
        for name, run in runners.items():
            for attempt in range(3):
                seconds, foreign, _ = timed(run)
                print(f"latency_vs_flops: round {r + 1} {name}: {seconds * 1e3:.1f} ms ({foreign:.2f} cores busy)", file=sys.stderr)
                if r < warmup or foreign < busy:
                    break
                redone += 1
                wait_quiet(busy, wait)
            if r >= warmup:
                times[name].append(seconds)
    return times, redone


def export(net: RRDBNet, path: Path) -> str:
    """Write `net` as ONNX with dynamic height and width; return which exporter wrote it."""
    try:
        from esrkd.export import export_onnx  # the project's exporter, when the installed tree has it
    except ImportError:
        export_onnx = None
    if export_onnx is not None:
        export_onnx(net, path)
        return "esrkd.export.export_onnx"
    dynamic = {"lr": {0: "batch", 2: "height", 3: "width"}, "sr": {0: "batch", 2: "sr_height", 3: "sr_width"}}
    torch.onnx.export(net, (torch.rand(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17,
                      input_names=["lr"], output_names=["sr"], dynamic_axes=dynamic)
    return "torch.onnx.export(dynamo=False)"


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # the same cores PyTorch gets
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _torch_runner(net: RRDBNet, x: torch.Tensor) -> Callable[[], object]:
    def run() -> torch.Tensor:
        with torch.inference_mode():
            return net(x)

    return run


def _print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for row in rows:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))


def ratio_rows(names: list[str], gflops: dict[str, float], ms: dict[str, float], teacher: str, goal: float) -> tuple[list[list[str]], dict]:
    rows, out = [], {}
    for name in names:
        f_ratio, l_ratio = gflops[name] / gflops[teacher], ms[name] / ms[teacher]
        over = l_ratio / f_ratio
        out[name] = {"gflops": round(gflops[name], 3), "ms": round(ms[name], 1), "flop_ratio": round(f_ratio, 4),
                     "latency_ratio": round(l_ratio, 4), "latency_over_flop_ratio": round(over, 3), "goal_met": over <= goal}
        rows.append([name, f"{gflops[name]:.4g}", f"{f_ratio:.3f}", f"{ms[name]:.1f}", f"{l_ratio:.3f}", f"{over:.2f}",
                     "yes" if over <= goal else "no"])
    return rows, out


def part_tile(nets: dict[str, RRDBNet], args: argparse.Namespace, with_ort: bool, with_torch_table: bool) -> dict:
    """(a) and (c): one LR tile, every PyTorch model and (with_ort) its onnxruntime session in one round robin."""
    x = torch.rand(1, 3, args.tile, args.tile)
    gflops = {name: flops(net, tuple(x.shape)) / 1e9 for name, net in nets.items()}
    runners = {name: _torch_runner(net, x) for name, net in nets.items()}
    diffs, exporter = {}, None
    if with_ort:
        feed = {"lr": x.numpy()}
        # A session holds its graph in memory once built, so the ONNX files can go with the folder.
        with tempfile.TemporaryDirectory(prefix="esrkd_latency_") as folder:
            for name, net in nets.items():
                exporter = export(net, Path(folder) / f"{name}.onnx")
                session = ort_session(Path(folder) / f"{name}.onnx", args.threads)
                with torch.inference_mode():
                    diffs[name] = float(np.abs(session.run(None, feed)[0] - net(x).numpy()).max())
                runners[f"{name} ort"] = lambda s=session: s.run(None, feed)
    times, redone = round_robin(runners, args.warmup, args.repeats, args.busy, args.wait)
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    teacher, names = next(iter(nets)), list(nets)
    print(f"tile runs redone because another process was busy: {redone}")
    result: dict = {"tile": args.tile, "redone_busy": redone, "all_ms": {k: [round(t * 1e3, 1) for t in v] for k, v in times.items()}}
    if with_torch_table:
        rows, result["a"] = ratio_rows(names, gflops, ms, teacher, args.goal)
        _print_table(f"(a) one {args.tile}x{args.tile} LR tile, PyTorch, ratios to {teacher}",
                     ["model", "GFLOPs", "FLOP ratio", "ms", "latency ratio", "lat/FLOP", f"<= {args.goal}"], rows)
    if with_ort:
        result["c"], rows = {"exporter": exporter}, []
        for name in names:
            r = ms[f"{name} ort"] / ms[name]
            result["c"][name] = {"torch_ms": round(ms[name], 1), "ort_ms": round(ms[f"{name} ort"], 1), "ort_over_torch": round(r, 3),
                                 "max_abs_diff": diffs[name]}
            rows.append([name, f"{ms[name]:.1f}", f"{ms[f'{name} ort']:.1f}", f"{r:.3f}", f"{diffs[name]:.1e}"])
        _print_table(f"(c) onnxruntime vs PyTorch, one {args.tile}x{args.tile} LR tile ({exporter})",
                     ["model", "torch ms", "ort ms", "ort/torch", "max |diff|"], rows)
        ort_ms = {name: ms[f"{name} ort"] for name in names}
        rows, result["c_ratios"] = ratio_rows(names, gflops, ort_ms, teacher, args.goal)
        _print_table(f"(c') the same ratios to {teacher} under onnxruntime",
                     ["model", "GFLOPs", "FLOP ratio", "ms", "latency ratio", "lat/FLOP", f"<= {args.goal}"], rows)
    return result


def part_frame(nets: dict[str, RRDBNet], args: argparse.Namespace) -> dict:
    """(b): a tiled upscale of a whole `--frame` LR frame, estimated from one tile per input shape or timed whole."""
    fw, fh = args.frame
    boxes = tile_boxes(fh, fw, args.tile, args.overlap)
    shapes = Counter((ih, iw) for _, (_, _, ih, iw) in boxes)
    pixels = sum(ih * iw for _, (_, _, ih, iw) in boxes)
    # FLOPs are proportional to input pixels (stride-1 'same' convs, fixed upsampling): count one small input and scale.
    gflops = {name: flops(net, (1, 3, 16, 16)) / 256 * pixels / 1e9 for name, net in nets.items()}
    if args.full_frame:
        upscale, upscaler = whole_frame_upscaler()
        lr = np.random.default_rng(0).integers(0, 256, (fh, fw, 3), dtype=np.uint8)
        runners = {name: (lambda n=net: upscale(n, lr, args.tile, args.overlap)) for name, net in nets.items()}
        times, redone = round_robin(runners, args.warmup, args.repeats, args.busy, args.wait)
        seconds = {name: statistics.median(t) for name, t in times.items()}
        how = f"whole uint8 frames by {upscaler}, median of {args.repeats}"
    else:
        # One runner per (model, window shape); the frame's time: for each shape, the median x its tile count.
        runners = {(name, shape): _torch_runner(net, torch.rand(1, 3, *shape)) for name, net in nets.items() for shape in shapes}
        times, redone = round_robin(runners, args.warmup, args.repeats, args.busy, args.wait)
        seconds = {name: sum(statistics.median(times[name, shape]) * count for shape, count in shapes.items()) for name in nets}
        how = (f"one window per input shape ({len(shapes)} shapes, {sum(h * w for h, w in shapes) / args.tile ** 2:.2f} tiles' pixels) "
               f"x its tile count, median of {args.repeats}")
    print(f"frame runs redone because another process was busy: {redone}")
    ms = {name: s * 1e3 for name, s in seconds.items()}
    teacher, names = next(iter(nets)), list(nets)
    rows, ratios = ratio_rows(names, gflops, ms, teacher, args.goal)
    s = next(iter(nets.values())).args.scale
    _print_table(f"(b) tiled {fw * s}x{fh * s} upscale ({fw}x{fh} LR, {len(boxes)} tiles of {args.tile} + {args.overlap} px "
                 f"context, {pixels / (fw * fh):.3f}x the frame's pixels); time: {how}; ratios to {teacher}",
                 ["model", "GFLOPs", "FLOP ratio", "ms/frame", "latency ratio", "lat/FLOP", f"<= {args.goal}"], rows)
    return {"frame": f"{fw}x{fh}", "tiles": len(boxes), "redone_busy": redone, "overlap": args.overlap, "tile_shapes": {f"{h}x{w}": c for (h, w), c in shapes.items()},
            "method": how, "b": ratios}


def whole_frame_upscaler() -> tuple[Callable[[RRDBNet, np.ndarray, int, int], np.ndarray], str]:
    """uint8 LR frame -> uint8 SR frame, tiled: by the project's esrkd.upscale.upscale_image (what
    `esrkd upscale` runs, here in fp32) when the package has it, else by upscale_tiled here."""
    try:
        from esrkd.upscale import Model, upscale_image
    except ImportError:
        def upscale(net: RRDBNet, lr: np.ndarray, tile: int, overlap: int) -> np.ndarray:
            with torch.inference_mode():
                sr = upscale_tiled(net, to_tensor(lr).unsqueeze(0), tile, overlap)
            return to_uint8(sr[0])

        return upscale, "benchmarks/latency_vs_flops.upscale_tiled"

    def project(net: RRDBNet, lr: np.ndarray, tile: int, overlap: int) -> np.ndarray:
        return upscale_image(Model(lambda x: net(x).float(), torch.device("cpu"), net.args), lr, tile, overlap)

    return project, "esrkd.upscale.upscale_image"


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=23, help="RRDB blocks of every model (paper: 23)")
    parser.add_argument("--teacher-width", type=int, default=64)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 48], help="student widths")
    parser.add_argument("--parts", nargs="+", choices=["a", "b", "c"], default=["a", "c"], help="what to measure (see above)")
    parser.add_argument("--tile", type=int, default=128, help="LR tile side")
    parser.add_argument("--frame", type=_size, default=(960, 540), help="LR frame WxH for (b) (960x540: a 4K output at x4)")
    parser.add_argument("--overlap", type=int, default=16, help="LR context pixels around each tile's core in (b)")
    parser.add_argument("--full-frame", action="store_true", help="(b): time whole tiled frames, not one tile per shape")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--busy", type=float, default=0.1,
                        help="redo a run when other processes used this many cores meanwhile (a shared machine)")
    parser.add_argument("--wait", type=float, default=120, help="seconds to wait for a quiet machine before a redo")
    parser.add_argument("--goal", type=float, default=1.1, help="latency ratio / FLOP ratio deemed acceptable")
    parser.add_argument("--json", type=Path, help="also write the results there")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    nets = build_models(args.teacher_width, args.widths, args.depth)
    print(f"CPU, {torch.get_num_threads()} threads, depth {args.depth} RRDB blocks, random weights, "
          f"teacher {args.teacher_width} features, students {args.widths}")
    result: dict = {"threads": torch.get_num_threads(), "depth": args.depth, "teacher_width": args.teacher_width, "widths": args.widths}
    if "a" in args.parts or "c" in args.parts:
        result |= part_tile(nets, args, with_ort="c" in args.parts, with_torch_table="a" in args.parts)
    if "b" in args.parts:
        result |= part_frame(nets, args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
