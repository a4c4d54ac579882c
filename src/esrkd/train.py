"""The ESRGAN training loop shared by the teacher, the pruned teacher's fine-tune and the students.

`TrainState` is everything a run updates (G with its adapters, D, their optimisers, G's EMA) and its
`step()` is one iteration, in order: the G update (pixel L1 in the warm start; weighted L1 + perceptual +
RaGAN in the GAN phase; plus lambda_distill * the distiller's L_distill for a student), the EMA update,
then the D update (GAN phase only), with the learning rate a pure function of the iteration. `fit` loops
over the batches, logs, and checkpoints the state so that a killed run continues where it stopped, with
bitwise-identical results. Every `val_every` iterations it scores G's EMA on a validation set (PSNR-Y and
SSIM-Y, the evaluate stage's protocol) into the same history, as BasicSR's val_freq does.
"""

from __future__ import annotations

import copy
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from esrkd import config, metrics
from esrkd.arch import RRDBNet, VGGStyleDiscriminator
from esrkd.data import PatchDataset, load_pairs
from esrkd.dist import World, mean_over_ranks, shard, wrap
from esrkd.errors import UserError
from esrkd.losses import PerceptualLoss, ragan_loss
from esrkd.outputs import atomic_file
from esrkd.runs import Resume
from esrkd.runtime import rng_states, set_rng_states
from esrkd.tiles import super_resolve

if TYPE_CHECKING:  # an annotation only: the teacher and prune stages must not depend on distill.py
    from esrkd.distill import Distiller

STATE_FORMAT = 3  # of the resume checkpoints; a checkpoint of another format is not resumed


def learning_rate(it: int, cfg: config.Train) -> float:
    """Step decay: the rate halves after each milestone iteration (BasicSR's MultiStepLR, gamma 0.5)."""
    return cfg.lr * 0.5 ** sum(it > m for m in cfg.lr_milestones)


def distill_weight(it: int, cfg: config.Distill) -> float:
    """lambda_distill at iteration `it`: ramps linearly from 0 (at iteration 0) over cfg.ramp_iters, then constant."""
    return cfg.distill_weight * (min(1.0, it / cfg.ramp_iters) if cfg.ramp_iters else 1.0)


def patch_dataset(train_dir: Path, cfg: config.Train, p: config.Params, iters: int | None = None) -> PatchDataset:
    """The (LR, HR) patches of a whole run: `iters` (default warmup_iters + gan_iters) x batch_size samples.

    Whole images are decoded once and kept in memory; sub-images (data.train_subimages) are read from
    disk when drawn, as BasicSR does. Either way sample k is the same.
    """
    iters, base = cfg.warmup_iters + cfg.gan_iters if iters is None else iters, p.base
    pairs = load_pairs(train_dir, base.scale, decode=p.data.train_subimages is None)
    return PatchDataset(pairs, base.scale, cfg.patch_size, iters * cfg.batch_size, base.seed)


@dataclass(frozen=True)
class Validation:
    """The images G's EMA is scored on every `every` iterations, by the evaluate stage's protocol."""

    pairs: list[tuple[str, np.ndarray, np.ndarray]]  # (name, LR, HR): uint8 RGB
    every: int
    crop_border: int
    y_channel: bool


def validation(val_dir: Path | None, cfg: config.Train, p: config.Params) -> Validation | None:
    """The prepared validation set at `val_dir` when cfg.val_every asks for one (None when it does not)."""
    if not cfg.val_every:
        return None
    if val_dir is None:
        raise UserError("val_every > 0 needs the prepared validation set: pass --val data/prepared/val (dvc.yaml).")
    return Validation(load_pairs(val_dir, p.base.scale), cfg.val_every, p.crop_border, p.evaluate.y_channel)


@torch.no_grad()
def validate(net: RRDBNet, val: Validation, device: torch.device) -> dict[str, float]:
    """Mean PSNR and SSIM of `net` over the validation images (whole images, fp32, as the evaluate stage runs it)."""
    scores = []
    for _, lr, hr in val.pairs:
        sr = super_resolve(net, lr, device)
        scores.append((metrics.psnr(sr, hr, val.crop_border, val.y_channel), metrics.ssim(sr, hr, val.crop_border, val.y_channel)))
    psnr, ssim = np.mean(scores, axis=0)
    return {"val/psnr": float(psnr), "val/ssim": float(ssim)}


