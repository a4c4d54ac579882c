"""Weight files that describe themselves (BasicSR's `params` / `params_ema` keys plus `arch_args`)."""

from __future__ import annotations

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
        raise UserError(f"{path}: not a readable PyTorch weights file ({type(err).__name__}: {err}).") from None


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
