"""A training run's bookkeeping: where its resumable checkpoint lives and what it must match (a digest of
everything the run depends on), and what a finished run leaves in its output folder (log/ tables, the EMA of
G as net_g.pth, D as net_d.pth). `train.fit` is the loop that uses them.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from esrkd.checkpoint import WARMUP, save, save_discriminator, save_generator
from esrkd.outputs import atomic_dir

if TYPE_CHECKING:  # annotations only: the bookkeeping never builds a network or runs the loop
    from esrkd.arch import RRDBNet, VGGStyleDiscriminator
    from esrkd.dist import World
    from esrkd.train import Fit

def resume_file(out: Path) -> Path:
    """Where a training stage writing `out` keeps its in-progress state: outside every DVC out."""
    return Path("checkpoints") / (Path(out).as_posix().strip("/").replace("/", "__") + ".pt")


def drop_resume_files(outs: list[Path]) -> None:
    """Delete the checkpoints of the runs writing `outs`: a stage of several runs (Resume.keep_final) calls it
    once every output is written."""
    for out in outs:
        resume_file(out).unlink(missing_ok=True)


def fingerprint(*parts: object) -> str:
    """A digest of everything a run depends on, so that a checkpoint of another run is never resumed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def files_digest(*paths: Path) -> list:
    """Content hashes of files (weights), names and sizes of the files in folders (data)."""
    out = []
    for p in map(Path, paths):
        if p.is_file():
            out.append((str(p), hashlib.sha256(p.read_bytes()).hexdigest()))
        else:
            out.extend((str(f), f.stat().st_size) for f in sorted(p.rglob("*")) if f.is_file())
    return out


@dataclass(frozen=True)
class Resume:
    """Where a run keeps its checkpoint, and the digest of everything it depends on (see `fingerprint`).

    `keep_final`: checkpoint the finished run too, for a stage that makes several runs. DVC deletes a stage's
    outputs before running it again, so after a crash in a later run the finished ones resume from there
    instead of training again; the stage deletes the checkpoints once all its outputs are written."""

    file: Path
    fingerprint: str
    keep_final: bool = False


def write_history(log_dir: Path, history: list[tuple[int, dict[str, float]]]) -> None:
    """The logged losses as one table per phase, log/<phase>.tsv: a row per logged iteration with its step,
    the phase's losses and lr. `dvc plots` (dvc.yaml) and the report's training curves read them; a run of
    0 iterations leaves log/ empty. Written once the run is done (the history rides in the resume
    checkpoints), so no live-logging library is needed."""
    tables: dict[str, list[dict[str, float]]] = {}
    for it, row in history:
        phase = next(name.split("/")[0] for name in row if "/" in name)
        tables.setdefault(phase, []).append({"step": it} | {name.split("/")[-1]: v for name, v in row.items()})
    log_dir.mkdir(parents=True, exist_ok=True)
    for phase, rows in tables.items():
        with (log_dir / f"{phase}.tsv").open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)


def write_outputs(out: Path, result: Fit, G: RRDBNet, D: VGGStyleDiscriminator, meta: dict, resume: Resume,
                  world: World, extra: dict[str, dict] | None = None) -> None:
    """Rank 0 writes out/ at once (log/, net_g.pth with the EMA, net_d.pth, `extra` files, and warmup/net_g.pth
    with the EMA at the end of the warm-up when the run kept it: meta's "snapshot" says so); the checkpoint goes,
    unless the stage keeps it until its last run (Resume.keep_final). The stage ends the process group (dist.finish)."""
    if world.main:
        with atomic_dir(out) as tmp:
            write_history(tmp / "log", result.history)
            save_generator(tmp / "net_g.pth", G, result.ema, meta)
            save_discriminator(tmp / "net_d.pth", D)
            if result.warmup is not None:
                (tmp / WARMUP).mkdir()
                save_generator(tmp / WARMUP / "net_g.pth", result.warmup, None, meta | {"snapshot": WARMUP})
            for name, content in (extra or {}).items():
                save(tmp / name, **content)
        if not resume.keep_final:
            resume.file.unlink(missing_ok=True)
