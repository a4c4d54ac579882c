"""Super-resolve images of any size, tile by tile, with a net_g.pth or an ONNX file.

Tiling: the LR image is cut into a grid of `tile` x `tile` tiles (the last row and column may be
smaller). Each tile is run with `pad` LR pixels of real image context on every side (fewer at the
image border, where the whole image has none either), and only the tile's own region of the output
is kept: no blending. An output pixel then sees the same inputs as in a whole-image run whenever
`pad` >= receptive_radius(...), and the tiles agree with the whole image up to float rounding
(different input sizes can pick different conv kernels); a smaller pad only changes the pixels near
the seams, by what the network draws from farther than `pad`. Memory is bounded by one
(tile + 2 pad)^2 window, besides the input and output images.

Defaults: tile 256, pad 32. On RealSR's 23-block generator (receptive radius 349 LR pixels) pad 16
gave 54.5 dB against the whole image with up to 14 grey levels off at the seams, pad 32 69.7 dB and
at most 1 level; with 256-pixel tiles that context costs (320/256)^2 = 1.56x the work of the tiles alone.

PyTorch checkpoints run on CUDA when there is one, under bf16 autocast (fp16 where bf16 is not
supported) unless fp32 is asked for, and in fp32 on the CPU. ONNX files run with onnxruntime.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from esrkd.arch import RRDBArgs
from esrkd.checkpoint import load_generator
from esrkd.data import IMAGE_SUFFIXES, list_images, read_image, write_png
from esrkd.errors import UserError
from esrkd.evaluate import super_resolve
from esrkd.export import ARCH_KEY
from esrkd.outputs import atomic_file


@dataclass(frozen=True)
class Model:
    run: Callable[[torch.Tensor], torch.Tensor]  # float NCHW in [0, 1] on `device` -> float32 SR
    device: torch.device
    args: RRDBArgs | None  # None for an ONNX file that esrkd did not export

    @property
    def unit(self) -> int:
        """Image sides, tiles and pads must be multiples of this: x2 RRDBNet pixel-unshuffles by 2."""
        return 4 // self.args.scale if self.args else 1  # RRDBNet always upsamples x4 after unshuffling


TILE, PAD = 256, 32  # LR pixels (module docstring)

def receptive_radius(args: RRDBArgs) -> int:
    """LR pixels on each side of an output pixel's own LR pixel that it depends on.

    Every 3x3 conv reaches one pixel further at its own resolution: conv_first, five per dense block
    along its longest path (conv1 ... conv5, three blocks per RRDB) and conv_body at LR; the tail
    (conv_up1 after the first nearest x2, then conv_up2, conv_hr and conv_last after the second)
    reaches at most 2 LR pixels. A x2 model works on 2x2-unshuffled pixels, which doubles it all.
    Exact: it is the support of an output pixel's gradient (tests/test_upscale.py).
    """
    return 4 // args.scale * (1 + 15 * args.num_block + 1 + 2)


def _torch_run(net: torch.nn.Module, device: torch.device, fp32: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    dtype = None if device.type != "cuda" or fp32 else torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=dtype) if dtype else nullcontext():
            return net(x).float()  # round to uint8 from fp32: bf16 cannot hold 255 * value to half a level

    return run


def _onnx_model(path: Path) -> Model:
    import onnxruntime as ort

    if not path.is_file():
        raise UserError(f"{path}: ONNX file not found; export one with `esrkd export`.")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own types for a damaged or foreign file
        raise UserError(f"{path}: not a readable ONNX model ({type(err).__name__}: {err}).") from None
    name = session.get_inputs()[0].name
    arch = session.get_modelmeta().custom_metadata_map.get(ARCH_KEY)

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.contiguous().numpy()})[0])

    return Model(run, torch.device("cpu"), RRDBArgs(**json.loads(arch)) if arch else None)


def load_model(path: Path, fp32: bool = False) -> Model:
    """An ONNX file (by its .onnx suffix) or an esrkd generator checkpoint, ready to run."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return _onnx_model(path)
    net, _ = load_generator(path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return Model(_torch_run(net.to(device).eval(), device, fp32), device, net.args)


def _spans(length: int, tile: int, pad: int) -> list[tuple[int, int, int, int]]:
    """(start, stop) of each tile along one side, then of the window run for it: the tile and `pad` more each side."""
    return [(a, min(a + tile, length), max(a - pad, 0), min(a + tile + pad, length)) for a in range(0, length, tile)]


def upscale_image(model: Model, lr: np.ndarray, tile: int = TILE, pad: int = PAD) -> np.ndarray:
    """One uint8 RGB LR image -> its uint8 RGB SR image, computed tile by tile (see the module docstring)."""
    h, w = lr.shape[:2]
    boxes = list(product(_spans(h, tile, pad), _spans(w, tile, pad)))
    out = None
    for (t0, t1, wt0, wt1), (l0, l1, wl0, wl1) in tqdm(boxes, desc="tiles", leave=False, disable=len(boxes) == 1):
        sr = super_resolve(model.run, lr[wt0:wt1, wl0:wl1], model.device)
        s = sr.shape[0] // (wt1 - wt0)  # the scale, read off the output: an ONNX file need not say it
        if out is None:
            out = np.empty((h * s, w * s, 3), np.uint8)
        out[t0 * s : t1 * s, l0 * s : l1 * s] = sr[(t0 - wt0) * s : (t1 - wt0) * s, (l0 - wl0) * s : (l1 - wl0) * s]
    return out


def plan(inputs: list[Path], output: Path) -> list[tuple[Path, Path]]:
    """(input image, output PNG) pairs: `output` itself for a single image input and a .png output,
    else output/<stem>.png for every image of the inputs (files, or folders read with list_images).

    Refused before anything runs (UserError): a missing input, two inputs with one output name, and
    an output that is one of the inputs (an output folder may be an input folder if names differ).
    """
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        raise UserError(f"no such file or folder: {', '.join(missing)}.")
    suffix = output.suffix.lower()
    if len(inputs) == 1 and inputs[0].is_file() and suffix in IMAGE_SUFFIXES and not output.is_dir():
        if suffix != ".png":
            raise UserError(f"{output}: esrkd writes PNG images; give the output a .png name or a folder.")
        pairs = [(inputs[0], output)]
    else:
        files = [f for p in inputs for f in (list_images(p) if p.is_dir() else [p])]
        pairs = [(f, output / f"{f.stem}.png") for f in files]
    targets = [t for _, t in pairs]
    shared = sorted(t.name for t, n in Counter(targets).items() if n > 1)
    if shared:
        raise UserError(f"several inputs would be written to the same file(s) {shared} in {output}; rename them or upscale them separately.")
    sources = {src.resolve() for src, _ in pairs}
    clash = [str(t) for t in targets if t.resolve() in sources]
    if clash:
        raise UserError(f"{clash[0]}: is an input and would be overwritten; choose another output.")
    return pairs


def upscale_files(model: Model, pairs: list[tuple[Path, Path]], tile: int = TILE, pad: int = PAD) -> list[Path]:
    """Write every pair's SR image; an input that cannot be used is named on stderr and skipped.
    Returns the skipped inputs."""
    if tile % model.unit or pad % model.unit:
        raise UserError(f"tile {tile} and pad {pad} must be multiples of {model.unit} for a x{model.args.scale} model.")
    failed = []
    for src, dst in tqdm(pairs, desc="upscale", unit="image"):
        try:
            lr = read_image(src)
            if lr.shape[0] % model.unit or lr.shape[1] % model.unit:
                raise UserError(f"{src}: is {lr.shape[1]}x{lr.shape[0]}; a x{model.args.scale} model needs sides that are multiples of {model.unit}.")
        except UserError as err:
            tqdm.write(f"skipped: {err}", file=sys.stderr)
            failed.append(src)
            continue
        sr = upscale_image(model, lr, tile, pad)
        with atomic_file(dst) as tmp:  # never a half-written PNG under the final name
            write_png(tmp, sr)
        tqdm.write(str(dst))
    return failed
