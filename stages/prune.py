"""prune: zero the given fraction of the teacher's conv weights (L1 magnitude, global or per layer),
optionally fine-tune with the zeros kept, and save the result."""

import argparse
from pathlib import Path

from esrkd import config
from esrkd.checkpoint import load_generator, save_generator
from esrkd.errors import prune_ratio, run
from esrkd.outputs import atomic_dir, write_json
from esrkd.prune import SCOPES, l1_finetune, prune_l1
from esrkd.runtime import setup
from esrkd.train import Resume, files_digest, fingerprint, resume_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", type=Path, required=True, help="the teacher's net_g.pth (its EMA weights are pruned)")
    parser.add_argument("--ratio", type=prune_ratio, required=True, help="fraction of prunable conv weights to zero, in [0, 1)")
    parser.add_argument("--scope", choices=SCOPES, required=True, help="one threshold over all convs, or each conv its own")
    parser.add_argument("--finetune-iters", type=int, default=0, help="L1 fine-tune iterations with the zeros kept (0 = none)")
    parser.add_argument("--data", type=Path, required=True, help="prepared training set (HR/, LR/) for the fine-tune")
    parser.add_argument("--out", type=Path, required=True, help="folder for net_g.pth and prune.json")
    args = parser.parse_args()
    p = config.load()
    device = setup(p.base)
    net, meta = load_generator(args.teacher)
    finetune = None
    if args.finetune_iters > 0:
        run_id = fingerprint(p.base, p.teacher, p.pruning, args.ratio, args.scope, args.finetune_iters,
                             files_digest(args.teacher, args.data))
        finetune = lambda masked: l1_finetune(masked, args.data, args.finetune_iters, p, device,  # noqa: E731
                                              Resume(resume_file(args.out), run_id))
    net, stats = prune_l1(net, args.ratio, args.scope, p.pruning.keep, finetune)
    stats["finetune_iters"] = args.finetune_iters
    print(f"prune {args.ratio} ({args.scope}, fine-tune {args.finetune_iters}): {stats['zero_weights']:,} of "
          f"{stats['prunable_weights']:,} prunable conv weights zero; "
          f"{stats['params_nonzero']:,} of {stats['params_total']:,} parameters non-zero")
    with atomic_dir(args.out) as tmp:
        save_generator(tmp / "net_g.pth", net, None, {**meta, "prune": args.ratio, "prune_stats": stats})
        write_json(tmp / "prune.json", stats)
    resume_file(args.out).unlink(missing_ok=True)


if __name__ == "__main__":
    run(main)
