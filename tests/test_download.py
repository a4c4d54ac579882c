"""esrkd.download against a local HTTP server serving a zip built here; nothing leaves 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from esrkd.download import Remote, extract_archive, fetch, fetch_and_extract
from esrkd.errors import UserError

NAME = "DIV2K_fake_HR.zip"


def make_zip(seed: int = 0, top: str = "DIV2K_fake_HR") -> bytes:
    """A stored (uncompressed) zip of two tiny PNGs and some noise, large enough to cut in the middle."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in (1, 2):
            png = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(png, format="PNG")
            zf.writestr(f"{top}/{i:04d}.png", png.getvalue())
        zf.writestr(f"{top}/noise.bin", rng.bytes(50_000))
    return buf.getvalue()


@dataclass
class FakeSite:
    """What the handler serves and how it misbehaves; the test changes these between requests."""

    content: bytes = b""
    ranges: bool = True  # False: ignore Range and answer 200 with the whole file
    cut_after: int | None = None  # cut the connection after this many body bytes, once
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""


def handler_for(site: FakeSite) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.requests.append(dict(self.headers))
            if self.path != f"/{NAME}":
                self.send_error(404)
                return
            data, start = site.content, 0
            wanted = self.headers.get("Range")
            if wanted and site.ranges:
                start = int(re.fullmatch(r"bytes=(\d+)-", wanted)[1])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))  # the full length, even when cutting
            self.end_headers()
            if site.cut_after is not None:
                body, site.cut_after = body[: site.cut_after], None
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def site():
    site = FakeSite(content=make_zip())
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(site))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    site.url = f"http://127.0.0.1:{httpd.server_address[1]}/{NAME}"
    yield site
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def one_sentence(message: str) -> bool:
    # Paths and hashes contain dots, so "one sentence" means: one line, ending in the only ". "-free full stop.
    return "\n" not in message and message.endswith(".") and ". " not in message


def test_download_verify_record_and_extract(site: FakeSite, tmp_path: Path) -> None:
    checksums = tmp_path / "checksums.json"
    dest = tmp_path / "raw" / "DIV2K_fake_HR"
    out = fetch_and_extract(Remote(site.url, NAME), dest, tmp_path / "dl", checksums, timeout=5)
    assert out == dest
    assert sorted(p.name for p in dest.iterdir()) == ["0001.png", "0002.png", "noise.bin"]  # top folder unwrapped
    assert Image.open(dest / "0001.png").size == (8, 8)
    archive = tmp_path / "dl" / NAME
    assert archive.read_bytes() == site.content and not archive.with_name(NAME + ".part").exists()
    assert json.loads(checksums.read_text()) == {NAME: hashlib.sha256(site.content).hexdigest()}
    assert not dest.with_name(dest.name + ".part").exists()
    # Already there: no request, no re-extraction, even with the archive gone.
    archive.unlink()
    assert fetch_and_extract(Remote(site.url, NAME), dest, tmp_path / "dl", checksums, timeout=5) == dest
    assert len(site.requests) == 1


def test_interrupted_download_resumes_with_range(site: FakeSite, tmp_path: Path) -> None:
    cut = 20_000
    site.cut_after = cut
    remote = Remote(site.url, NAME, sha256=hashlib.sha256(site.content).hexdigest(), size=len(site.content))
    with pytest.raises(UserError, match="re-run to resume") as err:
        fetch(remote, tmp_path, progress=False, timeout=5)
    assert one_sentence(str(err.value))
    part = tmp_path / (NAME + ".part")
    assert part.stat().st_size == cut and not (tmp_path / NAME).exists()
    target = fetch(remote, tmp_path, progress=False, timeout=5)
    assert site.requests[1]["Range"] == f"bytes={cut}-"
    assert target.read_bytes() == site.content and not part.exists()


def test_hash_mismatch_is_rejected_and_part_removed(site: FakeSite, tmp_path: Path) -> None:
    wrong = "0" * 64
    actual = hashlib.sha256(site.content).hexdigest()
    with pytest.raises(UserError) as err:
        fetch(Remote(site.url, NAME, sha256=wrong), tmp_path, progress=False, timeout=5)
    message = str(err.value)
    assert NAME in message and wrong in message and actual in message and "re-run" in message
    assert one_sentence(message)
    assert list(tmp_path.iterdir()) == []  # neither the final name nor a .part to resume from


