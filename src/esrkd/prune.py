"""L1-magnitude unstructured pruning of the teacher's conv weights (torch.nn.utils.prune), as pure functions
on a network; an optional fine-tune (train.l1_finetune, passed in) keeps the pruned weights at zero.

This is how the paper's Teacher_0.3 has 11.7M = 0.7 x 16.7M parameters: weights set to zero and
counted as non-zero parameters. The dense tensors keep their shapes, so it makes nothing faster.

Scope matters on a real network (README, "Choices the paper leaves open"): one global threshold
strips the small-weight tail convs (conv_body, conv_last) that a trained ESRGAN cannot lose, while
pruning each conv by its own ratio ("layer") keeps the teacher usable.
"""

from __future__ import annotations

from typing import Callable

from torch import nn
from torch.nn.utils import prune

from esrkd.arch import count_params
from esrkd.config import SCOPES, check_ratio


def prunable(net: nn.Module, keep: list[str] | tuple[str, ...] = ()) -> list[tuple[nn.Module, str]]:
    """Every conv weight except those of the convs named in `keep` (biases and non-conv layers stay)."""
    convs = {name: m for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    unknown = sorted(set(keep) - set(convs))
    if unknown:
        raise ValueError(f"pruning.keep: {unknown} are not conv layers of this network (e.g. conv_first, conv_last)")
    return [(m, "weight") for name, m in convs.items() if name not in keep]


def mask(net: nn.Module, ratio: float, scope: str, keep: list[str] | tuple[str, ...] = ()) -> list[tuple[nn.Module, str]]:
    """Attach torch's pruning masks: the `ratio` smallest-magnitude prunable weights, counted over all of
    them (global) or per conv (layer), now read as zero. The masks stay until `make_permanent`."""
    check_ratio(ratio)
    if scope not in SCOPES:
        raise ValueError(f"pruning.scope {scope!r} is not one of {SCOPES}")
    params = prunable(net, keep)
    # amount as a float prunes round(ratio * n) weights of the n it is counted over
    if scope == "global":
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=ratio)
    else:
        for module, name in params:
            prune.l1_unstructured(module, name, amount=ratio)
    return params


def make_permanent(params: list[tuple[nn.Module, str]]) -> None:
    """Fold each mask into its weight: the zeros stay, the hooks and masks go, BasicSR's keys return."""
    for module, name in params:
        prune.remove(module, name)


def prune_l1(
    net: nn.Module,
    ratio: float,
    scope: str,
    keep: list[str] | tuple[str, ...] = (),
    finetune: Callable[[nn.Module], nn.Module] | None = None,
) -> tuple[nn.Module, dict]:
    """Prune `net` permanently (see `mask`), optionally fine-tune it with the zeros held at zero; return
    the pruned network and its counts.

    `finetune(net) -> net` trains the pruned network while a gradient hook multiplies each pruned
    weight's gradient by its mask: with a zero gradient from the first step, Adam's moments stay zero and
    so does its update, so the pruned weights stay exactly zero.
    """
    params = mask(net, ratio, scope, keep)
    masks = [m.weight_mask for m, _ in params]
    make_permanent(params)
    if finetune is not None:
        hooks = [m.weight.register_hook(lambda grad, keep_mask=k: grad * keep_mask) for (m, _), k in zip(params, masks)]
        net = finetune(net)
        for hook in hooks:
            hook.remove()
    n_prunable = sum(m.weight.numel() for m, _ in params)
    n_zero = sum(int((m.weight == 0).sum()) for m, _ in params)
    total, nonzero = count_params(net)
    return net, {
        "ratio": ratio,
        "scope": scope,
        "keep": list(keep),
        "prunable_weights": n_prunable,
        "zero_weights": n_zero,
        "zero_fraction": n_zero / n_prunable,
        "params_total": total,
        "params_nonzero": nonzero,
    }
