"""prepare: HR/LR train and test sets from params `data` (HR mod-cropped, LR by MATLAB bicubic).

A test set whose folder is missing (MIV, KHU and VRroom are not public) is skipped with a message;
test/sets.json says which sets were prepared and which were not, for the report.
"""

import argparse
import sys
from pathlib import Path

from esrkd import config
from esrkd.cli import run
from esrkd.data import DataError, missing_folders, prepare_set
from esrkd.outputs import atomic_dir, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder to hold train/ and test/<set>/")
    args = parser.parse_args()
    p = config.load()
    for key, sources in (("data.train", p.data.train), ("data.train_lr", p.data.train_lr or [])):
        if gone := missing_folders(sources):
            raise DataError(f"params.yaml {key}: {', '.join(gone)} not found; `esrkd download div2k` (--lr 4 for "
                            "DIV2K's LR) fetches DIV2K into data/raw (see data/raw/README.md), or fix the path.")
    with atomic_dir(args.out) as tmp:
        sub = p.data.train_subimages
        n = prepare_set(p.data.train, p.base.scale, tmp / "train", p.teacher.patch_size, p.data.train_lr,
                        (sub.size, sub.step) if sub else None)
        print(f"train: {n} {'sub-' if sub else ''}images")
        prepared, missing = {}, {}
        for name, sources in p.data.test.items():
            if gone := missing_folders(sources):
                missing[name] = gone
                print(f"test/{name}: skipped, {', '.join(gone)} not found (add the set there or remove it from data.test)",
                      file=sys.stderr)
                continue
            prepared[name] = prepare_set(sources, p.base.scale, tmp / "test" / name)
            print(f"test/{name}: {prepared[name]} images")
        if not prepared:
            raise DataError(f"params.yaml data.test: none of the test sets {sorted(missing)} was found; add at least one folder.")
        write_json(tmp / "test" / "sets.json", {"prepared": prepared, "missing": missing})


if __name__ == "__main__":
    run(main)
