"""params.paper.yaml runs as it is, with only data and schedule shrunk: real 23-block networks on the CPU."""

import subprocess
import sys

import torch
import yaml

from esrkd.arch import count_params
from esrkd.checkpoint import load_generator

from .conftest import COMMAND_TIMEOUT, ROOT


def _stage(cwd, name, *args):
    done = subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_paper_profile_trains_a_23_block_teacher_and_a_student(tmp_path):
    p = yaml.safe_load((ROOT / "params.paper.yaml").read_text())
    p["base"]["threads"] = 2
    p["data"].update(train=["skimage:astronaut"], train_subimages={"size": 128, "step": 128},
                     test={"tiny": ["skimage:chelsea"], "MIV": ["data/raw/MIV/HR"]})
    for block in ("teacher", "distill"):  # everything else stays the paper's recipe
        p[block].update(patch_size=32, batch_size=2, num_workers=2, warmup_iters=1, gan_iters=1,
                        lr_milestones=[], perceptual_weight=0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))

    log = _stage(tmp_path, "prepare", "--out", "prepared")
    assert "train: 16 sub-images" in log and "test/MIV: skipped" in log  # 512x512 astronaut: 4 x 4 crops
    _stage(tmp_path, "teacher", "--data", "prepared/train", "--out", "teacher")
    _stage(tmp_path, "prune", "--teacher", "teacher/net_g.pth", "--ratio", "0.3", "--scope", "layer",
           "--data", "prepared/train", "--out", "pruned")
    _stage(tmp_path, "distill", "--teacher", "pruned/0.3/net_g.pth", "--disc", "teacher/net_d.pth",
           "--data", "prepared/train", "--width", "32", "--out", "student")

    teacher, _ = load_generator(tmp_path / "pruned/0.3/net_g.pth")
    student, meta = load_generator(tmp_path / "student/net_g.pth")
    assert count_params(teacher)[0] == 16_697_987 and count_params(student)[0] == 9_588_355  # the paper's sizes
    assert meta["role"] == "student" and meta["width"] == 32
    adapters = torch.load(tmp_path / "student/adapters.pth", weights_only=True)
    assert sum(k.endswith(".weight") for k in adapters["params"]) == 23  # one 1x1 conv per RRDB block
