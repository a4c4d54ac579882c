"""Size and CPU latency of every shipped format, for the teacher and Student_16/32/48, in one run.

    python benchmarks/ship_formats.py                  # the demo's shapes: 2 blocks, teacher 64 features
    python benchmarks/ship_formats.py --blocks 23      # the paper's
    python benchmarks/ship_formats.py --models models/pruned/0.3/net_g.pth models/students/0.3/*/net_g.pth

Formats: PyTorch fp32 and under bf16 autocast (the same net_g.pth; `esrkd upscale` picks bf16 on a CPU
with bf16 instructions), ONNX in onnxruntime (fp32, and the fp16-weights file), ncnn (fp16 weights; the
runtime's own fp16 paths where the CPU has them). Latency: one LR tile (default 128x128), each runtime on
--threads threads; after a warm-up run of each, the formats are timed in turn for --runs rounds, each run
after the CPU has gone quiet and kept only if no other process took --busy cores meanwhile
(benchmarks/cpu_quiet.py); the median of the kept runs (their count is printed). Sizes: the files `esrkd export` writes
(PyTorch: one fp32 copy of the weights, as torch.save writes a state dict; a net_g.pth holds two).
Random weights when no --models are given: latency does not depend on the values.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

from cpu_quiet import timed, wait_quiet  # benchmarks/ is on sys.path when a script in it runs
from esrkd.arch import RRDBArgs, RRDBNet
from esrkd.checkpoint import load_generator
from esrkd.export import export_ncnn, export_onnx


def interleaved(runs: dict[str, Callable[[], object]], rounds: int, busy: float, wait: float) -> dict[str, tuple[float, int]]:
    """(median quiet seconds, quiet runs kept) of each callable, timed in turn round after round, so that
    a drift of the machine's speed reaches every one alike."""
    for run in runs.values():
        run()  # warm-up: allocations, kernel choice
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for k, run in runs.items():
            if wait:
                wait_quiet(busy, wait)
            seconds, foreign, _ = timed(run)
            if foreign < busy:
                times[k].append(seconds)
    return {k: (statistics.median(v) if v else float("nan"), len(v)) for k, v in times.items()}


def measure(name: str, net: RRDBNet, tile: int, runs: int, threads: int, folder: Path, busy: float, wait: float) -> dict:
    import ncnn
    import onnxruntime as ort

    net = net.eval()
    x = torch.rand(1, 3, tile, tile, generator=torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    sizes = {"PyTorch": buffer.getbuffer().nbytes,
             "ONNX": export_onnx(net, folder / f"{name}.onnx"),
             "ONNX fp16": export_onnx(net, folder / f"{name}.fp16.onnx", fp16=True),
             "ncnn": export_ncnn(net, folder / f"{name}.param")}

    def torch_run(dtype):
        def run():
            with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                net(x)
        return run

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    sessions = {k: ort.InferenceSession(str(folder / f"{name}{s}"), options, providers=["CPUExecutionProvider"])
                for k, s in (("ONNX", ".onnx"), ("ONNX fp16", ".fp16.onnx"))}
    formats = {"PyTorch fp32": torch_run(None), "PyTorch bf16": torch_run(torch.bfloat16),
               "onnxruntime fp32": lambda: sessions["ONNX"].run(None, {"lr": x.numpy()}),
               "onnxruntime fp16 weights": lambda: sessions["ONNX fp16"].run(None, {"lr": x.numpy()})}
    runtime = ncnn.Net()
    runtime.opt.use_vulkan_compute = False
    runtime.opt.num_threads = threads
    pixels = np.ascontiguousarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))

    def ncnn_run():
        mat = ncnn.Mat.from_pixels(pixels, ncnn.Mat.PixelType.PIXEL_RGB, tile, tile)
        mat.substract_mean_normalize([], [1 / 255.0] * 3)
        ex = runtime.create_extractor()
        ex.input("data", mat)
        ex.extract("output")

    runtime.load_param(str(folder / f"{name}.param"))
    runtime.load_model(str(folder / f"{name}.bin"))
    formats["ncnn fp16"] = ncnn_run

    latency = interleaved(formats, runs, busy, wait)
    return {"model": name, "params (M)": sum(p.numel() for p in net.parameters()) / 1e6,
            **{f"{k} (MB)": v / 1e6 for k, v in sizes.items()}, **{f"{k} (s)": v for k, (v, _) in latency.items()},
            "quiet runs": min(n for _, n in latency.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, nargs="*", help="net_g.pth files (default: random RRDBNets, --blocks)")
    parser.add_argument("--blocks", type=int, default=2, help="RRDB blocks of the random nets (demo 2, paper 23)")
    parser.add_argument("--tile", type=int, default=128, help="LR tile side")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--busy", type=float, default=0.2, help="cores other processes may use during a kept run")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for a quiet CPU before each run (0: no wait)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.models:
        nets = [(str(p), load_generator(p)[0]) for p in args.models]
    else:
        nets = [(f"{'teacher' if w == 64 else f'Student_{w}'}", RRDBNet(RRDBArgs(num_feat=w, num_block=args.blocks, num_grow_ch=32)))
                for w in (64, 16, 32, 48)]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, net, args.tile, args.runs, args.threads, Path(tmp), args.busy, args.wait) for name, net in nets]
    print(f"{args.tile}x{args.tile} LR tile, {args.threads} threads, median of the quiet runs of {args.runs} rounds; "
          f"bf16 instructions: {torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()}")
    print(tabulate(rows, headers="keys", floatfmt=".3g"))


if __name__ == "__main__":
    main()