def _batches(data: PatchDataset, cfg: config.Train, start_iter: int, engine: Engine) -> DataLoader:
    # Sample k is a pure function of k, so resuming at iteration i only means starting at sample i*batch,
    # and a rank of a data-parallel run only takes its slice of every global batch.
    todo = Subset(data, shard(start_iter * cfg.batch_size, len(data), cfg.batch_size, engine.world))
    return DataLoader(todo, batch_size=cfg.batch_size // engine.world.size, shuffle=False, num_workers=cfg.num_workers,
                      pin_memory=engine.device.type == "cuda", drop_last=True)


@dataclass(frozen=True)
class Engine:
    """Where and how a run computes; none of it changes the math beyond float rounding.

    precision "bf16" on CUDA runs the forward passes under bf16 autocast with channels_last tensors (weights
    and optimiser state stay fp32, so no loss scaling is needed); the CPU runs fp32. `compile` runs the
    forward passes of G, D and the distiller through torch.compile (fused kernels; the first iterations pay
    for compilation). With a `world` of several processes, each takes its slice of every batch and DDP
    averages the gradients; only rank 0 writes checkpoints.
    """

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    compile: bool = False
    world: World = World()

    @property
    def bf16(self) -> bool:
        return self.device.type == "cuda" and self.precision == "bf16"

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.bf16 else torch.contiguous_format


