"""How a stage's process runs: its seeds, CPU threads and device, set once from params `base`."""

from __future__ import annotations

import random

import numpy as np
import torch

from esrkd import config


def setup(base: config.Base) -> torch.device:
    """Seed every RNG from params and pick the device; call once at the start of a stage."""
    random.seed(base.seed)
    np.random.seed(base.seed)
    torch.manual_seed(base.seed)
    if base.threads:
        torch.set_num_threads(base.threads)
    if base.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("params.yaml base.device is 'cuda' but no CUDA device is visible; set it to 'auto' or 'cpu'.")
    use_cuda = base.device == "cuda" or (base.device == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")
