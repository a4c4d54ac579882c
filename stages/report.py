"""report: Tables 1-2 (CSV), the full grid, reports/metrics.json, a plot and reports/tables.md."""

import argparse
from pathlib import Path

from esrkd import config
from esrkd.errors import run
from esrkd.report import Inputs, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics", type=Path, required=True, help="folder of per-model metrics JSON files")
    parser.add_argument("--timings", type=Path, required=True, help="folder of per-model latency JSON files")
    parser.add_argument("--results", type=Path, required=True, help="the SR images folder")
    parser.add_argument("--test", type=Path, required=True, help="the prepared test sets")
    parser.add_argument("--paper", type=Path, required=True, help="the paper's Tables 1-2 in long CSV form")
    parser.add_argument("--exports", type=Path, help="the export stages' folders (<ratio>/sizes.json)")
    parser.add_argument("--out", type=Path, required=True, help="the reports folder")
    args = parser.parse_args()
    src = Inputs(args.metrics, args.paper, args.timings, args.results, args.test, args.exports)
    write_report(config.load(), src, args.out)
    print(f"wrote {args.out / 'tables.md'}")


if __name__ == "__main__":
    run(main)
