"""prune_report: the pruned-teacher study's table (ratio x scope x fine-tune) beside the paper's teacher."""

import argparse
from pathlib import Path

from esrkd import config
from esrkd.errors import run
from esrkd.report import pruning_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics", type=Path, required=True, help="folder of per-model metrics JSON files")
    parser.add_argument("--timings", type=Path, required=True, help="folder of per-model latency JSON files")
    parser.add_argument("--test", type=Path, required=True, help="the prepared test sets")
    parser.add_argument("--paper", type=Path, required=True, help="the paper's Tables 1-2 in long CSV form")
    parser.add_argument("--out", type=Path, required=True, help="the reports folder")
    args = parser.parse_args()
    pruning_study(config.load(), args.metrics, args.timings, args.test, args.paper, args.out)
    print(f"wrote {args.out / 'pruning.md'}")


if __name__ == "__main__":
    run(main)
