"""teacher: train the ESRGAN teacher (PSNR warm start, then GAN phase) and save G, its EMA and D."""

import argparse
import sys
from pathlib import Path

from esrkd import config
from esrkd.arch import RRDBNet, VGGStyleDiscriminator
from esrkd.dist import finish, init, relaunch
from esrkd.errors import run
from esrkd.losses import load_perceptual_loss
from esrkd.runtime import setup
from esrkd.runs import Resume, files_digest, fingerprint, resume_file, write_outputs
from esrkd.train import Engine, Generator, TrainState, fit, patch_dataset, train_discriminator, validation
from esrkd.weights import check_tracked_init, init_generator, resolve_init


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="prepared training set (HR/, LR/)")
    parser.add_argument("--val", type=Path, help="prepared validation set, scored every teacher.val_every iterations")
    parser.add_argument("--out", type=Path, required=True, help="folder for net_g.pth, net_d.pth and log/")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="params.yaml values to override, as `dvc exp run -S` does (a study cell's knobs)")
    args = parser.parse_args()
    p = config.load(assignments=args.set)
    if p.teacher.init:
        check_tracked_init(p.teacher.init)  # before torchrun starts any process
    relaunch(p.base.nproc)  # under torchrun when params ask for several processes
    world, device = init(setup(p.base))
    G, D = RRDBNet(p.teacher_arch), VGGStyleDiscriminator(p.disc_arch)
    if p.teacher.init:
        init_generator(G, p.teacher.init)
        print(f"teacher: starting from {p.teacher.init}", file=sys.stderr)
    perceptual, status = load_perceptual_loss(p.teacher.perceptual_weight, p.teacher.perceptual_net, "teacher.perceptual_weight")
    print(f"teacher: perceptual loss {status}", file=sys.stderr)
    inputs = [args.data, *([args.val] if args.val else []), *(resolve_init(p.teacher.init) if p.teacher.init else [])]
    resume = Resume(resume_file(args.out), fingerprint(p.base, p.net, p.teacher, status, files_digest(*inputs)))
    engine = Engine(device, p.base.precision, p.base.compile, world)
    state = TrainState(Generator(G), D, p.teacher, engine, perceptual)
    result = fit(state, patch_dataset(args.data, p.teacher, p), "teacher", resume, validation(args.val, p.teacher, p))
    if p.teacher.d_iters:  # D alone against the G handed on (as loaded, for 0 + 0 iterations)
        result.history += train_discriminator(D, result.ema, patch_dataset(args.data, p.teacher, p, p.teacher.d_iters),
                                               p.teacher, device, "teacher D")
    meta = {"role": "teacher", "init": p.teacher.init, "log": str(args.out / "log"),
            "teacher_iters": {"warmup": p.teacher.warmup_iters, "gan": p.teacher.gan_iters, "d": p.teacher.d_iters},
            "perceptual": status}
    write_outputs(args.out, result, G, D, meta, resume, world)
    finish(world)


if __name__ == "__main__":
    run(main)
