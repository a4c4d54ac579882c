"""Super-resolve every test image with a model, save the SR images and score them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from esrkd import fid, metrics
from esrkd.arch import RRDBNet, count_params
from esrkd.data import load_pairs, write_png
from esrkd.errors import UserError
from esrkd.perceptual_metrics import Scorer
from esrkd.tiles import super_resolve


def _mean(values: list[float | None]) -> float | None:
    """Mean over the sets that have the metric; None if none has it."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def set_fid(
    sr_dir: Path,
    hr_dir: Path,
    mode: Literal["whole", "patches"],
    patch_size: int,
    fid_score: fid.FID | None,
    fid_status: str = "available",
) -> tuple[float | None, int, str | None]:
    """(FID, samples that went in, why there is no FID) of one set: over whole images, or over
    patch_size crops in "patches" mode. Too few samples gives no FID and the reason, not an error;
    so does no scorer (`fid_score` None: its Inception weights are missing, `fid_status` says why)."""
    patch = {"whole": None, "patches": patch_size}[mode]
    # SR and HR images have the same sizes (load_pairs checks LR x scale == HR), so one count holds for both.
    n = fid.sample_count(fid.image_files(hr_dir), patch)
    if reason := fid.too_few_samples(n, patch):
        return None, n, reason
    if fid_score is None:
        return None, n, f"FID {fid_status}"
    return fid_score(sr_dir, hr_dir, patch), n, None


def evaluate(
    net: RRDBNet,
    test_root: Path,
    scale: int,
    crop_border: int,
    y_channel: bool,
    device: torch.device,
    image_out: Path,
    fid_score: fid.FID | None,
    fid_mode: Literal["whole", "patches"],
    fid_patch_size: int,
    lpips: Scorer | None = None,
    fid_status: str = "available",
) -> dict:
    """Per-image, per-set and average PSNR/SSIM, per-set and average FID; SR images written to
    image_out/<set>/<name>.png.

    The average is the mean of the per-set means (every set weighs the same, as in the paper's
    tables). FID compares a set's SR images with its HR images (pytorch-fid, 2048-d), whole
    (`fid_mode` "whole") or cut into fid_patch_size crops ("patches"); fid_samples counts the images
    or crops per side, and a set with fewer than two has no FID (None, the reason in fid_skipped), as has
    every set when `fid_score` is None (fid.load_fid: no Inception weights; `fid_status` says why).
    LPIPS (AlexNet, v0.1, RGB in [-1, 1], border cropped) is None when no `lpips` scorer is given
    (its weights are missing offline).
    """
    sets = sorted(p.name for p in Path(test_root).iterdir() if p.is_dir()) if Path(test_root).is_dir() else []
    if not sets:
        raise UserError(f"{test_root}: holds no prepared test sets; run the prepare stage first (dvc repro prepare).")
    net = net.to(device).eval()
    results: dict[str, dict] = {}
    for name in sets:
        pairs = load_pairs(Path(test_root) / name, scale)
        (image_out / name).mkdir(parents=True)  # an existing folder means two models share a name
        per_image = {}
        for stem, lr, hr in tqdm(pairs, desc=f"evaluate {name}", mininterval=2.0):
            sr = super_resolve(net, lr, device)
            write_png(image_out / name / f"{stem}.png", sr)
            per_image[stem] = {
                "psnr": metrics.psnr(sr, hr, crop_border, y_channel),
                "ssim": metrics.ssim(sr, hr, crop_border, y_channel),
                "lpips": lpips(sr, hr, crop_border) if lpips is not None else None,
            }
        fid_value, fid_samples, fid_skipped = set_fid(
            image_out / name, Path(test_root) / name / "HR", fid_mode, fid_patch_size, fid_score, fid_status)
        results[name] = {
            "n_images": len(per_image),
            "psnr": float(np.mean([m["psnr"] for m in per_image.values()])),
            "ssim": float(np.mean([m["ssim"] for m in per_image.values()])),
            "lpips": _mean([m["lpips"] for m in per_image.values()]),
            "fid": fid_value,
            "fid_samples": fid_samples,
            "fid_skipped": fid_skipped,
            "images": per_image,
        }
    total, nonzero = count_params(net)
    return {
        "params_total": total,
        "params_nonzero": nonzero,
        "protocol": {"y_channel": y_channel, "crop_border": crop_border, "scale": scale, "fid": fid_mode,
                     "fid_patch_size": fid_patch_size if fid_mode == "patches" else None},
        "average": {k: _mean([r[k] for r in results.values()]) for k in ("psnr", "ssim", "fid", "lpips")},
        "sets": results,
    }
