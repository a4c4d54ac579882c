"""evaluate: super-resolve the test sets with one model and write its metrics file and SR images."""

import argparse
import sys
from pathlib import Path

from esrkd import config
from esrkd.checkpoint import load_generator
from esrkd.cost import flops, latency
from esrkd.cli import run
from esrkd.evaluate import evaluate
from esrkd.outputs import atomic_dir, write_json
from esrkd.perceptual_metrics import load_lpips
from esrkd.train import setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a net_g.pth (its EMA weights are evaluated)")
    parser.add_argument("--test", type=Path, required=True, help="prepared test sets (one folder per set)")
    parser.add_argument("--metrics", type=Path, required=True, help="the metrics JSON to write")
    parser.add_argument("--images", type=Path, required=True, help="folder for the SR images, one subfolder per set")
    parser.add_argument("--timing", type=Path, required=True, help="the latency JSON to write (kept apart: timings vary)")
    args = parser.parse_args()
    p = config.load()
    device = setup(p.base)
    net, meta = load_generator(args.model)
    lpips, lpips_status = load_lpips(device)
    print(f"evaluate: LPIPS {lpips_status}", file=sys.stderr)
    with atomic_dir(args.images) as tmp:
        result = evaluate(net, args.test, p.base.scale, p.crop_border, p.evaluate.y_channel, device, tmp, lpips)
        side = p.evaluate.cost_lr_side
        result["flops"] = flops(net, (1, 3, side, side))
        result["flops_input"] = f"1x3x{side}x{side}"
        timing = latency(net, (1, 3, side, side), device, repeats=p.evaluate.latency_repeats)
        write_json(args.timing, {"model": meta, **timing})
        write_json(args.metrics, {"model": meta, "lpips_status": lpips_status, **result})
    print(f"{args.model}: PSNR {result['average']['psnr']:.2f} dB, SSIM {result['average']['ssim']:.4f} (average over sets)")


if __name__ == "__main__":
    run(main)
