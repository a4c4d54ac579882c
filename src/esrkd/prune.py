"""Global L1-magnitude unstructured pruning of the teacher's conv weights (torch.nn.utils.prune).

This is how the paper's Teacher_0.3 has 11.7M = 0.7 x 16.7M parameters: weights set to zero and
counted as non-zero parameters. The dense tensors keep their shapes, so it makes nothing faster.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import prune

from esrkd.arch import count_params


def prunable(net: nn.Module) -> list[tuple[nn.Module, str]]:
    """Every conv weight (biases are left alone, as are any non-conv layers)."""
    return [(m, "weight") for m in net.modules() if isinstance(m, nn.Conv2d)]


def prune_global_l1(net: nn.Module, ratio: float) -> dict:
    """Zero the `ratio` smallest-magnitude conv weights across the whole net, permanently; return counts."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"prune ratio {ratio} must be in [0, 1)")
    params = prunable(net)
    if ratio > 0:
        # amount as a float prunes round(ratio * n) weights across all listed tensors together
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=ratio)
        for module, name in params:
            prune.remove(module, name)  # fold the mask into the weight: zeros stay, hooks go
    n_prunable = sum(getattr(m, n).numel() for m, n in params)
    n_zero = sum(int((getattr(m, n) == 0).sum()) for m, n in params)
    total, nonzero = count_params(net)
    return {
        "ratio": ratio,
        "prunable_weights": n_prunable,
        "zero_weights": n_zero,
        "zero_fraction": n_zero / n_prunable,
        "params_total": total,
        "params_nonzero": nonzero,
    }

