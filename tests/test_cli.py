import functools
import io
import json
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
import yaml

from esrkd import download
from esrkd.arch import RRDBArgs, RRDBNet
from esrkd.checkpoint import save_generator
from esrkd.cli import main
from esrkd.data import read_image, write_png
from esrkd.tiles import super_resolve

from .conftest import ROOT


@pytest.mark.parametrize("name, profile", [("params.yaml", "demo"), ("params.paper.yaml", "paper"),
                                           ("studies/realsr/params.yaml", "study")])  # the study's teacher.init: realsr-df2k
def test_check_validates_the_shipped_params_files(capsys, name, profile):
    main(["check", str(ROOT / name)])
    assert f"valid ({profile} profile, 4 prune ratios x 3 widths)" in capsys.readouterr().out


def _check(path) -> int:
    """The exit status of `esrkd check PATH` on a bad file."""
    with pytest.raises(SystemExit) as done:
        main(["check", str(path)])
    return done.value.code


def _write(folder, params: dict | str):
    folder.mkdir(parents=True, exist_ok=True)
    text = params if isinstance(params, str) else yaml.safe_dump(params, sort_keys=False)
    (folder / "params.yaml").write_text(text)
    return folder / "params.yaml"


@pytest.mark.parametrize("change, expected", [
    (lambda p: p["pruning"].update(keep=["conv_frist"]), "pruning.keep: ['conv_frist'] are not conv layers of the teacher"),
    (lambda p: p["grid"].update(prune=["0.3", 0.5]), "grid.prune.0: Input should be a valid number (got '0.3')"),
    (lambda p: p["teacher"].update(init="no-such-model"), "no-such-model: neither a file nor a known pretrained generator name"),
    (lambda p: p["teacher"].update(init="data/pretrained/typo.pth"), "study/data/pretrained/typo.pth does not exist; put the file there or fix the path"),
    (lambda p: p["teacher"].update(init="elsewhere/g.pth"), "teacher.init: elsewhere/g.pth lies outside data/pretrained/"),
])
def test_check_refuses_a_bad_params_file_in_one_line(tmp_path, capsys, demo_params, change, expected):
    change(demo_params)
    path = _write(tmp_path / "study", demo_params)
    assert _check(path) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and str(path) in err  # one line, naming the file


def test_check_refuses_a_key_given_twice(tmp_path, capsys):
    text = (ROOT / "params.yaml").read_text()
    path = _write(tmp_path, text.replace("prune: 0.3 ", "prune: 0.3\nprune: 0.5 ", 1))
    assert _check(path) == 2
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith("prune: 0.3"))
    assert capsys.readouterr().err == f"error: {path}: prune: given twice (lines {line} and {line + 1}); keep one.\n"


def test_check_finds_teacher_init_beside_the_params_file(tmp_path, capsys, demo_params, monkeypatch):
    study = tmp_path / "study"
    (study / "data/pretrained").mkdir(parents=True)
    torch.save(RRDBNet(RRDBArgs(num_feat=4, num_block=1, num_grow_ch=4)).state_dict(), study / "data/pretrained/g.pth")
    demo_params["teacher"]["init"] = "data/pretrained/g.pth"
    _write(study, demo_params)
    monkeypatch.chdir(tmp_path)  # not the study's folder: paths are relative to the params file, as for its stages
    main(["check", "study/params.yaml"])
    assert capsys.readouterr().out == "study/params.yaml: valid (demo profile, 4 prune ratios x 3 widths)\n"


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


def test_check_refuses_a_packaged_image_that_does_not_exist(tmp_path, capsys, demo_params):
    import pytest
    import yaml

    demo_params["data"]["test"]["pool"] = ["sporco:monarch", "sporco:lena"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(demo_params))
    with pytest.raises(SystemExit) as stop:
        main(["check", str(tmp_path / "params.yaml")])
    assert stop.value.code == 2
    assert f"{tmp_path / 'params.yaml'}: data.test.pool: data source 'sporco:lena': the sporco package ships no image of that name." in capsys.readouterr().err
