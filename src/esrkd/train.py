"""The ESRGAN training loop shared by the teacher and the students.

One iteration, in order: G step (pixel L1 in the warm start; weighted L1 + perceptual + RaGAN in
the GAN phase; plus lambda_distill * feature distillation for a student), EMA update, then the D
step (GAN phase only), with the learning rate a pure function of the iteration. Training state is
checkpointed so that a killed run continues where it stopped, with bitwise-identical results.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from esrkd import config
from esrkd.arch import RRDBNet, VGGStyleDiscriminator
from esrkd.checkpoint import save, save_discriminator, save_generator
from esrkd.data import PatchDataset, load_pairs
from esrkd.dist import World, average_gradients, broadcast_parameters, finish, mean_over_ranks, shard
from esrkd.distill import Distiller
from esrkd.losses import PerceptualLoss, ragan_loss
from esrkd.outputs import atomic_dir, atomic_file


def learning_rate(it: int, cfg: config.Train) -> float:
    """Step decay: the rate halves after each milestone iteration (BasicSR's MultiStepLR, gamma 0.5)."""
    return cfg.lr * 0.5 ** sum(it > m for m in cfg.lr_milestones)


def patch_dataset(train_dir: Path, cfg: config.Train, p: config.Params) -> PatchDataset:
    """The (LR, HR) patches of a whole run: (warmup_iters + gan_iters) x batch_size samples.

    Whole images are decoded once and kept in memory; sub-images (data.train_subimages) are read from
    disk when drawn, as BasicSR does. Either way sample k is the same.
    """
    iters, base = cfg.warmup_iters + cfg.gan_iters, p.base
    pairs = load_pairs(train_dir, base.scale, decode=p.data.train_subimages is None)
    return PatchDataset(pairs, base.scale, cfg.patch_size, iters * cfg.batch_size, base.seed)


def _batches(data: PatchDataset, cfg: config.Train, device: torch.device, start_iter: int, world: World) -> DataLoader:
    # Sample k is a pure function of k, so resuming at iteration i only means starting at sample i*batch,
    # and a rank of a data-parallel run only takes its slice of every global batch.
    todo = Subset(data, shard(start_iter * cfg.batch_size, len(data), cfg.batch_size, world))
    return DataLoader(todo, batch_size=cfg.batch_size // world.size, shuffle=False, num_workers=cfg.num_workers,
                      pin_memory=device.type == "cuda", drop_last=True)


def resume_file(out: Path) -> Path:
    """Where a training stage writing `out` keeps its in-progress state: outside every DVC out."""
    return Path("checkpoints") / (Path(out).as_posix().strip("/").replace("/", "__") + ".pt")


def fingerprint(*parts: object) -> str:
    """A digest of everything a run depends on, so that a checkpoint of another run is never resumed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def files_digest(*paths: Path) -> list:
    """Content hashes of files (weights), names and sizes of the files in folders (data)."""
    out = []
    for p in map(Path, paths):
        if p.is_file():
            out.append((str(p), hashlib.sha256(p.read_bytes()).hexdigest()))
        else:
            out.extend((str(f), f.stat().st_size) for f in sorted(p.rglob("*")) if f.is_file())
    return out


@dataclass
class Fit:
    ema: RRDBNet  # the EMA of G: what later stages use
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (iteration, logged losses)
    resumed_from: int = 0
    # phase ("warmup", "gan") -> generator loss term -> (raw value, weight), at the phase's first iteration
    balance: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)


def loss_weights(cfg: config.Train, gan_phase: bool, distiller: Distiller | None, terms: dict) -> dict[str, float]:
    """The weight of each generator loss term in `terms` within the step's total, as fit composes it."""
    weights = {"l_pix": cfg.l1_weight if gan_phase else 1.0, "l_percep": cfg.perceptual_weight, "l_g_gan": cfg.gan_weight,
               "l_distill": distiller.weight if distiller is not None else 0.0}
    return {k: w for k, w in weights.items() if k in terms}


def _rng_states() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def fit(
    G: RRDBNet,
    D: VGGStyleDiscriminator,
    data: PatchDataset,
    cfg: config.Train,
    device: torch.device,
    perceptual: PerceptualLoss | None = None,
    distiller: Distiller | None = None,
    desc: str = "train",
    state_file: Path | None = None,
    fingerprint: str = "",
    precision: str = "fp32",
    world: World = World(),
    compile: bool = False,
) -> Fit:
    """Train G (and D in the GAN phase) in place; return G's EMA and the logged losses.

    With `state_file`, everything the run depends on is saved there every cfg.checkpoint_every
    iterations (atomically), and a later call with the same `fingerprint` continues from it.
    precision "bf16" on CUDA runs the forward passes under bf16 autocast with channels_last tensors
    (weights and optimiser state stay fp32, so no loss scaling is needed); the CPU runs fp32.
    `compile` runs the forward passes of G, D and the distiller (teacher included) through
    torch.compile (same math, fused kernels; the first iterations pay for compilation).
    With a `world` of several processes, each takes its slice of every batch, gradients are
    averaged across them, and only rank 0 writes checkpoints.
    At the first iteration of each phase every generator loss term is recorded with its weight in
    `Fit.balance` and printed to stderr, so the balance of Eq. 4's terms can be read off any run.
    """
    fast = device.type == "cuda" and precision == "bf16"
    memory_format = torch.channels_last if fast else torch.contiguous_format
    G.to(device, memory_format=memory_format).train()
    D.to(device, memory_format=memory_format).train()
    if perceptual is not None:
        perceptual.to(device)
    g_params = list(G.parameters())
    if distiller is not None:
        distiller.to(device)
        g_params += list(distiller.adapters.parameters())
    broadcast_parameters([G, D, *([distiller.adapters] if distiller is not None else [])], world)
    opt_g = torch.optim.Adam(g_params, lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
    # BasicSR's EMA: a copy of G at the start, then ema = decay * ema + (1 - decay) * G after every step,
    # by torch's foreach EMA kernel. (AveragedModel itself would sync host and device on every update.)
    ema = copy.deepcopy(G).requires_grad_(False)
    ema_update, ema_params, live_params = get_ema_multi_avg_fn(cfg.ema_decay), list(ema.parameters()), list(G.parameters())
    layers = distiller.layers if distiller is not None else []
    modules = {"G": G, "D": D, "ema": ema, "opt_g": opt_g, "opt_d": opt_d}
    if distiller is not None:
        modules["adapters"] = distiller.adapters
    result = Fit(ema)
    # Compiled callables share the modules' parameters; the modules themselves (state dicts, EMA) stay plain.
    g_forward, d_forward, distill_forward = G.forward_features, D, distiller
    if compile:
        g_forward, d_forward = torch.compile(G.forward_features), torch.compile(D)
        distill_forward = torch.compile(distiller) if distiller is not None else None

    if state_file is not None and state_file.is_file():
        state = torch.load(state_file, map_location=device, weights_only=False)
        if state["fingerprint"] == fingerprint:
            for name, module in modules.items():
                module.load_state_dict(state[name])
            result.history, result.resumed_from = state["history"], state["iteration"]
            result.balance = state.get("balance", {})
            _set_rng_states(state["rng"])
            print(f"{desc}: resuming at iteration {state['iteration']} from {state_file}", file=sys.stderr)
        else:
            print(f"{desc}: ignoring {state_file}: it was written with other params or inputs", file=sys.stderr)

    total = cfg.warmup_iters + cfg.gan_iters
    batches = _batches(data, cfg, device, result.resumed_from, world)
    bar = tqdm(batches, desc=desc, initial=result.resumed_from, total=total, mininterval=2.0, disable=not world.main)
    for it, (lr, hr) in enumerate(bar, start=result.resumed_from + 1):
        lr = lr.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        hr = hr.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        for group in (*opt_g.param_groups, *opt_d.param_groups):
            group["lr"] = learning_rate(it, cfg)
        gan_phase = it > cfg.warmup_iters
        logs: dict[str, torch.Tensor] = {}

        # ---- generator step (D frozen) ----
        D.requires_grad_(False)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
            sr, feats = g_forward(lr, layers)
            logs["l_pix"] = F.l1_loss(sr, hr)
            if gan_phase:
                loss = cfg.l1_weight * logs["l_pix"]
                if perceptual is not None and cfg.perceptual_weight > 0:
                    logs["l_percep"] = perceptual(sr, hr)
                    loss = loss + cfg.perceptual_weight * logs["l_percep"]
                logs["l_g_gan"] = ragan_loss(d_forward(sr), d_forward(hr).detach())
                loss = loss + cfg.gan_weight * logs["l_g_gan"]
            else:
                loss = logs["l_pix"]
            if distiller is not None:
                logs["l_distill"] = distill_forward(lr, sr, feats)
                loss = loss + distiller.weight * logs["l_distill"]
        logs["l_g_total"] = loss
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(g_params, world)
        opt_g.step()
        ema_update(ema_params, live_params, None)

        # ---- discriminator step ----
        if gan_phase:
            D.requires_grad_(True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
                logs["l_d"] = ragan_loss(d_forward(hr), d_forward(sr.detach()))
            opt_d.zero_grad(set_to_none=True)
            logs["l_d"].backward()
            average_gradients(list(D.parameters()), world)
            opt_d.step()

        phase = "gan" if gan_phase else "warmup"
        if it == (cfg.warmup_iters + 1 if gan_phase else 1):
            # Only here, once per phase, does reading the values cost a host-device sync.
            weights = loss_weights(cfg, gan_phase, distiller, logs)
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
        if state_file is not None and world.main and it % cfg.checkpoint_every == 0 and it < total:
            state = {name: module.state_dict() for name, module in modules.items()}
            state.update(iteration=it, history=result.history, balance=result.balance, rng=_rng_states(), fingerprint=fingerprint)
            with atomic_file(state_file) as tmp:
                torch.save(state, tmp)
    return result


def write_history(log_dir: Path, history: list[tuple[int, dict[str, float]]]) -> None:
    """The logged losses as dvclive metrics (step = training iteration), for `dvc plots`."""
    from dvclive import Live  # imported where used: the prune stage imports this module but never logs

    with Live(str(log_dir), dvcyaml=None, save_dvc_exp=False) as live:
        for it, row in history:
            live.step = it
            for name, value in row.items():
                live.log_metric(name, value)
            live.next_step()


def write_outputs(out: Path, result: Fit, G: RRDBNet, D: VGGStyleDiscriminator, meta: dict, state_file: Path,
                  world: World, extra: dict[str, dict] | None = None) -> None:
    """Rank 0 writes out/ at once (log/, net_g.pth with the EMA, net_d.pth, `extra` files); the checkpoint goes."""
    if world.main:
        with atomic_dir(out) as tmp:
            write_history(tmp / "log", result.history)
            save_generator(tmp / "net_g.pth", G, result.ema, meta)
            save_discriminator(tmp / "net_d.pth", D)
            for name, content in (extra or {}).items():
                save(tmp / name, **content)
        state_file.unlink(missing_ok=True)
    finish(world)
