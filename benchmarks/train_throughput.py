"""Training throughput of the paper recipe's GAN-phase iteration, perceptual loss included, path by path.

For the teacher and each student width, every path trains from the same initial weights on the same
batches, through esrkd's own TrainState.step (G step with L1 + perceptual + RaGAN, the EMA, the D step;
a student adds its distiller: the frozen teacher, pruned at `prune` as in the grid, and the 1x1
adapters). The paths:

- fp32: fp32 eager; on CUDA PyTorch's defaults put the convolutions on TF32 tensor cores (printed);
- bf16: bf16 autocast with channels_last (base.precision: bf16);
- compile_fp32, compile_bf16: the same under torch.compile (base.compile: true);
- cuda_graphs_bf16: compile_bf16 with inductor's CUDA graphs (what compile's mode="reduce-overhead"
  turns on): one graph replay instead of hundreds of kernel launches. CUDA only.

Per path: iterations/s over the timed steps (after `--warmup` steps, which also compile), TFLOP/s,
that as a % of a bf16 matrix product's rate measured in the same run, peak memory, and the last pixel
L1 beside fp32 eager's (the same batches: a quality loss of a fast path shows there). The FLOPs are
counted by torch's FlopCounterMode over one more step of the fp32 eager path, after its timed steps:
the same operations on the same shapes as every timed step of every path (convolutions and matrix
products; element-wise work is not counted).

The perceptual loss is the params' VGG with torchvision's ImageNet weights when they are in the
torch.hub cache, else the same network with random weights (the same FLOPs; the output says which).
On a CPU the bf16 paths train in fp32 (esrkd's Engine), so they only exercise the code.

    python benchmarks/train_throughput.py --params params.paper.yaml --iters 30 [--json out.json]
    python benchmarks/train_throughput.py --params params.yaml --blocks 1 --batch 2 --patch 32 --widths 16  # CPU smoke
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from esrkd import config, imagenet
from esrkd.arch import RRDBNet, VGGStyleDiscriminator, count_params
from esrkd.checkpoint import model_name
from esrkd.distill import Distiller, student_args
from esrkd.losses import PerceptualLoss, vgg_features
from esrkd.prune import prune_l1
from esrkd.runtime import setup
from esrkd.train import Engine, Generator, TrainState

# path -> (precision, compile, CUDA graphs)
PATHS = {
    "fp32": ("fp32", False, False),
    "bf16": ("bf16", False, False),
    "compile_fp32": ("fp32", True, False),
    "compile_bf16": ("bf16", True, False),
    "cuda_graphs_bf16": ("bf16", True, True),
}
NOT_ON_CPU = "n/a (CPU)"


def sized(p: config.Params, blocks: int | None, batch: int | None, patch: int | None) -> config.Params:
    """`p` with the net's depth, the batch and the HR patch replaced where given (toy sizes on a CPU)."""
    net = p.net.model_copy(update={"num_block": blocks or p.net.num_block})
    train = {"batch_size": batch or p.teacher.batch_size, "patch_size": patch or p.teacher.patch_size}
    return p.model_copy(update={"net": net, "teacher": p.teacher.model_copy(update=train),
                                "distill": p.distill.model_copy(update=train)})


def perceptual_loss(p: config.Params, scratch: Path) -> tuple[PerceptualLoss, str]:
    """The recipe's perceptual loss (teacher.perceptual_net; the profiles' students use the same): torchvision's
    weights if cached, else random ones (the same network, the same FLOPs)."""
    net = p.teacher.perceptual_net
    if imagenet.weights_file(net).is_file():
        return PerceptualLoss(net, imagenet.weights_file(net)), f"{net}, torchvision's ImageNet weights"
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in vgg_features(net, PerceptualLoss.LAYER[net]).state_dict().items()}
    torch.save(state, scratch / f"{net}_random.pth")
    return (PerceptualLoss(net, scratch / f"{net}_random.pth"),
            f"{net} with random weights (torchvision's file is not in the torch.hub cache): the same FLOPs")


