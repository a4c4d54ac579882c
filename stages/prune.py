"""prune: zero the given fraction of the teacher's conv weights (global L1 magnitude), permanently."""

import argparse
from pathlib import Path

from esrkd import config
from esrkd.checkpoint import load_generator, save_generator
from esrkd.cli import prune_ratio, run
from esrkd.outputs import atomic_dir, write_json
from esrkd.prune import prune_global_l1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", type=Path, required=True, help="the teacher's net_g.pth (its EMA weights are pruned)")
    parser.add_argument("--ratio", type=prune_ratio, required=True, help="fraction of conv weights to zero, in [0, 1)")
    parser.add_argument("--out", type=Path, required=True, help="folder for net_g.pth and prune.json")
    args = parser.parse_args()
    config.load()  # a broken params.yaml stops every stage alike
    net, meta = load_generator(args.teacher)
    stats = prune_global_l1(net, args.ratio)
    print(f"prune {args.ratio}: {stats['zero_weights']:,} of {stats['prunable_weights']:,} conv weights zero; "
          f"{stats['params_nonzero']:,} of {stats['params_total']:,} parameters non-zero")
    with atomic_dir(args.out) as tmp:
        save_generator(tmp / "net_g.pth", net, None, {**meta, "prune": args.ratio, "prune_stats": stats})
        write_json(tmp / "prune.json", stats)


if __name__ == "__main__":
    run(main)
