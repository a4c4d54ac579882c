"""The `esrkd` command (its errors and argument checks are esrkd.errors', shared with the stage scripts).

    esrkd check [PARAMS]                      validate a params file (default params.yaml)
    esrkd upscale MODEL INPUT... OUTPUT       super-resolve images and folders of images, tile by tile
                                              (or -o OUTPUT; --tile, --pad, --alpha, --fp32;
                                              MODEL: net_g.pth, .onnx or ncnn .param)
    esrkd export MODEL [--format F] [--fp16]  write a net_g.pth as ONNX or ncnn (.param/.bin)
    esrkd download {div2k,benchmark} [--lr S] fetch the paper profile's data into data/raw
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from esrkd.errors import UserError, non_negative_int, positive_int, run


def _check(args: argparse.Namespace) -> None:
    from esrkd import config
    from esrkd.data import check_packaged

    p = config.load(args.params)
    for key, sources in (("data.train", p.data.train), ("data.val", p.data.val), *((f"data.test.{k}", v) for k, v in p.data.test.items())):
        try:
            check_packaged(sources)
        except UserError as err:
            raise UserError(f"{args.params}: {key}: {err}") from None
    if p.teacher.init:  # resolved as the teacher stage resolves it, from the params file's folder
        from esrkd.weights import check_tracked_init

        check_tracked_init(p.teacher.init, args.params)
    print(f"{args.params}: valid ({p.base.profile} profile, {len(p.grid.prune)} prune ratios x {len(p.grid.width)} widths)")


def _upscale(args: argparse.Namespace) -> None:
    from esrkd.upscale import load_model, plan, upscale_files

    if args.output is None and len(args.paths) < 2:
        raise UserError("give an output after the inputs, or with -o OUTPUT.")
    inputs, output = (args.paths, args.output) if args.output else (args.paths[:-1], args.paths[-1])
    pairs = plan(inputs, output)
    failed = upscale_files(load_model(args.model, args.fp32), pairs, args.tile, args.pad, args.alpha)
    if failed:
        print(f"error: {len(failed)} of {len(pairs)} input(s) not upscaled: {', '.join(map(str, failed))}", file=sys.stderr)
        sys.exit(1)


def _export(args: argparse.Namespace) -> None:
    from esrkd.checkpoint import load_generator
    from esrkd.export import export_ncnn, export_onnx

    net, _ = load_generator(args.model)
    suffix = {"onnx": ".fp16.onnx" if args.fp16 else ".onnx", "ncnn": ".param"}[args.format]
    out = args.out or args.model.with_suffix(suffix)
    size = export_onnx(net, out, args.fp16) if args.format == "onnx" else export_ncnn(net, out)
    print(f"{out}{' (+ .bin)' if args.format == 'ncnn' else ''}: {size:,} bytes")


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
    from esrkd.tiles import PAD, TILE  # the library's defaults, shown in --help

    parser = argparse.ArgumentParser(prog="esrkd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(required=True)
    check = sub.add_parser("check", help="validate a params file")
    check.add_argument("params", nargs="?", type=Path, default=Path("params.yaml"))
    check.set_defaults(func=_check)
    up = sub.add_parser("upscale", help="super-resolve images of any size with a net_g.pth, an ONNX or an ncnn file, tile by tile")
    up.add_argument("model", type=Path, help="a generator written by esrkd (net_g.pth), exported by it (.onnx), or an ncnn RRDBNet (.param, .bin beside it)")
    up.add_argument("paths", type=Path, nargs="+", metavar="INPUT",
                    help="images and folders of images; without -o the last one is the output")
    up.add_argument("-o", "--output", type=Path,
                    help="a .png for a single image, else a folder for <stem>.png files; never an input")
    up.add_argument("--tile", type=positive_int, default=TILE, help="tile side in LR pixels; bounds memory (default %(default)s)")
    up.add_argument("--pad", type=non_negative_int, default=PAD,
                    help="LR pixels of context around each tile (default %(default)s); seams match a whole-image run once it covers the receptive field")
    up.add_argument("--alpha", choices=["model", "resize"], default="model",
                    help="RGBA: upscale the alpha channel with the model (as a grey image) or a bilinear resize (default %(default)s)")
    up.add_argument("--fp32", action="store_true",
                    help="run fp32 instead of bf16 autocast (on CUDA, and on a CPU with bf16 instructions); ONNX always runs fp32")
    up.set_defaults(func=_upscale)
    exp = sub.add_parser("export", help="write a generator (net_g.pth) as ONNX, or as ncnn for ncnn apps")
    exp.add_argument("model", type=Path)
    exp.add_argument("--format", choices=["onnx", "ncnn"], default="onnx",
                     help="ncnn: a .param and a .bin (fp16 weights), blobs data/output, as realesrgan-ncnn-vulkan's models")
    exp.add_argument("--out", type=Path, help="default: MODEL with .onnx, .fp16.onnx or .param (+ .bin)")
    exp.add_argument("--fp16", action="store_true", help="ONNX: store the weights as fp16 (inputs, outputs and arithmetic stay fp32)")
    exp.set_defaults(func=_export)
    down = sub.add_parser("download", help="fetch DIV2K (train + valid HR) or the SR benchmark sets, verified and resumable")
    down.add_argument("what", choices=["div2k", "benchmark"])
    down.add_argument("--raw", type=Path, default=Path("data/raw"), help="where the extracted folders go")
    down.add_argument("--lr", type=int, choices=[2, 3, 4], help="div2k: also DIV2K's own bicubic LR images at this scale")
    down.add_argument("--archives", type=Path, default=Path("data/downloads"), help="where the archives are kept")
    down.set_defaults(func=_download)
    args = parser.parse_args(argv)
    if getattr(args, "fp16", False) and args.format == "ncnn":
        parser.error("--fp16 is for ONNX; ncnn files always hold fp16 weights")
    run(lambda: args.func(args))
