"""distill: train a slimmer student from a frozen pruned teacher (the paper's Eq. 4)."""

import argparse
import sys
from pathlib import Path

from esrkd import config
from esrkd.arch import RRDBNet
from esrkd.checkpoint import load_discriminator, load_generator
from esrkd.dist import init, relaunch
from esrkd.distill import MODES, Distiller, student_args
from esrkd.errors import positive_int, run
from esrkd.losses import load_perceptual_loss
from esrkd.runtime import setup
from esrkd.train import Engine, Generator, Resume, TrainState, files_digest, fingerprint, fit, patch_dataset, resume_file, write_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", type=Path, required=True, help="the pruned teacher's net_g.pth")
    parser.add_argument("--disc", type=Path, required=True, help="the teacher's net_d.pth (the student's D starts from it)")
    parser.add_argument("--data", type=Path, required=True, help="prepared training set (HR/, LR/)")
    parser.add_argument("--width", type=positive_int, required=True, help="the student's feature width")
    parser.add_argument("--mode", choices=MODES, default="features",
                        help="features: the paper's Eq. 4; output: L1 to the teacher's SR only; none: no teacher term")
    parser.add_argument("--out", type=Path, required=True, help="folder for net_g.pth, net_d.pth, adapters.pth, log/")
    args = parser.parse_args()
    p = config.load()
    cfg = p.distill
    relaunch(p.base.nproc)  # under torchrun when params ask for several processes
    world, device = init(setup(p.base))
    teacher, teacher_meta = load_generator(args.teacher)
    D = load_discriminator(args.disc)
    use_teacher = args.mode != "none" and cfg.distill_weight > 0
    layers = p.distill_layers if use_teacher and args.mode == "features" else []
    G = Generator(RRDBNet(student_args(teacher.args, args.width)), layers, teacher.args.num_feat)
    distiller = Distiller(teacher, layers, cfg.distill_weight, cfg.feature_loss, args.mode) if use_teacher else None
    perceptual, status = load_perceptual_loss(cfg.perceptual_weight, cfg.perceptual_net, "distill.perceptual_weight")
    print(f"distill: perceptual loss {status}", file=sys.stderr)
    run_id = fingerprint(p.base, cfg, args.width, args.mode, p.distill_layers, status, files_digest(args.teacher, args.disc, args.data))
    resume = Resume(resume_file(args.out), run_id)
    state = TrainState(G, D, cfg, Engine(device, p.base.precision, p.base.compile, world), perceptual, distiller)
    result = fit(state, patch_dataset(args.data, cfg, p), f"distill {args.width}", resume)
    meta = {
        **teacher_meta,
        "role": "student",
        "width": args.width,
        "log": str(args.out / "log"),
        "distill_iters": {"warmup": cfg.warmup_iters, "gan": cfg.gan_iters},
        "distill": {"mode": args.mode if use_teacher else "none", "weight": cfg.distill_weight, "layers": layers,
                    "feature_loss": cfg.feature_loss},
        "perceptual": status,
    }
    extra = {"adapters.pth": {"params": G.adapters.state_dict(), "layers": layers}} if layers else None
    write_outputs(args.out, result, G.net, D, meta, resume, world, extra)


if __name__ == "__main__":
    run(main)