def test_first_hash_is_recorded_then_enforced(site: FakeSite, tmp_path: Path) -> None:
    checksums = tmp_path / "checksums.json"
    first = hashlib.sha256(site.content).hexdigest()
    fetch(Remote(site.url, NAME), tmp_path / "dl", checksums, progress=False, timeout=5)
    assert json.loads(checksums.read_text()) == {NAME: first}
    (tmp_path / "dl" / NAME).unlink()
    site.content = make_zip(seed=1)  # the file changed upstream (or the transfer was corrupted)
    with pytest.raises(UserError) as err:
        fetch(Remote(site.url, NAME), tmp_path / "dl", checksums, progress=False, timeout=5)
    message = str(err.value)
    assert first in message and hashlib.sha256(site.content).hexdigest() in message and str(checksums) in message
    assert one_sentence(message)
    assert list((tmp_path / "dl").iterdir()) == []
    assert json.loads(checksums.read_text()) == {NAME: first}  # the pin is not overwritten


def test_server_without_range_support_restarts_from_zero(site: FakeSite, tmp_path: Path) -> None:
    site.ranges, site.cut_after = False, 15_000
    with pytest.raises(UserError):
        fetch(Remote(site.url, NAME), tmp_path, progress=False, timeout=5)
    target = fetch(Remote(site.url, NAME), tmp_path, progress=False, timeout=5)
    assert site.requests[1]["Range"] == "bytes=15000-"  # asked to resume, got a 200 instead
    assert target.read_bytes() == site.content


def test_whole_part_left_before_verification_is_finished(site: FakeSite, tmp_path: Path) -> None:
    (tmp_path / (NAME + ".part")).write_bytes(site.content)
    target = fetch(Remote(site.url, NAME), tmp_path, progress=False, timeout=5)  # the server answers 416
    assert site.requests[0]["Range"] == f"bytes={len(site.content)}-"
    assert target.read_bytes() == site.content


def test_size_mismatch_is_refused_before_downloading(site: FakeSite, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"should be 123;.*browser") as err:
        fetch(Remote(site.url, NAME, size=123), tmp_path, progress=False, timeout=5)
    assert one_sentence(str(err.value)) and list(tmp_path.iterdir()) == []


def test_unreachable_and_missing_urls_say_how_to_get_the_file(site: FakeSite, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{NAME}"
    with pytest.raises(UserError) as err:
        fetch(Remote(url, NAME), tmp_path, progress=False, timeout=5)
    message = str(err.value)
    assert url in message and "browser" in message and str(tmp_path / NAME) in message and one_sentence(message)
    with pytest.raises(UserError, match="HTTP 404"):
        fetch(Remote(site.url + ".missing", NAME), tmp_path, progress=False, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_verified_and_kept_when_wrong(tmp_path: Path) -> None:
    (tmp_path / NAME).write_bytes(b"not the archive")
    with pytest.raises(UserError, match="delete it and re-run"):
        fetch(Remote("http://127.0.0.1:9/unused", NAME, sha256="0" * 64), tmp_path, progress=False)
    assert (tmp_path / NAME).exists()  # maybe put there by hand: the user decides


def test_extract_tar_and_refuse_corrupt_archive(tmp_path: Path) -> None:
    tar = tmp_path / "bench.tar"
    with tarfile.open(tar, "w") as tf:
        for name in ("Set5/HR/a.png", "Set14/HR/b.png"):
            info = tarfile.TarInfo(f"benchmark/{name}")
            info.size = 3
            tf.addfile(info, io.BytesIO(b"png"))
    dest = extract_archive(tar, tmp_path / "benchmark")
    assert (dest / "Set5" / "HR" / "a.png").read_bytes() == b"png" and (dest / "Set14").is_dir()

    bad = tmp_path / "bad.zip"
    bad.write_bytes(make_zip()[:-200])  # cut off the central directory
    with pytest.raises(UserError, match="delete .* and re-run"):
        extract_archive(bad, tmp_path / "bad")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip", "bench.tar", "benchmark"]
