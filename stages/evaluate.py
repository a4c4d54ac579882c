"""evaluate: super-resolve the test sets with one model and write its metrics file and SR images."""

import argparse
from pathlib import Path

from esrkd import config
from esrkd.checkpoint import load_generator
from esrkd.cli import run
from esrkd.evaluate import evaluate
from esrkd.outputs import atomic_dir, write_json
from esrkd.train import setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a net_g.pth (its EMA weights are evaluated)")
    parser.add_argument("--test", type=Path, required=True, help="prepared test sets (one folder per set)")
    parser.add_argument("--metrics", type=Path, required=True, help="the metrics JSON to write")
    parser.add_argument("--images", type=Path, required=True, help="folder for the SR images, one subfolder per set")
    args = parser.parse_args()
    p = config.load()
    device = setup(p.base)
    net, meta = load_generator(args.model)
    with atomic_dir(args.images) as tmp:
        result = evaluate(net, args.test, p.base.scale, p.crop_border, p.evaluate.y_channel, device, tmp)
        write_json(args.metrics, {"model": meta, **result})
    print(f"{args.model}: PSNR {result['average']['psnr']:.2f} dB, SSIM {result['average']['ssim']:.4f} (average over sets)")


if __name__ == "__main__":
    run(main)
