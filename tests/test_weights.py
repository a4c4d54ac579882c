import re

import pytest
import torch
import yaml

from esrkd.arch import RRDBArgs, RRDBNet
from esrkd.checkpoint import load_state
from esrkd.errors import UserError
from esrkd.weights import check_tracked_init, load_pretrained_generator


def _original_names(state: dict) -> dict:
    """What the original ESRGAN repository's RRDBNet_arch.py calls the same tensors."""
    out = {}
    for k, v in state.items():
        k = k.replace("conv_body.", "trunk_conv.").replace("conv_up1.", "upconv1.").replace("conv_up2.", "upconv2.")
        k = k.replace("conv_hr.", "HRconv.")
        if k.startswith("body."):
            _, i, rdb, rest = k.split(".", 3)
            k = f"RRDB_trunk.{i}.RDB{rdb[-1]}.{rest}"
        out[k] = v
    return out


@pytest.fixture
def net():
    torch.manual_seed(0)
    return RRDBNet(RRDBArgs(num_feat=8, num_block=2, num_grow_ch=4))


@pytest.mark.parametrize("layout", ["basicsr_ema", "basicsr_params", "bare", "original", "ddp_original"])
def test_both_formats_load_to_the_same_network(tmp_path, net, layout):
    state = net.state_dict()
    content = {
        "basicsr_ema": {"params_ema": state, "params": {k: v * 0 for k, v in state.items()}},
        "basicsr_params": {"params": state},
        "bare": state,
        "original": _original_names(state),
        "ddp_original": {f"module.{k}": v for k, v in _original_names(state).items()},
    }[layout]
    torch.save(content, tmp_path / "g.pth")
    loaded, args = load_pretrained_generator(tmp_path / "g.pth")
    assert args == RRDBArgs(num_feat=8, num_block=2, num_grow_ch=4)
    other = RRDBNet(args)
    load_state(other, loaded, tmp_path / "g.pth")
    x = torch.rand(1, 3, 6, 6)
    assert torch.equal(other(x), net(x))
    assert "RRDB_trunk.1.RDB3.conv5.weight" in _original_names(state)  # the test really wrote that naming


def test_paper_sized_original_checkpoint_is_recognised(tmp_path):
    state = RRDBNet(RRDBArgs()).state_dict()
    torch.save(_original_names(state), tmp_path / "RRDB_ESRGAN_x4.pth")
    _, args = load_pretrained_generator(tmp_path / "RRDB_ESRGAN_x4.pth")
    assert (args.num_feat, args.num_block, args.num_grow_ch, args.scale) == (64, 23, 32, 4)


