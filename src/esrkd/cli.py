"""The `esrkd` command, and the error handling every stage script shares.

    esrkd check [PARAMS]                      validate a params file (default params.yaml)
    esrkd upscale WEIGHTS INPUT OUTPUT        super-resolve an image or a folder of images
    esrkd download {div2k,benchmark} [--lr S] fetch the paper profile's data into data/raw
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from esrkd.checkpoint import CheckpointError
from esrkd.config import ParamsError
from esrkd.data import DataError
from esrkd.download import DownloadError

USER_ERRORS = (ParamsError, DataError, CheckpointError, DownloadError)


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(); a user error becomes one line on stderr and exit status 2."""
    try:
        main()
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def prune_ratio(text: str) -> float:
    """argparse type: a prune ratio in [0, 1)."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"prune ratio {value} must be in [0, 1)")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be a positive integer")
    return value


def _check(args: argparse.Namespace) -> None:
    from esrkd import config

    p = config.load(args.params)
    print(f"{args.params}: valid ({p.base.profile} profile, {len(p.grid.prune)} prune ratios x {len(p.grid.width)} widths)")


def _upscale(args: argparse.Namespace) -> None:
    import torch

    from esrkd.checkpoint import load_generator
    from esrkd.data import list_images, read_image, write_png
    from esrkd.evaluate import super_resolve

    net, _ = load_generator(args.weights)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net.to(device).eval()
    inputs = list_images(args.input) if args.input.is_dir() else [args.input]
    out_dir = args.output if args.input.is_dir() else args.output.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in inputs:
        target = out_dir / f"{path.stem}.png" if args.input.is_dir() else args.output
        write_png(target, super_resolve(net, read_image(path), device))
        print(target)


def _download(args: argparse.Namespace) -> None:
    from esrkd.download import SR_BENCHMARK, fetch_and_extract, fetch_div2k

    # Archives stay outside data/raw so that DVC does not hash gigabytes of zips as a prepare input.
    checksums = args.raw / "checksums.json"
    if args.what == "div2k":
        lr = [f"{split}_lr_x{args.lr}" for split in ("train", "valid")] if args.lr else []
        folders = list(fetch_div2k(args.raw, checksums, download_dir=args.archives, splits=["train", "valid", *lr]).values())
    else:
        folders = [fetch_and_extract(SR_BENCHMARK, args.raw / "benchmark", args.archives, checksums)]
    for folder in folders:
        print(folder)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="esrkd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(required=True)
    check = sub.add_parser("check", help="validate a params file")
    check.add_argument("params", nargs="?", type=Path, default=Path("params.yaml"))
    check.set_defaults(func=_check)
    up = sub.add_parser("upscale", help="super-resolve images with a generator weights file (net_g.pth)")
    up.add_argument("weights", type=Path)
    up.add_argument("input", type=Path, help="an image or a folder of images")
    up.add_argument("output", type=Path, help="the output PNG (for an image) or folder (for a folder)")
    up.set_defaults(func=_upscale)
    down = sub.add_parser("download", help="fetch DIV2K (train + valid HR) or the SR benchmark sets, verified and resumable")
    down.add_argument("what", choices=["div2k", "benchmark"])
    down.add_argument("--raw", type=Path, default=Path("data/raw"), help="where the extracted folders go")
    down.add_argument("--lr", type=int, choices=[2, 3, 4], help="div2k: also DIV2K's own bicubic LR images at this scale")
    down.add_argument("--archives", type=Path, default=Path("data/downloads"), help="where the archives are kept")
    down.set_defaults(func=_download)
    args = parser.parse_args(argv)
    run(lambda: args.func(args))
