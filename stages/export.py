"""export: write every generator as ONNX (fp32, and fp16 weights) and as ncnn (fp16 weights), and record the files' sizes."""

import argparse
from pathlib import Path

import torch

from esrkd.arch import count_params
from esrkd.checkpoint import load_models, model_files
from esrkd.errors import run
from esrkd.export import export_ncnn, onnx_max_abs_diffs, onnx_model, params_bytes, save_onnx
from esrkd.outputs import atomic_dir, write_json

CHECK_SHAPE = (1, 3, 24, 32)  # a fixed LR batch every export is checked against PyTorch on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, nargs="+", required=True, help="net_g.pth files, or folders holding them")
    parser.add_argument("--out", type=Path, required=True, help="folder for <model>.onnx, <model>.fp16.onnx, <model>.param/.bin (ncnn) and sizes.json")
    parser.add_argument("--by-ratio", action="store_true",
                        help="write each model's files under <out>/<its teacher's prune ratio>/, each folder with its sizes.json")
    args = parser.parse_args()
    x = torch.rand(CHECK_SHAPE, generator=torch.Generator().manual_seed(0))
    folders: dict[str, dict[str, dict]] = {}  # subfolder -> model name -> sizes
    with atomic_dir(args.out) as root:
        for path, net, _, name, folder in load_models(model_files(args.models), args.by_ratio):
            sizes, out = folders.setdefault(folder, {}), root / folder
            out.mkdir(parents=True, exist_ok=True)
            onnx32, onnx16 = out / f"{name}.onnx", out / f"{name}.fp16.onnx"
            model = onnx_model(net)  # made once for both files
            sizes[name] = {
                "weights": str(path),
                "params": count_params(net)[0],
                "params_bytes": params_bytes(net),
                "pth_bytes": path.stat().st_size,
                "onnx_bytes": save_onnx(model, onnx32),
                "onnx_fp16_bytes": save_onnx(model, onnx16, fp16=True),
            }
            sizes[name]["ncnn_bytes"] = export_ncnn(net, out / f"{name}.param")  # .param + .bin
            sizes[name]["onnx_max_abs_diff"], sizes[name]["onnx_fp16_max_abs_diff"] = onnx_max_abs_diffs(net, [onnx32, onnx16], x)
            print(f"{path} -> {onnx32.name}: {sizes[name]['onnx_bytes']:,} bytes, fp16 {sizes[name]['onnx_fp16_bytes']:,}, "
                  f"ncnn {sizes[name]['ncnn_bytes']:,}")
        for folder, sizes in folders.items():
            write_json(root / folder / "sizes.json", sizes)


if __name__ == "__main__":
    run(main)
