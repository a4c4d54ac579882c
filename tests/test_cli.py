import functools
import io
import json
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import torch

from esrkd import download
from esrkd.arch import RRDBArgs, RRDBNet
from esrkd.checkpoint import save_generator
from esrkd.cli import main
from esrkd.data import read_image, write_png
from esrkd.tiles import super_resolve

from .conftest import ROOT


def test_check_validates_both_profiles(capsys):
    main(["check", str(ROOT / "params.paper.yaml")])
    assert "valid (paper profile, 4 prune ratios x 3 widths)" in capsys.readouterr().out


def test_upscale_a_folder_with_a_student(tmp_path):
    torch.manual_seed(0)
    net = RRDBNet(RRDBArgs(num_feat=4, num_block=1, num_grow_ch=4))
    save_generator(tmp_path / "net_g.pth", net, None, {"role": "student"})
    (tmp_path / "in").mkdir()
    lr = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    write_png(tmp_path / "in" / "a.png", lr)
    main(["upscale", str(tmp_path / "net_g.pth"), str(tmp_path / "in"), str(tmp_path / "out"), "--fp32"])
    sr = read_image(tmp_path / "out" / "a.png")
    assert sr.shape == (24, 36, 3)
    assert (sr == super_resolve(net.eval(), lr, torch.device("cpu"))).all()


def test_download_div2k_with_its_own_lr_images_from_a_local_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    for split in ("train", "valid"):
        for top, name in ((f"DIV2K_{split}_HR", "0001.png"), (f"DIV2K_{split}_LR_bicubic", "X4/0001x4.png")):
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                zf.writestr(f"{top}/{name}", f"{split} {name}")  # the DIV2K zips' layout
            suffix = "_X4" if "LR" in top else ""
            (site / f"{top}{suffix}.zip").write_bytes(buf.getvalue())
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=site))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        local = {k: download.Remote(r.url.replace(download.DIV2K_SITE, base), r.filename) for k, r in download.DIV2K.items()}
        monkeypatch.setattr(download, "DIV2K", local)
        raw = tmp_path / "raw"
        main(["download", "div2k", "--lr", "4", "--raw", str(raw), "--archives", str(tmp_path / "zips")])
    finally:
        server.shutdown()
    assert (raw / "DIV2K_train_LR_bicubic_X4/X4/0001x4.png").read_text() == "train X4/0001x4.png"
    assert (raw / "DIV2K_valid_HR/0001.png").read_text() == "valid 0001.png"
    assert sorted(p.name for p in raw.iterdir()) == ["DIV2K_train_HR", "DIV2K_train_LR_bicubic_X4", "DIV2K_valid_HR",
                                                     "DIV2K_valid_LR_bicubic_X4", "checksums.json"]
    assert set(json.loads((raw / "checksums.json").read_text())) == {p.name for p in site.iterdir()}
