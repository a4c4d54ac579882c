"""Download the data sets (DIV2K, SR test sets): resumable, size- and SHA-256-checked, extracted atomically.

pooch was considered and not used: its HTTPDownloader opens the output with "w+b" and sends no Range
header, and `pooch.retrieve` downloads into a temporary file it deletes on failure, so an interrupted
3.5 GB DIV2K download starts again from zero; its `known_hash=None` also means "never check" where we
want "check against the hash seen the first time". Hence urllib + tqdm, by hand.

Invariants: a file under its final name is complete and verified (bytes go to `<name>.part`, are
checked, then `os.replace`d), and a `.part` left by an interruption is continued with
`Range: bytes=N-`; a folder under its final name is a whole extraction (made beside it, then renamed).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from esrkd.errors import UserError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Remote:
    """A file to download, the name to save it under, and what it must weigh and hash to.

    `sha256=None` where the publisher gives no hash: `fetch` records the first download's hash and
    holds later downloads to it.
    """

    url: str
    filename: str
    sha256: str | None = None
    size: int | None = None


# The DIV2K site publishes neither hashes nor sizes, so these are pinned on first download.
DIV2K_SITE = "http://data.vision.ee.ethz.ch/cvl/DIV2K"
DIV2K_TRAIN_HR = Remote(f"{DIV2K_SITE}/DIV2K_train_HR.zip", "DIV2K_train_HR.zip")
DIV2K_VALID_HR = Remote(f"{DIV2K_SITE}/DIV2K_valid_HR.zip", "DIV2K_valid_HR.zip")
DIV2K = {"train": DIV2K_TRAIN_HR, "valid": DIV2K_VALID_HR} | {
    # DIV2K's own bicubic LR (zip of DIV2K_{split}_LR_bicubic/X{s}/0001x{s}.png ...), for data.train_lr
    f"{split}_lr_x{s}": Remote(f"{DIV2K_SITE}/DIV2K_{split}_LR_bicubic_X{s}.zip", f"DIV2K_{split}_LR_bicubic_X{s}.zip")
    for split in ("train", "valid") for s in (2, 3, 4)
}
# Set5, Set14, B100, Urban100 (HR and bicubic LR) as the EDSR authors package them; a tar, ~250 MB.
SR_BENCHMARK = Remote("https://cv.snu.ac.kr/research/EDSR/benchmark.tar", "benchmark.tar")


def sha256_of(path: Path) -> str:
    """The file's SHA-256 as lowercase hex, read in chunks (the archives are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_checksums(checksums_file: Path | None) -> dict[str, str]:
    """The hashes recorded so far, filename -> SHA-256; empty if there is no file yet."""
    if checksums_file is None or not Path(checksums_file).exists():
        return {}
    try:
        data = json.loads(Path(checksums_file).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{checksums_file} is not a readable JSON file of checksums ({err}); fix or delete it and re-run.") from err
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise UserError(f"{checksums_file} should map file names to SHA-256 strings; fix or delete it and re-run.")
    return data


def _record_checksum(checksums_file: Path, filename: str, digest: str) -> None:
    data = read_checksums(checksums_file) | {filename: digest}
    checksums_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = checksums_file.with_name(checksums_file.name + ".part")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, checksums_file)  # a crash mid-write must not lose the hashes already pinned


