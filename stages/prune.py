"""prune: zero the given fraction of the teacher's conv weights (L1 magnitude, global or per layer) at
each ratio, optionally fine-tune with the zeros kept, and save each result in a folder of its own."""

import argparse
import copy
from pathlib import Path

from esrkd import config
from esrkd.checkpoint import load_generator, ratio_name, save_generator
from esrkd.errors import UserError, run
from esrkd.outputs import atomic_dir, write_json
from esrkd.config import SCOPES, prune_ratio
from esrkd.prune import prune_l1
from esrkd.runtime import rng_states, set_rng_states, setup
from esrkd.runs import Resume, drop_resume_files, files_digest, fingerprint, resume_file
from esrkd.train import l1_finetune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", type=Path, required=True, help="the teacher's net_g.pth (its EMA weights are pruned)")
    parser.add_argument("--ratio", type=prune_ratio, nargs="+",
                        help="fractions of prunable conv weights to zero, each in [0, 1) (default: params.yaml grid.prune)")
    parser.add_argument("--scope", choices=SCOPES, required=True, help="one threshold over all convs, or each conv its own")
    parser.add_argument("--finetune-iters", type=int, default=0, help="L1 fine-tune iterations with the zeros kept (0 = none)")
    parser.add_argument("--data", type=Path, required=True, help="prepared training set (HR/, LR/) for the fine-tune")
    parser.add_argument("--out", type=Path, required=True, help="gets one folder per ratio (0.3/: net_g.pth, prune.json)")
    args = parser.parse_args()
    p = config.load()
    ratios = args.ratio or p.grid.prune
    if len(set(ratios)) < len(ratios):
        raise UserError(f"prune --ratio {' '.join(map(str, ratios))}: a ratio is listed twice; list each once.")
    device = setup(p.base)
    teacher, meta = load_generator(args.teacher)  # loaded once, copied for each ratio
    start = rng_states()
    for ratio in ratios:
        out = args.out / ratio_name(ratio)
        set_rng_states(start)  # each ratio as if pruned alone: the same weights whatever the other ratios
        finetune = None
        if args.finetune_iters > 0:
            run_id = fingerprint(p.base, p.teacher, p.pruning, ratio, args.scope, args.finetune_iters,
                                 files_digest(args.teacher, args.data))
            finetune = lambda masked, out=out, run_id=run_id: l1_finetune(  # noqa: E731
                masked, args.data, args.finetune_iters, p, device, Resume(resume_file(out), run_id, keep_final=len(ratios) > 1))
        net, stats = prune_l1(copy.deepcopy(teacher), ratio, args.scope, p.pruning.keep, finetune)
        stats["finetune_iters"] = args.finetune_iters
        print(f"prune {ratio} ({args.scope}, fine-tune {args.finetune_iters}): {stats['zero_weights']:,} of "
              f"{stats['prunable_weights']:,} prunable conv weights zero; "
              f"{stats['params_nonzero']:,} of {stats['params_total']:,} parameters non-zero")
        with atomic_dir(out) as tmp:
            save_generator(tmp / "net_g.pth", net, None, {**meta, "prune": ratio, "prune_stats": stats})
            write_json(tmp / "prune.json", stats)
    drop_resume_files([args.out / ratio_name(ratio) for ratio in ratios])  # every ratio written


if __name__ == "__main__":
    run(main)
