"""The ESRGAN training loop shared by the teacher and the students.

One iteration, in order: G step (pixel L1 in the warm start; weighted L1 + perceptual + RaGAN in
the GAN phase; plus lambda_distill * feature distillation for a student), EMA update, then the D
step (GAN phase only), with the learning rate a pure function of the iteration.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from esrkd import config
from esrkd.arch import RRDBNet, VGGStyleDiscriminator
from esrkd.data import PatchDataset, load_pairs
from esrkd.distill import Distiller
from esrkd.losses import PerceptualLoss, ragan_loss


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


def learning_rate(it: int, cfg: config.Train) -> float:
    """Step decay: the rate halves after each milestone iteration (BasicSR's MultiStepLR, gamma 0.5)."""
    return cfg.lr * 0.5 ** sum(it > m for m in cfg.lr_milestones)


def patch_loader(train_dir: Path, cfg: config.Train, base: config.Base, device: torch.device) -> DataLoader:
    """The stream of (LR, HR) training batches, warmup_iters + gan_iters batches long."""
    iters = cfg.warmup_iters + cfg.gan_iters
    dataset = PatchDataset(load_pairs(train_dir, base.scale), base.scale, cfg.patch_size, iters * cfg.batch_size, base.seed)
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=False,  # randomness lives in the dataset, keyed by sample index
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )


def fit(
    G: RRDBNet,
    D: VGGStyleDiscriminator,
    loader: DataLoader,
    cfg: config.Train,
    device: torch.device,
    live,
    perceptual: PerceptualLoss | None = None,
    distiller: Distiller | None = None,
    desc: str = "train",
) -> RRDBNet:
    """Train G (and D in the GAN phase) in place; return the EMA of G."""
    G.to(device).train()
    D.to(device).train()
    if perceptual is not None:
        perceptual.to(device)
    g_params = list(G.parameters())
    if distiller is not None:
        distiller.to(device)
        g_params += list(distiller.adapters.parameters())
    opt_g = torch.optim.Adam(g_params, lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
    ema = AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
    layers = distiller.layers if distiller is not None else []

    for it, (lr, hr) in enumerate(tqdm(loader, desc=desc, mininterval=2.0), start=1):
        lr, hr = lr.to(device, non_blocking=True), hr.to(device, non_blocking=True)
        for group in (*opt_g.param_groups, *opt_d.param_groups):
            group["lr"] = learning_rate(it, cfg)
        gan_phase = it > cfg.warmup_iters
        logs: dict[str, torch.Tensor] = {}

        # ---- generator step (D frozen) ----
        D.requires_grad_(False)
        sr, feats = G.forward_features(lr, layers)
        logs["l_pix"] = F.l1_loss(sr, hr)
        if gan_phase:
            loss = cfg.l1_weight * logs["l_pix"]
            if perceptual is not None and cfg.perceptual_weight > 0:
                logs["l_percep"] = perceptual(sr, hr)
                loss = loss + cfg.perceptual_weight * logs["l_percep"]
            logs["l_g_gan"] = ragan_loss(D(sr), D(hr).detach())
            loss = loss + cfg.gan_weight * logs["l_g_gan"]
        else:
            loss = logs["l_pix"]
        if distiller is not None:
            logs["l_distill"] = distiller(lr, feats)
            loss = loss + distiller.weight * logs["l_distill"]
        logs["l_g_total"] = loss
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        ema.update_parameters(G)

        # ---- discriminator step ----
        if gan_phase:
            D.requires_grad_(True)
            logs["l_d"] = ragan_loss(D(hr), D(sr.detach()))
            opt_d.zero_grad(set_to_none=True)
            logs["l_d"].backward()
            opt_d.step()

        if it % cfg.log_every == 0 or it == len(loader):
            live.step = it  # dvclive's step is the training iteration
            live.log_metric("lr", learning_rate(it, cfg))
            for name, value in logs.items():
                live.log_metric(f"{'gan' if gan_phase else 'warmup'}/{name}", float(value.detach()))
            live.next_step()
    return ema.module
