"""distill: train a slimmer student from a frozen pruned teacher (the paper's Eq. 4)."""

import argparse
import sys
from pathlib import Path

import torch
from dvclive import Live

from esrkd import config
from esrkd.arch import RRDBNet
from esrkd.checkpoint import load_discriminator, load_generator, save, save_discriminator, save_generator
from esrkd.cli import run
from esrkd.distill import Distiller, student_args
from esrkd.losses import load_perceptual_loss
from esrkd.outputs import atomic_dir
from esrkd.train import fit, patch_loader, setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", type=Path, required=True, help="the pruned teacher's net_g.pth")
    parser.add_argument("--disc", type=Path, required=True, help="the teacher's net_d.pth (the student's D starts from it)")
    parser.add_argument("--data", type=Path, required=True, help="prepared training set (HR/, LR/)")
    parser.add_argument("--width", type=int, required=True, help="the student's feature width")
    parser.add_argument("--out", type=Path, required=True, help="folder for net_g.pth, net_d.pth, adapters.pth, log/")
    args = parser.parse_args()
    p = config.load()
    device = setup(p.base)
    teacher, teacher_meta = load_generator(args.teacher)
    D = load_discriminator(args.disc)
    G = RRDBNet(student_args(teacher.args, args.width))
    cfg = p.distill
    distiller = Distiller(teacher, args.width, p.distill_layers, cfg.distill_weight, cfg.feature_loss) if cfg.distill_weight > 0 else None
    perceptual, status = load_perceptual_loss() if cfg.perceptual_weight > 0 else (None, "off (perceptual_weight is 0)")
    print(f"distill: perceptual loss {status}", file=sys.stderr)
    loader = patch_loader(args.data, cfg, p.base, device)
    with atomic_dir(args.out) as tmp:
        with Live(str(tmp / "log"), dvcyaml=None, save_dvc_exp=False) as live:
            ema = fit(G, D, loader, cfg, device, live, perceptual, distiller, desc=f"distill {args.width}")
        meta = {
            **teacher_meta,
            "role": "student",
            "width": args.width,
            "distill_iters": {"warmup": cfg.warmup_iters, "gan": cfg.gan_iters},
            "distill": {"weight": cfg.distill_weight, "layers": p.distill_layers, "feature_loss": cfg.feature_loss},
            "perceptual": status,
        }
        save_generator(tmp / "net_g.pth", G, ema, meta)
        save_discriminator(tmp / "net_d.pth", D)
        if distiller is not None:
            save(tmp / "adapters.pth", params=distiller.adapters.state_dict(), layers=p.distill_layers)


if __name__ == "__main__":
    run(main)
