"""A training stage killed with SIGKILL part-way continues from its last checkpoint, bitwise-identically."""

import os
import signal
import subprocess
import sys
import time

import torch
import yaml

from esrkd.data import prepare_set

from .conftest import ROOT


def _stage(cwd, out):
    cmd = [sys.executable, str(ROOT / "stages/teacher.py"), "--data", "data/train", "--val", "data/val", "--out", out]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_teacher_resumes_to_the_same_weights(tmp_path, tiny_params):
    params = tiny_params
    params["teacher"].update(batch_size=2, warmup_iters=40, gan_iters=40, log_every=5, checkpoint_every=10, val_every=15)
    params["data"]["val"] = ["skimage:coffee"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    prepare_set(["skimage:astronaut"], 4, tmp_path / "data/train")
    prepare_set(["skimage:coffee"], 4, tmp_path / "data/val", shrink=2)

    whole = _stage(tmp_path, "whole")
    assert whole.wait(timeout=300) == 0, whole.stderr.read()

    killed = _stage(tmp_path, "resumed")
    state = tmp_path / "checkpoints/resumed.pt"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline:
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait(timeout=30) == -signal.SIGKILL
    assert not (tmp_path / "resumed").exists()  # no output that looks finished
    saved_at = torch.load(state, weights_only=False)["iteration"]
    assert saved_at % 10 == 0 and 10 <= saved_at < 80

    again = _stage(tmp_path, "resumed")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "teacher: resuming at iteration" in err
    assert not state.exists()  # removed once the stage completed

    for name in ("net_g.pth", "net_d.pth"):
        a = torch.load(tmp_path / "whole" / name, weights_only=True)
        b = torch.load(tmp_path / "resumed" / name, weights_only=True)
        for key in ("params", "params_ema") if name == "net_g.pth" else ("params",):
            assert a[key].keys() == b[key].keys()
            assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), f"{name} {key} differ"
    val = (tmp_path / "whole/log/val.tsv").read_text().splitlines()
    assert val[0] == "step\tpsnr\tssim" and [row.split("\t")[0] for row in val[1:]] == ["15", "30", "45", "60", "75"]
    for tsv in ("warmup.tsv", "gan.tsv", "val.tsv"):
        assert (tmp_path / "whole/log" / tsv).read_text() == (tmp_path / "resumed/log" / tsv).read_text()


def test_a_checkpoint_of_other_params_is_not_resumed(tmp_path, tiny_params):
    params = tiny_params
    params["teacher"].update(batch_size=2, warmup_iters=4, gan_iters=2, log_every=1, checkpoint_every=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    prepare_set(["skimage:astronaut"], 4, tmp_path / "data/train")
    (tmp_path / "checkpoints").mkdir()
    torch.save({"fingerprint": "another run", "iteration": 2}, tmp_path / "checkpoints/out.pt")
    done = _stage(tmp_path, "out")
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert "ignoring checkpoints/out.pt: it was written with other params or inputs" in err
