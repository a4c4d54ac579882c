"""Weight files that describe themselves (BasicSR's `params` / `params_ema` keys plus `arch_args`)."""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from esrkd.arch import DiscArgs, RRDBArgs, RRDBNet, VGGStyleDiscriminator
from esrkd.errors import UserError
from esrkd.outputs import atomic_file


def save(path: Path, **content: object) -> None:
    with atomic_file(path) as tmp:
        torch.save(content, tmp)


def read(path: Path, if_missing: str = "weights file not found; run the stage that writes it (dvc repro)") -> object:
    """torch.load of a weights file (tensors only), with one-sentence errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {if_missing}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        # torch's unpickling errors advise weights_only=False, i.e. running the code a file may carry: never ours to pass on
        refused = isinstance(err, pickle.UnpicklingError)
        if refused and (found := re.search(r"GLOBAL (\S+)", str(err))):
            raise UserError(f"{path}: holds Python objects besides tensors ({found[1]}), and esrkd loads tensors only; "
                            "save a state dict of plain tensors.") from None
        reason = type(err).__name__ if refused else f"{type(err).__name__}: {err}"
        raise UserError(f"{path}: not a readable PyTorch weights file ({reason}).") from None


def load(path: Path, required: tuple[str, ...]) -> dict:
    ckpt = read(path)
    missing = [k for k in required if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise UserError(f"{path}: lacks {missing}; it was not written by esrkd (expected keys {list(required)}).")
    return ckpt


def load_state(module: nn.Module, state: dict, path: Path) -> None:
    """load_state_dict with a one-sentence error naming the file and the first mismatches."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise UserError(
            f"{path}: weights do not fit {type(module).__name__}"
            f" (missing {missing[:3]}, unexpected {unexpected[:3]}, shape mismatches {shapes[:3]});"
            " check that the file matches the architecture in params.yaml."
        )
    module.load_state_dict(state)


def save_generator(path: Path, net: RRDBNet, ema: RRDBNet | None, meta: dict) -> None:
    save(
        path,
        params=net.state_dict(),
        params_ema=(ema or net).state_dict(),
        arch_args=net.args.asdict(),
        meta=meta,
    )


def load_generator(path: Path, key: str = "params_ema") -> tuple[RRDBNet, dict]:
    """The generator in `path` built from its own arch_args, and the file's meta."""
    ckpt = load(path, ("arch_args", key))
    try:
        net = RRDBNet(RRDBArgs(**ckpt["arch_args"]))
    except (TypeError, KeyError) as err:
        raise UserError(f"{path}: arch_args {ckpt['arch_args']} do not describe an RRDBNet ({err}).") from None
    load_state(net, ckpt[key], path)
    return net, ckpt.get("meta", {})


def save_discriminator(path: Path, net: VGGStyleDiscriminator) -> None:
    save(path, params=net.state_dict(), arch_args=net.args.asdict())


def load_discriminator(path: Path) -> VGGStyleDiscriminator:
    ckpt = load(path, ("arch_args", "params"))
    net = VGGStyleDiscriminator(DiscArgs(**ckpt["arch_args"]))
    load_state(net, ckpt["params"], path)
    return net


def model_files(paths: list[Path]) -> list[Path]:
    """The generator files named by `paths`: each a net_g.pth, or a folder searched for them."""
    files = []
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"{path}: no such weights file or folder; run the stage that writes it (dvc repro) or fix the path.")
        found = [path] if path.is_file() else sorted(path.rglob("net_g.pth"))
        if not found:
            raise UserError(f"{path}: no net_g.pth there; run the stage that trains it (dvc repro).")
        files.extend(found)
    return files


def distill_mode(meta: dict) -> str:
    """How a model learnt from its teacher: features (the paper), output or none (ablations); "" for a teacher."""
    return meta.get("distill", {}).get("mode", "features") if meta.get("role") == "student" else ""


TEACHER = "teacher"  # the name of every teacher: its prune ratio is in its folder, not its name
WARMUP = "warmup"  # meta["snapshot"] of G's EMA kept at the end of the warm-up, and its name's suffix


def model_name(meta: dict) -> str:
    """A model's one name in every file and table: teacher, student-<width>, or student-<width>-<mode> for an
    ablation, with "-warmup" for a run's end-of-warm-up snapshot (runs.write_outputs). It is the stem of the
    model's metrics, timings, SR-image and export files."""
    mode = distill_mode(meta)
    if not mode:
        return TEACHER
    return (f"student-{meta['width']}" + ("" if mode == "features" else f"-{mode}")
            + (f"-{WARMUP}" if meta.get("snapshot") == WARMUP else ""))


def ratio_name(ratio: float) -> str:
    """The folder name of a prune ratio, as dvc.yaml's matrices render ${item.ratio}: 0.0, 0.3."""
    return str(float(ratio))


def ratio_folder(meta: dict, path: Path) -> str:
    """ratio_name of the prune ratio of the model's teacher (read from `path`)."""
    if meta.get("prune") is None:
        raise UserError(f"{path}: holds no prune ratio (not written by the prune or distill stage); score or export it without --by-ratio.")
    return ratio_name(meta["prune"])


def load_models(files: list[Path], by_ratio: bool = False) -> Iterator[tuple[Path, RRDBNet, dict, str, str]]:
    """Each generator file (model_files), loaded in turn, as (file, net, meta, model_name, folder): the folder
    its outputs go to, ratio_folder with `by_ratio`, else "". Two models that would write the same files are refused."""
    seen: dict[tuple[str, str], Path] = {}
    for path in files:
        net, meta = load_generator(path)
        name = model_name(meta)
        folder = ratio_folder(meta, path) if by_ratio else ""
        if (folder, name) in seen:
            raise UserError(f"{path}: a second model named {name} (first: {seen[folder, name]}); "
                            "give them separate runs, or --by-ratio if their teachers' prune ratios differ.")
        seen[folder, name] = path
        yield path, net, meta, name, folder


def model_label(name: str) -> str:
    """How the paper writes the model `model_name` calls `name`, for people (tables.md, figures): Teacher,
    Student_<width>, or Student_<width> (distillation: <mode>) for an ablation."""
    if name == TEACHER:
        return "Teacher"
    _, width, *mode = name.split("-")
    return f"Student_{width}" + (f" (distillation: {mode[0]})" if mode else "")