class Generator(nn.Module):
    """G as it trains: the RRDBNet and, for a feature-distilled student, one 1x1 conv f_i per distilled block
    (Eq. 3) mapping its output to the teacher's width. One module, so that DDP averages all their gradients."""

    def __init__(self, net: RRDBNet, layers: list[int] = (), teacher_width: int = 0):
        super().__init__()
        self.net, self.layers = net, list(layers)
        self.adapters = nn.ModuleList(nn.Conv2d(net.args.num_feat, teacher_width, 1) for _ in self.layers)

    def forward(self, lr: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        sr, feats = self.net.forward_features(lr, self.layers)
        return sr, [f(h) for f, h in zip(self.adapters, feats)]


class TrainState:
    """Everything one run updates, with one state_dict(): G (and its adapters), D, their Adam optimisers and
    G's EMA (BasicSR's: a copy of G at the start, then ema = decay * ema + (1 - decay) * G after every step).

    D may be None for a run without a GAN phase (the pruned teacher's L1 fine-tune). The frozen teacher
    inside `distiller` is never wrapped in DDP: it has no gradients to average.
    """

    def __init__(self, G: Generator, D: VGGStyleDiscriminator | None, cfg: config.Train, engine: Engine = Engine(),
                 perceptual: PerceptualLoss | None = None, distiller: Distiller | None = None):
        if D is None and cfg.gan_iters:
            raise ValueError("a GAN phase (gan_iters > 0) needs a discriminator")
        self.cfg, self.engine, self.perceptual, self.distiller = cfg, engine, perceptual, distiller
        device, fmt = engine.device, engine.memory_format
        self.G, self.D = G.to(device, memory_format=fmt).train(), D
        if D is not None:
            D.to(device, memory_format=fmt).train()
        for loss in (perceptual, distiller):
            if loss is not None:
                loss.to(device)
        # What the step calls: DDP-wrapped (which starts every rank from rank 0's weights) and compiled where
        # asked. The G step judges SR with the plain D (frozen there, so DDP has no gradient of D to wait
        # for); the D step goes through DDP.
        compiled = torch.compile if engine.compile else (lambda m: m)
        self.g = compiled(wrap(G, engine.world, device))
        self.d_frozen = compiled(D) if D is not None else None
        self.d = self.d_frozen if engine.world.size == 1 or D is None else compiled(wrap(D, engine.world, device))
        self.distill = compiled(distiller) if distiller is not None else None
        self.opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas) if D is not None else None
        # torch's foreach EMA kernel (AveragedModel itself would sync host and device on every update)
        self.ema = copy.deepcopy(G.net).requires_grad_(False)
        self._ema_update = get_ema_multi_avg_fn(cfg.ema_decay)
        self._ema_pairs = list(self.ema.parameters()), list(G.net.parameters())  # built once, not every step

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt_g] + ([self.opt_d] if self.opt_d is not None else [])

    def step(self, it: int, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Iteration `it` (from 1) on one batch; returns the raw loss terms and the weighted total."""
        cfg = self.cfg
        for opt in self._optimizers():
            for group in opt.param_groups:
                group["lr"] = learning_rate(it, cfg)
        gan_phase = it > cfg.warmup_iters
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.engine.bf16 else nullcontext()
        logs: dict[str, torch.Tensor] = {}

        # ---- generator step (D frozen) ----
        if self.D is not None:
            self.D.requires_grad_(False)
        with autocast:
            sr, feats = self.g(lr)
            logs["l_pix"] = F.l1_loss(sr, hr)
            if gan_phase:
                loss = cfg.l1_weight * logs["l_pix"]
                if self.perceptual is not None and cfg.perceptual_weight > 0:
                    logs["l_percep"] = self.perceptual(sr, hr)
                    loss = loss + cfg.perceptual_weight * logs["l_percep"]
                logs["l_g_gan"] = ragan_loss(self.d_frozen(sr), self.d_frozen(hr).detach())
                loss = loss + cfg.gan_weight * logs["l_g_gan"]
            else:
                loss = logs["l_pix"]
            if self.distill is not None:
                logs["l_distill"] = self.distill(lr, sr, feats)
                loss = loss + distill_weight(it, cfg) * logs["l_distill"]
        logs["l_g_total"] = loss
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self._ema_update(*self._ema_pairs, None)

        # ---- discriminator step ----
        if gan_phase:
            self.D.requires_grad_(True)
            with autocast:
                logs["l_d"] = ragan_loss(self.d(hr), self.d(sr.detach()))
            self.opt_d.zero_grad(set_to_none=True)
            logs["l_d"].backward()
            self.opt_d.step()
        return logs

    def loss_weights(self, it: int, terms: dict) -> dict[str, float]:
        """The weight of each generator loss term in `terms` within iteration `it`'s total."""
        cfg = self.cfg
        weights = {"l_pix": cfg.l1_weight if it > cfg.warmup_iters else 1.0, "l_percep": cfg.perceptual_weight, "l_g_gan": cfg.gan_weight,
                   "l_distill": distill_weight(it, cfg) if self.distiller is not None else 0.0}
        return {k: w for k, w in weights.items() if k in terms}

    def state_dict(self) -> dict:
        state = {"G": self.G.state_dict(), "ema": self.ema.state_dict(), "opt_g": self.opt_g.state_dict()}
        if self.D is not None:
            state |= {"D": self.D.state_dict(), "opt_d": self.opt_d.state_dict()}
        return state

    def load_state_dict(self, state: dict) -> None:
        for name, module in (("G", self.G), ("ema", self.ema), ("opt_g", self.opt_g), ("D", self.D), ("opt_d", self.opt_d)):
            if module is not None:
                module.load_state_dict(state[name])


@dataclass
class Fit:
    ema: RRDBNet  # the EMA of G: what later stages use
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (iteration, logged losses)
    resumed_from: int = 0
    # phase ("warmup", "gan") -> generator loss term -> (raw value, weight), at the phase's first iteration
    balance: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    warmup: RRDBNet | None = None  # G's EMA at the end of the warm-up, when fit was asked to keep it


def fit(state: TrainState, data: PatchDataset, desc: str = "train", resume: Resume | None = None,
        val: Validation | None = None, keep_warmup: bool = False) -> Fit:
    """Train `state` over `data` ((warmup_iters + gan_iters) x batch_size samples); return G's EMA and the logs.

    With `val`, G's EMA is scored every val.every iterations, into the history as the "val" table.

    With `resume`, the state is saved to resume.file every cfg.checkpoint_every iterations (atomically),
    and a later call with the same fingerprint continues from it. At the first iteration of each phase
    every generator loss term is recorded with its weight in `Fit.balance` and printed to stderr, so the
    balance of Eq. 4's terms can be read off any run.

    With `keep_warmup` and a GAN phase, a copy of G's EMA at the end of the warm-up is kept in `Fit.warmup`: the
    same run's "before", to score against its end (a study's GAN-phase cell).
    """
    cfg, engine = state.cfg, state.engine
    world = engine.world
    result = Fit(state.ema)
    if resume is not None and resume.file.is_file():
        saved = torch.load(resume.file, map_location=engine.device, weights_only=False)
        if saved.get("format") == STATE_FORMAT and saved["fingerprint"] == resume.fingerprint:
            state.load_state_dict(saved["state"])
            result.history, result.resumed_from, result.balance = saved["history"], saved["iteration"], saved["balance"]
            set_rng_states(saved["rng"])
            if saved["warmup"] is not None:
                result.warmup = copy.deepcopy(state.ema)
                result.warmup.load_state_dict(saved["warmup"])
            print(f"{desc}: resuming at iteration {saved['iteration']} from {resume.file}", file=sys.stderr)
        else:
            print(f"{desc}: ignoring {resume.file}: it was written with other params or inputs", file=sys.stderr)

    total = cfg.warmup_iters + cfg.gan_iters
    batches = _batches(data, cfg, result.resumed_from, engine)
    bar = tqdm(batches, desc=desc, initial=result.resumed_from, total=total, mininterval=2.0, disable=not world.main)
    for it, (lr, hr) in enumerate(bar, start=result.resumed_from + 1):
        lr = lr.to(engine.device, non_blocking=True).contiguous(memory_format=engine.memory_format)
        hr = hr.to(engine.device, non_blocking=True).contiguous(memory_format=engine.memory_format)
        logs = state.step(it, lr, hr)

        gan_phase = it > cfg.warmup_iters
        phase = "gan" if gan_phase else "warmup"
        if it == (cfg.warmup_iters + 1 if gan_phase else 1):
            # Only here, once per phase, does reading the values cost a host-device sync.
            weights = state.loss_weights(it, logs)
            raw = mean_over_ranks(torch.stack([logs[k].detach().float() for k in weights]), world).tolist()
            result.balance[phase] = {k: (r, w) for (k, w), r in zip(weights.items(), raw)}
            if world.main:
                terms = ", ".join(f"{k} {r:.4g} (x{w:g} = {r * w:.4g})" for k, (r, w) in result.balance[phase].items())
                tqdm.write(f"{desc}: iteration {it} ({phase}) {terms}", file=sys.stderr)
        if it % cfg.log_every == 0 or it == total:
            values = mean_over_ranks(torch.stack([v.detach().float() for v in logs.values()]), world).tolist()
            row = {f"{phase}/{k}": v for k, v in zip(logs, values)} | {"lr": learning_rate(it, cfg)}
            result.history.append((it, row))
            bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in row.items() if "total" in k or "pix" in k}, refresh=False)
        if keep_warmup and cfg.gan_iters and it == cfg.warmup_iters:
            result.warmup = copy.deepcopy(state.ema)
        if val is not None and world.main and it % val.every == 0:
            result.history.append((it, validate(state.ema, val, engine.device)))
        if resume is not None and world.main and ((it % cfg.checkpoint_every == 0 and it < total) or (it == total and resume.keep_final)):
            saved = {"format": STATE_FORMAT, "fingerprint": resume.fingerprint, "state": state.state_dict(), "iteration": it,
                     "history": result.history, "balance": result.balance, "rng": rng_states(),
                     "warmup": None if result.warmup is None else result.warmup.state_dict()}
            with atomic_file(resume.file) as tmp:
                torch.save(saved, tmp)
    return result


