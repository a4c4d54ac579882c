"""How large the feature-distillation term is next to L1, for each distill.feature_loss, on a real teacher.

The paper gives no lambda_distill. A 23-block teacher (by default the RealSR generator a pip package
ships) and a 23-block student of width 16 train a few warm-up iterations (L1 + lambda_distill x the
feature term over every RRDB block, as the paper profile starts) on small patches of scikit-image
photos with MATLAB-bicubic LR. For each feature loss it prints the raw terms at iteration 1, at the
last iteration, and with the 1x1 adapters fitted by least squares to the initial student's features
on the first batch ("fitted"). At initialisation the feature term measures mostly the student's own
feature scale (an ESRGAN trunk grows 1.2x per block at init, while a trained teacher's features are
small): a transient, which says little about the rest of the run. The fitted row is the term once
the adapters match a student that has learnt nothing yet: roughly the most it should be after the
first stretch of training. The last two columns are the lambda_distill at which the feature term
equals the weighted L1 of the warm-up (L1 x 1) and of the GAN phase (L1 x l1_weight).

    python benchmarks/distill_balance.py [--teacher realsr-df2k | --teacher random] [--iters 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from esrkd import config
from esrkd.arch import DiscArgs, RRDBNet, VGGStyleDiscriminator
from esrkd.checkpoint import load_state
from esrkd.data import PatchDataset, bicubic_downscale, crop_to_scale, load_sources
from esrkd.distill import Distiller, fit_adapters, student_args
from esrkd.losses import FEATURE_LOSSES, feature_distillation_loss
from esrkd.runtime import setup
from esrkd.train import Generator, TrainState, fit
from esrkd.weights import load_pretrained_generator

IMAGES = ["skimage:astronaut", "skimage:chelsea", "skimage:coffee", "skimage:rocket"]


def _teacher(name: str, p: config.Params) -> RRDBNet:
    """The named pretrained generator, or with "random" the params' architecture freshly initialised."""
    if name == "random":
        torch.manual_seed(0)
        return RRDBNet(p.teacher_arch)
    state, args = load_pretrained_generator(name)
    net = RRDBNet(args)
    load_state(net, state, name)
    return net


def _pairs(scale: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, LR, HR) of every image, the LR made as DIV2K's (MATLAB bicubic)."""
    pairs = []
    for name, image in load_sources(IMAGES):
        hr = crop_to_scale(image, scale)
        pairs.append((name, bicubic_downscale(hr, scale), hr))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.paper.yaml", help="whose distill block (l1_weight, lr, lambda)")
    parser.add_argument("--teacher", default="realsr-df2k", help="a pretrained generator (name or file), or 'random'")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--patch", type=int, default=64, help="HR patch side")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=5, help="warm-up iterations trained per feature loss")
    parser.add_argument("--weight", type=float, help="lambda_distill they train with (default: the params')")
    args = parser.parse_args()
    p = config.load(args.params)
    setup(p.base.model_copy(update={"device": "cpu", "threads": p.base.threads or 2}))
    start = time.perf_counter()
    teacher = _teacher(args.teacher, p)
    layers = list(range(teacher.args.num_block))
    weight = p.distill.distill_weight if args.weight is None else args.weight
    cfg = p.distill.model_copy(update={"warmup_iters": args.iters, "gan_iters": 0, "batch_size": args.batch, "patch_size": args.patch,
                                       "num_workers": 0, "log_every": args.iters, "lr_milestones": [], "distill_weight": weight,
                                       "ramp_iters": 0, "val_every": 0})
    data = PatchDataset(_pairs(p.base.scale), p.base.scale, args.patch, args.iters * args.batch, p.base.seed)
    lr = torch.stack([data[k][0] for k in range(args.batch)])  # iteration 1's batch

    def student() -> Generator:  # the same initial student (and, drawn next, adapters) for every feature loss
        torch.manual_seed(p.base.seed)
        return Generator(RRDBNet(student_args(teacher.args, args.width)), layers, teacher.args.num_feat)

    fitted = student()
    fit_adapters(fitted.adapters, fitted.net, teacher, layers, lr)  # what distill.fit_adapters: true starts from
    with torch.no_grad():
        t_feats = teacher.forward_features(lr, layers)[1]
        fitted_feats = fitted(lr)[1]
    rows = []
    for kind in FEATURE_LOSSES:
        G = student()
        distiller = Distiller(teacher, layers, kind)
        D = VGGStyleDiscriminator(DiscArgs(num_feat=p.net.d_num_feat, input_size=args.patch))  # idle in the warm-up
        result = fit(TrainState(G, D, cfg, distiller=distiller), data, kind)
        first = {k: raw for k, (raw, _) in result.balance["warmup"].items()}
        last = {k.removeprefix("warmup/"): v for k, v in result.history[-1][1].items()}
        with torch.no_grad():
            settled = feature_distillation_loss(fitted_feats, t_feats, kind).item()
        for when, l_pix, l_distill in (("1", first["l_pix"], first["l_distill"]), (str(args.iters), last["l_pix"], last["l_distill"]),
                                       ("fitted", first["l_pix"], settled)):
            rows.append((kind, when, l_pix, l_distill, l_distill / len(layers), l_pix / l_distill, cfg.l1_weight * l_pix / l_distill))
    print(f"teacher {args.teacher} ({teacher.args.num_feat} features, {len(layers)} blocks), student width {args.width}, "
          f"HR patch {args.patch}, batch {args.batch}, {args.iters} warm-up iterations at lambda_distill {weight:g}, "
          f"GAN-phase l1_weight {cfg.l1_weight:g}; {time.perf_counter() - start:.0f} s")
    print(f"{'feature_loss':<15}{'iter':>7}{'l_pix':>9}{'l_distill':>12}{'per layer':>11}{'lambda: =L1':>13}"
          f"{f'lambda: ={cfg.l1_weight:g} L1':>19}")
    for kind, when, l_pix, l_distill, per_layer, warm, gan in rows:
        print(f"{kind:<15}{when:>7}{l_pix:>9.4f}{l_distill:>12.4g}{per_layer:>11.4g}{warm:>13.3g}{gan:>19.3g}")


if __name__ == "__main__":
    main()
