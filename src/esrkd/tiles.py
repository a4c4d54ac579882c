"""Run a generator on an image: whole (evaluation), or tile by tile (`esrkd upscale`), on [0, 1] floats.

Tiling: the LR image is cut into a grid of `tile` x `tile` tiles (the last row and column may be
smaller). Each tile is run with `pad` LR pixels of real image context on every side (fewer at the
image border, where the whole image has none either), and only the tile's own region of the output
is kept: no blending. An output pixel then sees the same inputs as in a whole-image run whenever
`pad` >= receptive_radius(...), and the tiles agree with the whole image up to float rounding
(different input sizes can pick different conv kernels); a smaller pad only changes the pixels near
the seams, by what the network draws from farther than `pad`. Memory is bounded by one
(tile + 2 pad)^2 window, besides the input and output images (float32: 16-bit images keep their depth).

Defaults: tile 256, pad 32. On RealSR's 23-block generator (receptive radius 349 LR pixels) pad 16
gave 54.5 dB against the whole image with up to 14 grey levels off at the seams, pad 32 69.7 dB and
at most 1 level; with 256-pixel tiles that context costs (320/256)^2 = 1.56x the work of the tiles alone.

Kept apart from esrkd.upscale (model files, image files) and esrkd.evaluate (metrics) so that each
imports only what it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import numpy as np
import torch
from tqdm import tqdm

from esrkd.arch import RRDBArgs
from esrkd.data import to_tensor, to_uint8

Run = Callable[[torch.Tensor], torch.Tensor]  # float NCHW in [0, 1] -> float32 SR (a net, or a wrapper of one)
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


@torch.no_grad()
def super_resolve(run: Run, lr: np.ndarray, device: torch.device) -> np.ndarray:
    """One uint8 RGB LR image -> its uint8 RGB SR image (whole image, no tiling)."""
    x = to_tensor(lr).unsqueeze(0).to(device)
    return to_uint8(run(x)[0])


def _spans(length: int, tile: int, pad: int) -> list[tuple[int, int, int, int]]:
    """(start, stop) of each tile along one side, then of the window run for it: the tile and `pad` more each side."""
    return [(a, min(a + tile, length), max(a - pad, 0), min(a + tile + pad, length)) for a in range(0, length, tile)]


@torch.no_grad()
def tiled(run: Run, device: torch.device, lr: np.ndarray, tile: int = TILE, pad: int = PAD) -> np.ndarray:
    """One float32 RGB LR image (H, W, 3) in [0, 1] -> its float32 SR image clamped to [0, 1], tile by tile."""
    h, w = lr.shape[:2]
    boxes = list(product(_spans(h, tile, pad), _spans(w, tile, pad)))
    out = None
    for (t0, t1, wt0, wt1), (l0, l1, wl0, wl1) in tqdm(boxes, desc="tiles", leave=False, disable=len(boxes) == 1):
        x = torch.from_numpy(np.ascontiguousarray(lr[wt0:wt1, wl0:wl1])).permute(2, 0, 1).unsqueeze(0).to(device)
        sr = run(x)[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        s = sr.shape[0] // (wt1 - wt0)  # the scale, read off the output: an ONNX file need not say it
        if out is None:
            out = np.empty((h * s, w * s, 3), np.float32)
        out[t0 * s : t1 * s, l0 * s : l1 * s] = sr[(t0 - wt0) * s : (t1 - wt0) * s, (l0 - wl0) * s : (l1 - wl0) * s]
    return out
