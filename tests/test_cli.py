import numpy as np
import torch

from esrkd.arch import RRDBArgs, RRDBNet
from esrkd.checkpoint import save_generator
from esrkd.cli import main
from esrkd.data import read_image, write_png
from esrkd.evaluate import super_resolve

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
    main(["upscale", str(tmp_path / "net_g.pth"), str(tmp_path / "in"), str(tmp_path / "out")])
    sr = read_image(tmp_path / "out" / "a.png")
    assert sr.shape == (24, 36, 3)
    assert (sr == super_resolve(net.eval(), lr, torch.device("cpu"))).all()
