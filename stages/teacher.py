"""teacher: train the ESRGAN teacher (PSNR warm start, then GAN phase) and save G, its EMA and D."""

import argparse
import sys
from pathlib import Path

from dvclive import Live

from esrkd import config
from esrkd.arch import RRDBNet, VGGStyleDiscriminator
from esrkd.checkpoint import save_discriminator, save_generator
from esrkd.cli import run
from esrkd.losses import load_perceptual_loss
from esrkd.outputs import atomic_dir
from esrkd.train import fit, patch_loader, setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="prepared training set (HR/, LR/)")
    parser.add_argument("--out", type=Path, required=True, help="folder for net_g.pth, net_d.pth and log/")
    args = parser.parse_args()
    p = config.load()
    device = setup(p.base)
    G, D = RRDBNet(p.teacher_arch), VGGStyleDiscriminator(p.disc_arch)
    perceptual, status = load_perceptual_loss() if p.teacher.perceptual_weight > 0 else (None, "off (perceptual_weight is 0)")
    print(f"teacher: perceptual loss {status}", file=sys.stderr)
    loader = patch_loader(args.data, p.teacher, p.base, device)
    with atomic_dir(args.out) as tmp:
        with Live(str(tmp / "log"), dvcyaml=None, save_dvc_exp=False) as live:
            ema = fit(G, D, loader, p.teacher, device, live, perceptual, desc="teacher")
        meta = {
            "role": "teacher",
            "teacher_iters": {"warmup": p.teacher.warmup_iters, "gan": p.teacher.gan_iters},
            "perceptual": status,
        }
        save_generator(tmp / "net_g.pth", G, ema, meta)
        save_discriminator(tmp / "net_d.pth", D)


if __name__ == "__main__":
    run(main)
