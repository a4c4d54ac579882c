"""Super-resolve images of any size, tile by tile (esrkd.tiles), with a net_g.pth, an ONNX file or an ncnn .param.

Images: 8- or 16-bit, RGB, grayscale, with or without alpha; the output keeps the input's depth and
channels, as Real-ESRGAN's inference does (both decode with OpenCV, which reads grey + alpha as RGBA). The network runs on [0, 1] floats either way. Grayscale
goes in replicated to RGB and comes out as grayscale (BT.601 luma of the RGB output, OpenCV's
RGB2GRAY weights). Alpha is upscaled apart (`alpha`): "model" runs it through the network as a grey
image, "resize" is a bilinear resize (half-pixel centres, as OpenCV's INTER_LINEAR, Real-ESRGAN's
plain `--alpha_upsampler`).

PyTorch checkpoints and ncnn files (read into the same RRDBNet) run on CUDA when there is one, else
on the CPU; under bf16 autocast (fp16 on a GPU without bf16) unless fp32 is asked for, and on a CPU
only if it has bf16 instructions (cpu_bf16). ONNX files run with onnxruntime, in fp32.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from esrkd.arch import RRDBArgs, RRDBNet
from esrkd.checkpoint import load_generator, load_state
from esrkd.data import IMAGE_SUFFIXES, list_images, open_image
from esrkd.errors import UserError
from esrkd.export import ARCH_KEY
from esrkd.ncnn import load_rrdbnet
from esrkd.outputs import atomic_file
from esrkd.tiles import PAD, TILE, Run, tiled

Alpha = Literal["model", "resize"]
_BGR = {1: [0], 3: [2, 1, 0], 4: [2, 1, 0, 3]}  # OpenCV's channel order <-> ours, by channel count
GRAY = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601 luma: OpenCV's RGB2GRAY, as Real-ESRGAN's grey output


@dataclass(frozen=True)
class Model:
    run: Run  # float NCHW in [0, 1] on `device` -> float32 SR
    device: torch.device
    args: RRDBArgs | None  # None for an ONNX file that esrkd did not export

    @property
    def unit(self) -> int:
        """Image sides, tiles and pads must be multiples of this: x2 RRDBNet pixel-unshuffles by 2."""
        return 4 // self.args.scale if self.args else 1  # RRDBNet always upsamples x4 after unshuffling


def cpu_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX), which oneDNN uses under autocast.
    Without them bf16 is emulated, and slower than fp32."""
    return torch.backends.mkldnn.is_available() and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def autocast_dtype(device: torch.device, fp32: bool) -> torch.dtype | None:
    """The autocast dtype `esrkd upscale` runs a PyTorch network under on `device`; None: fp32."""
    if fp32:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_bf16() else None


def _torch_run(net: torch.nn.Module, device: torch.device, fp32: bool) -> Run:
    dtype = autocast_dtype(device, fp32)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
            return net(x).float()  # round to integers from fp32: bf16 cannot hold 255 * value to half a level

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
    """An ONNX file (by its .onnx suffix), an ncnn RRDBNet (.param, its .bin beside it) or an esrkd generator
    checkpoint, ready to run."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return _onnx_model(path)
    if path.suffix.lower() == ".param":
        state, args = load_rrdbnet(path)
        net = RRDBNet(args)
        load_state(net, state, str(path))
    else:
        net, _ = load_generator(path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return Model(_torch_run(net.to(device).eval(), device, fp32), device, net.args)


def read_photo(path: Path) -> np.ndarray:
    """An 8- or 16-bit image as (H, W, C) uint8 or uint16, C: 1 grey, 3 RGB, 4 RGBA (grey + alpha too).

    PIL checks the file first (unreadable, too many pixels: esrkd.data.open_image); OpenCV decodes,
    as PIL truncates 16-bit colour to 8 bits.
    """
    with open_image(path, "replace or remove the file"):
        pass
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UserError(f"{path}: cannot be decoded as an image; replace or remove the file.")
    if image.dtype not in (np.uint8, np.uint16):
        raise UserError(f"{path}: holds {image.dtype} pixels; esrkd upscales 8- and 16-bit images, so convert it.")
    image = image[..., None] if image.ndim == 2 else image
    return np.ascontiguousarray(image[..., _BGR[image.shape[2]]])  # OpenCV's BGR(A) -> RGB(A)


def write_photo(path: Path, image: np.ndarray) -> None:
    """A read_photo-like array as a PNG of its depth (zlib level 3, as esrkd.data.write_png)."""
    _, png = cv2.imencode(".png", np.ascontiguousarray(image[..., _BGR[image.shape[2]]]), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    Path(path).write_bytes(png.tobytes())


def _resize(plane: np.ndarray, scale: int) -> np.ndarray:
    """(H, W) float32 -> (H scale, W scale), bilinear with half-pixel centres (OpenCV's INTER_LINEAR)."""
    x = torch.from_numpy(plane)[None, None]
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)[0, 0].numpy()


def upscale_image(model: Model, image: np.ndarray, tile: int = TILE, pad: int = PAD, alpha: Alpha = "model") -> np.ndarray:
    """One LR image (H, W) or (H, W, C) as read_photo gives, uint8 or uint16 -> its SR image, same depth and
    channels, computed tile by tile (esrkd.tiles)."""
    image = image[..., None] if image.ndim == 2 else image
    top = np.iinfo(image.dtype).max
    x = image.astype(np.float32) / top
    colour, has_alpha = x.shape[2] >= 3, x.shape[2] == 4
    rgb = x[..., :3] if colour else np.repeat(x[..., :1], 3, axis=2)
    out = tiled(model.run, model.device, rgb, tile, pad)
    planes = [out] if colour else [out @ GRAY[:, None]]
    if has_alpha:
        a = x[..., -1]
        scale = out.shape[0] // x.shape[0]
        sr_alpha = _resize(a, scale) if alpha == "resize" else tiled(model.run, model.device, np.repeat(a[..., None], 3, axis=2), tile, pad) @ GRAY
        planes.append(sr_alpha[..., None])
    sr = np.concatenate(planes, axis=2)
    return np.round(np.clip(sr, 0, 1) * top).astype(image.dtype)


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


def upscale_files(model: Model, pairs: list[tuple[Path, Path]], tile: int = TILE, pad: int = PAD, alpha: Alpha = "model") -> list[Path]:
    """Write every pair's SR image; an input that cannot be used is named on stderr and skipped.
    Returns the skipped inputs."""
    if tile % model.unit or pad % model.unit:
        raise UserError(f"tile {tile} and pad {pad} must be multiples of {model.unit} for a x{model.args.scale} model.")
    failed = []
    for src, dst in tqdm(pairs, desc="upscale", unit="image"):
        try:
            lr = read_photo(src)
            if lr.shape[0] % model.unit or lr.shape[1] % model.unit:
                raise UserError(f"{src}: is {lr.shape[1]}x{lr.shape[0]}; a x{model.args.scale} model needs sides that are multiples of {model.unit}.")
        except UserError as err:
            tqdm.write(f"skipped: {err}", file=sys.stderr)
            failed.append(src)
            continue
        sr = upscale_image(model, lr, tile, pad, alpha)
        with atomic_file(dst) as tmp:  # never a half-written PNG under the final name
            write_photo(tmp, sr)
        tqdm.write(str(dst))
    return failed