def fetch(
    remote: Remote,
    folder: Path,
    checksums_file: Path | None = None,
    *,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """`folder/remote.filename`, verified; downloaded, or resumed from its `.part`, if missing.

    The hash is checked against `remote.sha256`, else against the one recorded in `checksums_file`,
    else recorded there (no `checksums_file`: an unpinned file is only size-checked).
    """
    target = Path(folder) / remote.filename
    part = target.with_name(target.name + ".part")
    if remote.sha256:
        expected, where = remote.sha256.lower(), "pinned in the code"
    else:
        expected = (read_checksums(checksums_file).get(remote.filename) or "").lower() or None
        where = f"recorded in {checksums_file} on the first download"
    if target.exists():
        digest = _verify(target, remote, expected, where, checksums_file)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        _download(remote, part, target, progress, timeout)
        digest = _verify(part, remote, expected, where, checksums_file)
        os.replace(part, target)
    if expected is None and checksums_file is not None:
        _record_checksum(Path(checksums_file), remote.filename, digest)
    return target


def _verify(path: Path, remote: Remote, expected: str | None, where: str, checksums_file: Path | None) -> str:
    """The file's SHA-256 once its size and hash pass; a `.part` that fails is deleted."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        problem = f"is {size} bytes where {remote.size} were expected"
    else:
        digest = sha256_of(path)
        if expected is None or digest == expected:
            return digest
        problem = f"has SHA-256 {digest} but {expected} was expected ({where})"
    upstream = "" if checksums_file is None or remote.sha256 else (
        f", and if the hash differs again the publisher changed the file, so check it and remove its entry"
        f" from {checksums_file} to accept it")
    if path.name.endswith(".part"):
        path.unlink()  # so the next run starts clean instead of resuming corrupt bytes
        raise UserError(
            f"{remote.filename} downloaded from {remote.url} {problem}, so it was deleted; re-run to download it again{upstream}.")
    raise UserError(f"{path} {problem}: delete it and re-run to download it again{upstream}.")


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from `bytes A-B/T` or `bytes */T`; None for what is absent."""
    m = re.fullmatch(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", (header or "").strip())
    if m is None:
        return None, None
    return (int(m[1]) if m[1] else None), (int(m[2]) if m[2] != "*" else None)


def _download(remote: Remote, part: Path, target: Path, progress: bool, timeout: float) -> None:
    """Bring `part` up to the whole remote file, continuing from its length where the server allows."""
    by_hand = f"download it in a browser and put it at {target}"
    offset = part.stat().st_size if part.exists() else 0
    if remote.size is not None and offset > remote.size:
        offset = 0  # longer than the file: not a prefix of it
    while True:
        headers = {"User-Agent": "esrkd-download"} | ({"Range": f"bytes={offset}-"} if offset else {})
        try:
            response = urllib.request.urlopen(urllib.request.Request(remote.url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as err:
            if err.code == 416 and offset:
                if _content_range(err.headers.get("Content-Range"))[1] == offset:
                    return  # the .part is whole: a run was stopped between download and verification
                offset = 0  # the .part is longer than the file: start again
                continue
            raise UserError(f"{remote.url} answered HTTP {err.code} {err.reason}; check the address, or {by_hand}.") from err
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", err)
            raise UserError(f"could not download {remote.url} ({reason}); check the network and re-run, or {by_hand}.") from err
        start, total = _content_range(response.headers.get("Content-Range"))
        if response.status == 206 and start != offset:
            response.close()
            offset = 0  # a range we did not ask for: asking for the whole file is simpler than splicing
            continue
        break
    with response:
        resumed = response.status == 206
        offset = offset if resumed else 0  # a 200 is the whole file: the server ignored Range
        length = response.headers.get("Content-Length")
        if total is None and length is not None:
            total = offset + int(length)
        if total is not None and remote.size is not None and total != remote.size:
            raise UserError(
                f"{remote.url} is {total} bytes but {remote.filename} should be {remote.size}; check the address, or {by_hand}.")
        with open(part, "ab" if resumed else "wb") as out, tqdm(
            total=total or remote.size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=remote.filename, disable=not progress,
        ) as bar:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as err:
                out.flush()
                why = str(err) or type(err).__name__
                raise UserError(
                    f"the download of {remote.url} was interrupted at {out.tell()} bytes ({why}); "
                    f"re-run to resume it from {part}.") from err
    got = part.stat().st_size
    if total is not None and got != total:
        raise UserError(f"the download of {remote.url} stopped at {got} of {total} bytes; re-run to resume it from {part}.")


def extract_archive(archive: Path, dest: Path) -> Path:
    """`dest` holding the contents of `archive` (zip or tar), extracted once and atomically.

    Where every entry sits in one top folder (`DIV2K_train_HR/0001.png`, ...), that folder's contents
    go straight into `dest`, so `dest` is the image folder itself. A non-empty `dest` is left as is.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.is_dir() and any(dest.iterdir()):
        return dest
    redo = f"delete {archive} and re-run to download it again"
    if not archive.is_file():
        raise UserError(f"{archive} does not exist; re-run to download it.")
    is_zip = zipfile.is_zipfile(archive)
    if not is_zip and not tarfile.is_tarfile(archive):
        raise UserError(f"{archive} is neither a zip nor a tar archive; {redo}.")
    staging = dest.with_name(dest.name + ".part")
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted extraction left behind
    staging.mkdir(parents=True)
    try:
        if is_zip:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staging)  # zipfile drops absolute paths and ".." itself
        else:
            # The "data" filter refuses links and paths that escape `staging` (Python >= 3.10.12).
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            with tarfile.open(archive) as tf:
                tf.extractall(staging, **safe)
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"could not extract {archive} ({err}); {redo}.") from err
    entries = list(staging.iterdir())
    root = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
    if dest.exists():
        dest.rmdir()  # empty (checked above); replacing a directory needs it gone on Windows
    os.replace(root, dest)
    shutil.rmtree(staging, ignore_errors=True)
    return dest


def fetch_and_extract(
    remote: Remote,
    dest: Path,
    download_dir: Path,
    checksums_file: Path | None = None,
    *,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """`dest` holding the extracted `remote` archive; nothing is downloaded if `dest` is already there."""
    dest = Path(dest)
    if dest.is_dir() and any(dest.iterdir()):
        return dest  # the archive may have been deleted to save space; the folder is what counts
    archive = fetch(remote, download_dir, checksums_file, progress=progress, timeout=timeout)
    return extract_archive(archive, dest)


def fetch_div2k(
    raw_dir: Path,
    checksums_file: Path | None = None,
    *,
    download_dir: Path | None = None,
    splits: Sequence[str] = ("train", "valid"),
    progress: bool = True,
) -> dict[str, Path]:
    """DIV2K's folders by split: `raw_dir/DIV2K_train_HR` (800 PNGs), `raw_dir/DIV2K_valid_HR` (100), and
    for an LR split such as train_lr_x4, `raw_dir/DIV2K_train_LR_bicubic_X4` (images in its X4/).

    The zips go to `download_dir` (default `raw_dir`) and are kept, so a re-extraction needs no download.
    """
    unknown = [s for s in splits if s not in DIV2K]
    if unknown:
        raise ValueError(f"unknown DIV2K split(s) {unknown}; use some of {sorted(DIV2K)}.")
    raw_dir = Path(raw_dir)
    return {
        split: fetch_and_extract(DIV2K[split], raw_dir / Path(DIV2K[split].filename).stem, download_dir or raw_dir,
                                 checksums_file, progress=progress)
        for split in splits
    }