def train_discriminator(D: VGGStyleDiscriminator, G: RRDBNet, data: PatchDataset, cfg: config.Train, device: torch.device,
                        desc: str = "D") -> list[tuple[int, dict[str, float]]]:
    """D alone against a fixed G, one RaGAN step per batch of `data` (HR real, G's SR fake), in fp32; G is
    not touched. A pretrained G ships without its D, so a student's D' (Eq. 2) would start random: this
    gives it a D that has learnt to tell that G's SR from HR. Returns the logged l_d as the "d" table."""
    D.to(device).train().requires_grad_(True)
    G = G.to(device).eval()
    opt = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
    history, total = [], len(data) // cfg.batch_size
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers, drop_last=True)
    for it, (lr, hr) in enumerate(tqdm(loader, desc=desc, total=total, mininterval=2.0), start=1):
        lr, hr = lr.to(device), hr.to(device)
        with torch.no_grad():
            sr = G(lr)
        l_d = ragan_loss(D(hr), D(sr))
        opt.zero_grad(set_to_none=True)
        l_d.backward()
        opt.step()
        if it % cfg.log_every == 0 or it == total:
            history.append((it, {"d/l_d": l_d.item()}))
    return history


def l1_finetune(net: RRDBNet, data_dir: Path, iters: int, p: config.Params, device: torch.device,
                resume: Resume | None = None) -> RRDBNet:
    """Train a (pruned) network for `iters` iterations of pixel L1, with the teacher's batch and patch
    and Adam at pruning.finetune_lr; return it. The trained network itself is handed on: an EMA over so
    short a run would lag behind it."""
    cfg = p.teacher.model_copy(update={"warmup_iters": iters, "gan_iters": 0, "lr": p.pruning.finetune_lr, "lr_milestones": []})
    state = TrainState(Generator(net), None, cfg, Engine(device))
    fit(state, patch_dataset(data_dir, cfg, p), "prune fine-tune", resume)
    return net.cpu().eval()
