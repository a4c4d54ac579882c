"""teacher: train the ESRGAN teacher (PSNR warm start, then GAN phase) and save G, its EMA and D."""

import argparse
import sys
from pathlib import Path

from esrkd import config
from esrkd.arch import RRDBNet, VGGStyleDiscriminator
from esrkd.checkpoint import CheckpointError, load_state, save_discriminator, save_generator
from esrkd.cli import run
from esrkd.dist import finish, init, relaunch
from esrkd.losses import load_perceptual_loss
from esrkd.outputs import atomic_dir
from esrkd.train import files_digest, fingerprint, fit, patch_dataset, resume_file, setup, write_history
from esrkd.weights import load_pretrained_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="prepared training set (HR/, LR/)")
    parser.add_argument("--out", type=Path, required=True, help="folder for net_g.pth, net_d.pth and log/")
    args = parser.parse_args()
    p = config.load()
    relaunch(p.base.nproc)  # under torchrun when params ask for several processes
    world, device = init(setup(p.base))
    G, D = RRDBNet(p.teacher_arch), VGGStyleDiscriminator(p.disc_arch)
    if p.teacher.init:
        state, found = load_pretrained_generator(p.teacher.init)
        if found != p.teacher_arch:
            raise CheckpointError(f"{p.teacher.init}: holds {found}, but params.yaml net describes {p.teacher_arch}; "
                                  "set net.* (and base.scale) to match the file.")
        load_state(G, state, Path(p.teacher.init))
        print(f"teacher: starting from {p.teacher.init}", file=sys.stderr)
    perceptual, status = load_perceptual_loss() if p.teacher.perceptual_weight > 0 else (None, "off (perceptual_weight is 0)")
    print(f"teacher: perceptual loss {status}", file=sys.stderr)
    state = resume_file(args.out)
    inputs = [args.data, p.teacher.init] if p.teacher.init else [args.data]
    run_id = fingerprint(p.base, p.net, p.teacher, status, files_digest(*inputs))
    result = fit(G, D, patch_dataset(args.data, p.teacher, p.base), p.teacher, device, perceptual,
                 desc="teacher", state_file=state, fingerprint=run_id,
                 precision=p.base.precision, world=world)
    meta = {"role": "teacher", "init": p.teacher.init, "log": str(args.out / "log"),
            "teacher_iters": {"warmup": p.teacher.warmup_iters, "gan": p.teacher.gan_iters},
            "perceptual": status}
    if not world.main:  # rank 0 writes the outputs
        return finish(world)
    with atomic_dir(args.out) as tmp:
        write_history(tmp / "log", result.history)
        save_generator(tmp / "net_g.pth", G, result.ema, meta)
        save_discriminator(tmp / "net_d.pth", D)
    state.unlink(missing_ok=True)
    finish(world)


if __name__ == "__main__":
    run(main)
