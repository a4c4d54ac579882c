"""students_report: the real-students study's tables, seed spread, verdicts on the paper's claims and curves."""

import argparse
from pathlib import Path

from esrkd import config
from esrkd.errors import run
from esrkd.study import bicubic_on_test, write_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=Path, required=True, help="the cells' folders (metrics/, student/log/)")
    parser.add_argument("--teachers", type=Path, required=True, help="the scored teachers' folders (metrics/)")
    parser.add_argument("--out", type=Path, required=True, help="the reports folder")
    args = parser.parse_args()
    p = config.load()
    write_study(p, args.cells, args.teachers, bicubic_on_test(p), args.out)
    print(f"wrote {args.out / 'students.md'}")


if __name__ == "__main__":
    run(main)