def test_clear_errors(tmp_path, net):
    with pytest.raises(UserError, match="pretrained generator not found; fix teacher.init"):
        load_pretrained_generator(tmp_path / "none.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(UserError, match="junk.pth: not a readable PyTorch weights file"):
        load_pretrained_generator(tmp_path / "junk.pth")
    torch.save({"net_d": {"conv0_0.weight": torch.zeros(1)}}, tmp_path / "disc.pth")
    with pytest.raises(UserError, match="disc.pth: holds no generator state dict"):
        load_pretrained_generator(tmp_path / "disc.pth")
    torch.save({**net.state_dict(), "model.0.weight": torch.zeros(1)}, tmp_path / "mixed.pth")
    with pytest.raises(UserError, match="key 'model.0.weight' is not part of an ESRGAN RRDBNet generator"):
        load_pretrained_generator(tmp_path / "mixed.pth")
    state = dict(net.state_dict())
    del state["conv_first.weight"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(UserError, match="cut.pth: lacks conv_first.weight"):
        load_pretrained_generator(tmp_path / "cut.pth")


def test_teacher_stage_starts_from_an_original_esrgan_file(tmp_path, monkeypatch, capsys, tiny_params):
    from esrkd.data import prepare_set

    from .test_bad_input import _stage

    torch.manual_seed(1)
    pretrained = RRDBNet(RRDBArgs(num_feat=8, num_block=1, num_grow_ch=4))
    (tmp_path / "data/pretrained").mkdir(parents=True)
    torch.save(_original_names(pretrained.state_dict()), tmp_path / "data/pretrained/RRDB_ESRGAN_x4.pth")
    tiny_params["teacher"].update(init="data/pretrained/RRDB_ESRGAN_x4.pth", warmup_iters=0, gan_iters=0, d_iters=3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    prepare_set(["skimage:astronaut"], 4, tmp_path / "train")
    assert _stage(monkeypatch, tmp_path, "teacher", "--data", "train", "--out", "teacher") == 0
    saved = torch.load(tmp_path / "teacher/net_g.pth", weights_only=True)
    assert all(torch.equal(saved["params_ema"][k], v) for k, v in pretrained.state_dict().items())  # G as loaded
    assert saved["meta"]["init"] == "data/pretrained/RRDB_ESRGAN_x4.pth" and saved["meta"]["teacher_iters"]["d"] == 3
    assert (tmp_path / "teacher/log/d.tsv").read_text().splitlines()[0] == "step\tl_d"
    assert [line.split("\t")[0] for line in (tmp_path / "teacher/log/d.tsv").read_text().splitlines()[1:]] == ["1", "2", "3"]

    # D alone trained 3 RaGAN steps against G's SR: it differs from the D the same seed builds untrained
    tiny_params["teacher"]["d_iters"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    assert _stage(monkeypatch, tmp_path, "teacher", "--data", "train", "--out", "untrained") == 0
    d3, d0 = (torch.load(tmp_path / f"{o}/net_d.pth", weights_only=True)["params"] for o in ("teacher", "untrained"))
    assert d3.keys() == d0.keys() and not all(torch.equal(d3[k], d0[k]) for k in d3)
    g0 = torch.load(tmp_path / "untrained/net_g.pth", weights_only=True)["params_ema"]
    assert all(torch.equal(g0[k], v) for k, v in saved["params_ema"].items())

    tiny_params["net"]["num_block"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    assert _stage(monkeypatch, tmp_path, "teacher", "--data", "train", "--out", "teacher2") == 2
    assert "but params.yaml net describes" in capsys.readouterr().err
    assert not (tmp_path / "teacher2").exists()


def test_init_files_must_exist_where_dvc_tracks_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the stage's folder: paths in params are relative to it
    for name in ("g.pth", "x4/g.param", "x4/g.bin"):
        (tmp_path / "data/pretrained" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data/pretrained" / name).write_bytes(b"x")
    for init in ("data/pretrained/g.pth", "data/pretrained/x4/g.param", str(tmp_path / "data/pretrained/g.pth"),
                 "realsr-df2k", "realesrgan-x4plus"):  # the names' files come with a pip package
        check_tracked_init(init)
    for init in ("g.pth", "data/raw/pretrained/g.pth", "data/pretrained/../g.pth", "/elsewhere/g.pth"):
        with pytest.raises(UserError, match=rf"^params.yaml: teacher.init: {re.escape(init)} lies outside data/pretrained/; "
                                            r"move it into data/pretrained/ so DVC tracks it\.$"):
            check_tracked_init(init)
    (tmp_path / "data/pretrained/x4/g.bin").unlink()
    for init, missing in (("data/pretrained/typo.pth", "typo.pth"), ("data/pretrained/x4/g.param", "x4/g.bin")):
        with pytest.raises(UserError, match=rf"^params.yaml: teacher.init: data/pretrained/{missing} does not exist; "):
            check_tracked_init(init)
    with pytest.raises(UserError, match="realsr-x9: neither a file nor a known pretrained generator name"):
        check_tracked_init("realsr-x9")
    (tmp_path / "realsr-df2k").write_bytes(b"x")  # a file named like a known name is that file
    with pytest.raises(UserError, match="realsr-df2k lies outside data/pretrained/"):
        check_tracked_init("realsr-df2k")


def test_init_paths_are_relative_to_the_params_file(tmp_path):
    study = tmp_path / "studies/x"
    (study / "data/pretrained").mkdir(parents=True)
    (study / "data/pretrained/g.pth").write_bytes(b"x")
    check_tracked_init("data/pretrained/g.pth", study / "params.yaml")
    with pytest.raises(UserError, match=rf"^{re.escape(str(study))}/params.yaml: teacher.init: {re.escape(str(study))}/data/pretrained/h.pth does"):
        check_tracked_init("data/pretrained/h.pth", study / "params.yaml")


class _Pwn:
    """Unpickling it would run code: it writes the file named."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_file_carrying_code_is_refused_without_running_it(tmp_path, net):
    witness = tmp_path / "pwned"
    torch.save({"params": net.state_dict(), "extra": _Pwn(witness)}, tmp_path / "g.pth")
    with pytest.raises(UserError) as info:
        load_pretrained_generator(tmp_path / "g.pth")
    assert str(info.value) == (f"{tmp_path / 'g.pth'}: holds Python objects besides tensors (io.open), "
                               "and esrkd loads tensors only; save a state dict of plain tensors.")
    assert not witness.exists()  # no code ran
    (tmp_path / "junk.pth").write_bytes(b"x" * 32)  # unpickled as garbage: torch's advice to trust the file stays out too
    with pytest.raises(UserError, match=r"^\S+junk.pth: not a readable PyTorch weights file \(UnpicklingError\)\.$"):
        load_pretrained_generator(tmp_path / "junk.pth")
