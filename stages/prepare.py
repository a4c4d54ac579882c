"""prepare: HR/LR train and test sets from params `data` (HR mod-cropped, LR by MATLAB bicubic)."""

import argparse
from pathlib import Path

from esrkd import config
from esrkd.cli import run
from esrkd.data import prepare_set
from esrkd.outputs import atomic_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder to hold train/ and test/<set>/")
    args = parser.parse_args()
    p = config.load()
    with atomic_dir(args.out) as tmp:
        n = prepare_set(p.data.train, p.base.scale, tmp / "train", min_hr_side=p.teacher.patch_size)
        print(f"train: {n} images")
        for name, sources in p.data.test.items():
            print(f"test/{name}: {prepare_set(sources, p.base.scale, tmp / 'test' / name)} images")


if __name__ == "__main__":
    run(main)