def models(p: config.Params, width: int | None, seed: int) -> tuple[Generator, VGGStyleDiscriminator, Distiller | None, config.Train]:
    """G, D, the distiller and the recipe of the teacher (width None) or a student, from `seed`: the same
    initial weights on every path."""
    torch.manual_seed(seed)
    teacher = RRDBNet(p.teacher_arch)
    D = VGGStyleDiscriminator(p.disc_arch)
    if width is None:
        return Generator(teacher), D, None, p.teacher
    pruned, _ = prune_l1(teacher, p.prune, p.pruning.scope, p.pruning.keep)
    G = Generator(RRDBNet(student_args(p.teacher_arch, width)), p.distill_layers, p.teacher_arch.num_feat)
    return G, D, Distiller(pruned, p.distill_layers, p.distill.feature_loss), p.distill


def batches(p: config.Params, n: int, device: torch.device, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """n (LR, HR) batches: random HR patches and their box-downscaled LR, made once and shared by every path."""
    g = torch.Generator().manual_seed(seed)
    b, size, scale = p.teacher.batch_size, p.teacher.patch_size, p.base.scale
    out = []
    for _ in range(n):
        hr = torch.rand(b, 3, size, size, generator=g)
        out.append((F.avg_pool2d(hr, scale).to(device), hr.to(device)))
    return out


def sig(x: float) -> float:
    """x to 4 significant digits: what a timing can carry, at toy sizes as at the paper's."""
    return float(f"{x:.4g}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, n: int, repeats: int = 10) -> float:
    """TFLOP/s of an n x n x n bf16 matrix product on `device` (mean of `repeats` after 3 warm-ups)."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def time_path(p: config.Params, width: int | None, path: str, data: list, perceptual: PerceptualLoss,
              device: torch.device, warmup: int, count_flops: bool) -> dict:
    """One path's it/s, peak memory and last pixel L1 over data[warmup:] (data[:warmup] warm up and compile),
    and with `count_flops` the FLOPs of one more step."""
    precision, compile, graphs = PATHS[path]
    if compile:
        import torch._dynamo
        import torch._inductor.config

        torch._dynamo.reset()  # else each model's compiles count toward dynamo's recompile limit, then run eagerly
    G, D, distiller, cfg = models(p, width, p.base.seed)
    cfg = cfg.model_copy(update={"warmup_iters": 0, "gan_iters": len(data) + 1})  # every step in the GAN phase
    state = TrainState(G, D, cfg, Engine(device, precision, compile), perceptual, distiller)
    fmt = state.engine.memory_format
    data = [(lr.contiguous(memory_format=fmt), hr.contiguous(memory_format=fmt)) for lr, hr in data]
    # mode="reduce-overhead" is exactly this option; each step is marked as a new iteration of the graphs
    graphs_on = torch._inductor.config.patch({"triton.cudagraphs": True}) if graphs else contextlib.nullcontext()
    step_begin = torch.compiler.cudagraph_mark_step_begin if graphs else (lambda: None)
    with graphs_on:
        for it, (lr, hr) in enumerate(data[:warmup], start=1):
            step_begin()
            state.step(it, lr, hr)
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for it, (lr, hr) in enumerate(data[warmup:], start=warmup + 1):
            step_begin()
            logs = state.step(it, lr, hr)
        sync(device)
        seconds = time.perf_counter() - start
        row = {"it_s": (len(data) - warmup) / seconds, "l_pix": logs["l_pix"].item(),
               "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else NOT_ON_CPU}
        if count_flops:
            with FlopCounterMode(display=False) as counter:
                state.step(len(data) + 1, *data[0])
            row["step_flop"] = counter.get_total_flops()
    del state, G, D, distiller
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def benchmark(p: config.Params, widths: list[int], paths: list[str], iters: int, warmup: int, device: torch.device,
              matmul_size: int, scratch: Path, json_out: Path | None = None) -> dict:
    """Every path of the teacher and each student width; with `json_out`, the result so far is written there
    after each model (a run stopped at its time limit keeps the models it finished)."""
    peak = matmul_tflops(device, matmul_size)
    perceptual, perceptual_status = perceptual_loss(p, scratch)
    data = batches(p, warmup + iters, device, p.base.seed)
    out = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "tf32": {"cudnn_conv": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
        "sizes": {"blocks": p.net.num_block, "batch": p.teacher.batch_size, "hr_patch": p.teacher.patch_size,
                  "warmup_steps": warmup, "timed_steps": iters},
        "perceptual": perceptual_status,
        "flops": "FlopCounterMode over one fp32 eager step (G, D, VGG, distiller; forward + backward); every path runs the same operations",
        "bf16_matmul_tflops": sig(peak),
        "bf16_matmul_size": matmul_size,
        "models": {},
    }
    for width in [None, *widths]:
        name = model_name({"role": "teacher"} if width is None else {"role": "student", "width": width})
        ref = time_path(p, width, "fp32", data, perceptual, device, warmup, count_flops=True)
        flop = ref.pop("step_flop")
        rows = {}
        for path in ["fp32", *(q for q in paths if q != "fp32")]:
            if PATHS[path][2] and device.type != "cuda":
                rows[path] = NOT_ON_CPU
                continue
            try:
                row = ref if path == "fp32" else time_path(p, width, path, data, perceptual, device, warmup, count_flops=False)
            except Exception as err:  # noqa: BLE001 -- on a leased GPU one failing path must not lose the others' figures
                rows[path] = f"error: {type(err).__name__}: {err}"[:500]
                continue
            tflops = flop * row["it_s"] / 1e12
            memory = row["peak_memory_gib"]
            rows[path] = {"it_s": sig(row["it_s"]), "speedup": sig(row["it_s"] / ref["it_s"]), "tflops": sig(tflops),
                          "pct_of_bf16_matmul": sig(100 * tflops / peak), "peak_memory_gib": memory if isinstance(memory, str) else sig(memory),
                          "l_pix": row["l_pix"], "l_pix_minus_fp32": row["l_pix"] - ref["l_pix"]}
        arch = p.teacher_arch if width is None else student_args(p.teacher_arch, width)
        out["models"][name] = {"params_g": count_params(RRDBNet(arch))[0], "step_flop": flop, "paths": rows}
        if json_out is not None:
            json_out.write_text(json.dumps(out, indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.paper.yaml")
    parser.add_argument("--iters", type=int, default=30, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=3, help="steps before timing (compilation, CUDA graph capture)")
    parser.add_argument("--widths", type=int, nargs="*", help="student widths (default: the params' grid.width)")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS), help="fp32, the reference, always runs")
    parser.add_argument("--blocks", type=int, help="RRDB blocks (default: the params')")
    parser.add_argument("--batch", type=int, help="batch size (default: the params' teacher.batch_size)")
    parser.add_argument("--patch", type=int, help="HR patch side (default: the params' teacher.patch_size)")
    parser.add_argument("--matmul-size", type=int, help="side of the bf16 matrix product (default 8192 on CUDA, 512 on a CPU)")
    parser.add_argument("--json", type=Path, help="also write the result here, after each model")
    args = parser.parse_args()
    p = sized(config.load(args.params), args.blocks, args.batch, args.patch)
    device = setup(p.base)
    widths = p.grid.width if args.widths is None else args.widths
    matmul_size = args.matmul_size or (8192 if device.type == "cuda" else 512)
    with tempfile.TemporaryDirectory(prefix="throughput_") as scratch:
        result = benchmark(p, widths, args.paths, args.iters, args.warmup, device, matmul_size, Path(scratch), args.json)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
