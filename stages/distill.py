"""distill: train a slimmer student from a frozen pruned teacher (the paper's Eq. 4), or, with several
--mode, one student per mode in one run (the ablations: one start-up, the teacher, D and data loaded once)."""

import argparse
import copy
import sys
from pathlib import Path

import torch

from esrkd import config
from esrkd.arch import RRDBNet
from esrkd.checkpoint import load_discriminator, load_generator
from esrkd.dist import finish, init, relaunch
from esrkd.distill import MODES, Distiller, fit_adapters, student_args
from esrkd.errors import UserError, positive_int, run
from esrkd.losses import load_perceptual_loss
from esrkd.runtime import rng_states, set_rng_states, setup
from esrkd.runs import Resume, drop_resume_files, files_digest, fingerprint, resume_file, write_outputs
from esrkd.train import Engine, Generator, TrainState, fit, patch_dataset, validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", type=Path, required=True, help="the pruned teacher's net_g.pth")
    parser.add_argument("--disc", type=Path, required=True, help="the teacher's net_d.pth (the student's D starts from it)")
    parser.add_argument("--data", type=Path, required=True, help="prepared training set (HR/, LR/)")
    parser.add_argument("--width", type=positive_int, required=True, help="the student's feature width")
    parser.add_argument("--mode", choices=MODES, nargs="+", default=["features"],
                        help="features: the paper's Eq. 4; output: L1 to the teacher's SR only; none: no teacher term")
    parser.add_argument("--val", type=Path, help="prepared validation set, scored every distill.val_every iterations")
    parser.add_argument("--out", type=Path, nargs="+", required=True,
                        help="folder for net_g.pth, net_d.pth, adapters.pth, log/: one per --mode, in its order")
    parser.add_argument("--keep-warmup", action="store_true",
                        help="with a GAN phase, also write G's EMA at the end of the warm-up as <out>/warmup/net_g.pth "
                             "(the same run's before and after: a study's GAN-phase cell)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="params.yaml values to override, as `dvc exp run -S` does (a study cell's knobs)")
    args = parser.parse_args()
    if len(args.out) != len(args.mode) or len(set(args.mode)) < len(args.mode):
        raise UserError(f"distill --mode {' '.join(args.mode)} --out {' '.join(map(str, args.out))}: "
                        "give each mode once and one --out folder per mode, in the same order.")
    p = config.load(assignments=args.set)
    cfg = p.distill
    relaunch(p.base.nproc)  # under torchrun when params ask for several processes
    world, device = init(setup(p.base))
    teacher, teacher_meta = load_generator(args.teacher)
    D = load_discriminator(args.disc)
    perceptual, status = load_perceptual_loss(cfg.perceptual_weight, cfg.perceptual_net, "distill.perceptual_weight")
    print(f"distill: perceptual loss {status}", file=sys.stderr)
    data = patch_dataset(args.data, cfg, p)
    val = validation(args.val, cfg, p)
    inputs = files_digest(args.teacher, args.disc, args.data, *([args.val] if args.val else []))
    several = len(args.mode) > 1
    start = rng_states()
    for mode, out in zip(args.mode, args.out):
        set_rng_states(start)  # each mode as if trained alone: the same weights whatever the other modes
        use_teacher = mode != "none" and cfg.distill_weight > 0
        layers = p.distill_layers if use_teacher and mode == "features" else []
        G = Generator(RRDBNet(student_args(teacher.args, args.width)), layers, teacher.args.num_feat)
        distiller = Distiller(teacher, layers, cfg.feature_loss, mode) if use_teacher else None
        if cfg.fit_adapters and layers:  # on the run's first batch
            fit_adapters(G.adapters, G.net, teacher, layers, torch.stack([data[k][0] for k in range(cfg.batch_size)]))
        run_id = fingerprint(p.base, cfg, args.width, mode, p.distill_layers, status, inputs, args.keep_warmup)
        resume = Resume(resume_file(out), run_id, several)
        D_mode = copy.deepcopy(D) if several else D
        state = TrainState(G, D_mode, cfg, Engine(device, p.base.precision, p.base.compile, world), perceptual, distiller)
        result = fit(state, data, f"distill {args.width}" + (f" {mode}" if several else ""), resume, val, args.keep_warmup)
        meta = {
            **teacher_meta,
            "role": "student",
            "width": args.width,
            "log": str(out / "log"),
            "distill_iters": {"warmup": cfg.warmup_iters, "gan": cfg.gan_iters},
            "distill": {"mode": mode if use_teacher else "none", "weight": cfg.distill_weight, "layers": layers,
                        "feature_loss": cfg.feature_loss, "ramp_iters": cfg.ramp_iters, "fit_adapters": cfg.fit_adapters},
            "perceptual": status,
        }
        extra = {"adapters.pth": {"params": G.adapters.state_dict(), "layers": layers}} if layers else None
        write_outputs(out, result, G.net, D_mode, meta, resume, world, extra)
    if several and world.main:
        drop_resume_files(args.out)  # every mode written
    finish(world)


if __name__ == "__main__":
    run(main)
