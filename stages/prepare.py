"""prepare: HR/LR train, validation and test sets from params `data` (HR mod-cropped, LR by MATLAB bicubic).

A test set whose folder is missing (MIV, KHU and VRroom are not public) is skipped with a message;
test/sets.json says which sets were prepared and which were not, for the report.
"""

import argparse
import sys
from pathlib import Path

from esrkd import config
from esrkd.data import missing_folders, prepare_set, prepare_test_sets
from esrkd.errors import UserError, run
from esrkd.outputs import atomic_dir, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder to hold train/, val/ (if data.val) and test/<set>/")
    args = parser.parse_args()
    p = config.load()
    for key, sources in (("data.train", p.data.train), ("data.train_lr", p.data.train_lr or []), ("data.val", p.data.val)):
        if gone := missing_folders(sources):
            raise UserError(f"params.yaml {key}: {', '.join(gone)} not found; `esrkd download div2k` (--lr 4 for "
                            "DIV2K's LR) fetches DIV2K into data/raw (see data/raw/README.md), or fix the path.")
    with atomic_dir(args.out) as tmp:
        sub = p.data.train_subimages
        n = prepare_set(p.data.train, p.base.scale, tmp / "train", p.teacher.patch_size, p.data.train_lr,
                        (sub.size, sub.step) if sub else None)
        print(f"train: {n} {'sub-' if sub else ''}images")
        if p.data.val:  # scored during training (val_every); HR shrunk by data.val_shrink first
            print(f"val: {prepare_set(p.data.val, p.base.scale, tmp / 'val', shrink=p.data.val_shrink)} images")
        listing = prepare_test_sets(p.data.test, p.base.scale, tmp / "test")
        for name, n in listing["prepared"].items():
            print(f"test/{name}: {n} images")
        for name, gone in listing["missing"].items():
            print(f"test/{name}: skipped, {', '.join(gone)} not found (add the set there or remove it from data.test)",
                  file=sys.stderr)
        write_json(tmp / "test" / "sets.json", listing)


if __name__ == "__main__":
    run(main)
