"""User errors: the one exception type for input a user can fix, the argparse checks of the stage
scripts and the `esrkd` command, and `run`, which every one of them wraps its main() in.

Kept apart from the commands themselves so that a stage script imports nothing it does not use
(dvc.yaml lists each stage's imports as its deps).
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable


class UserError(ValueError):
    """Bad input a user can fix: a params file, an image or data folder, a weights file, a download.

    The message is one sentence that names the file or params key and says what to do; `run` prints
    it as one line on stderr and exits with status 2, without a traceback.
    """


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(); a user error becomes one line on stderr and exit status 2.

    The process ends right after: its objects are frozen so that the interpreter's last garbage
    collection skips the ~10^6 that torch's imports create (~0.8 s on 2 cores, once per stage).
    """
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    gc.freeze()


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be a positive integer")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be an integer >= 0")
    return value
