"""evaluate: super-resolve the test sets with each model; write per-model metrics, timings and SR images."""

import argparse
import sys
from pathlib import Path

from esrkd import config
from esrkd.checkpoint import load_models, model_files
from esrkd.cost import generator_flops, latency
from esrkd.errors import run
from esrkd.evaluate import evaluate
from esrkd.fid import load_fid
from esrkd.outputs import atomic_dir, write_json
from esrkd.perceptual_metrics import load_lpips
from esrkd.runtime import setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, nargs="+", required=True, help="net_g.pth files, or folders holding them")
    parser.add_argument("--test", type=Path, required=True, help="prepared test sets (one folder per set)")
    parser.add_argument("--metrics", type=Path, required=True, help="folder for one metrics JSON per model")
    parser.add_argument("--images", type=Path, required=True, help="folder for the SR images: <model>/<set>/<name>.png")
    parser.add_argument("--timings", type=Path, required=True, help="folder for one latency JSON per model (timings vary)")
    parser.add_argument("--by-ratio", action="store_true",
                        help="write each model's files under <folder>/<its teacher's prune ratio>/ (the teachers of every ratio in one run)")
    args = parser.parse_args()
    p = config.load()
    device = setup(p.base)
    files = model_files(args.models)  # every path checked before the networks are built
    fid_score, fid_status = load_fid(device)
    lpips, lpips_status = load_lpips(device)
    print(f"evaluate: FID {fid_status}\nevaluate: LPIPS {lpips_status}", file=sys.stderr)
    side = p.evaluate.cost_lr_side
    with atomic_dir(args.metrics) as metrics_root, atomic_dir(args.images) as images_root, atomic_dir(args.timings) as timings_root:
        for path, net, meta, name, folder in load_models(files, args.by_ratio):
            metrics_dir, images_dir, timings_dir = (root / folder for root in (metrics_root, images_root, timings_root))
            result = evaluate(net, args.test, p.base.scale, p.crop_border, p.evaluate.y_channel, device,
                              images_dir / name, fid_score, p.evaluate.fid, p.evaluate.fid_patch_size, lpips, fid_status)
            result.update(flops=generator_flops(net, side), flops_input=f"1x3x{side}x{side}")
            write_json(metrics_dir / f"{name}.json", {"model": meta, "weights": str(path), "lpips_status": lpips_status,
                                                        "fid_status": fid_status, **result})
            write_json(timings_dir / f"{name}.json", {"model": meta, **latency(net, (1, 3, side, side), device, warmup=1, repeats=p.evaluate.latency_repeats)})
            print(f"{path}: PSNR {result['average']['psnr']:.2f} dB, SSIM {result['average']['ssim']:.4f} (average over sets)")


if __name__ == "__main__":
    run(main)
