import json

import pytest
import torch
import yaml

from esrkd import config
from esrkd.arch import RRDBArgs, RRDBNet, count_params
from esrkd.data import prepare_set
from esrkd.prune import prunable, prune_l1
from esrkd.train import l1_finetune

# conv_first 3*8*9; per RDB (8*4 + 12*4 + 16*4 + 20*4 + 24*8)*9 = 3744, x3 RDBs x2 blocks;
# conv_body/up1/up2/hr 4 * 8*8*9; conv_last 8*3*9
CONV_WEIGHTS = 216 + 6 * 3744 + 4 * 576 + 216


def _net():
    torch.manual_seed(0)
    net = RRDBNet(RRDBArgs(num_feat=8, num_block=2, num_grow_ch=4))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 1e-3)  # no exact zeros, like trained weights
    return net


def _weights(net, keep=()):
    return {id(m): m.weight.detach().clone() for m, _ in prunable(net, keep)}


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.8])
def test_global_scope_zeroes_exactly_ratio_of_conv_weights(ratio):
    net = _net()
    before = torch.cat([w.abs().flatten() for w in _weights(net).values()])
    net, stats = prune_l1(net, ratio, "global")
    after = torch.cat([w.flatten() for w in _weights(net).values()])
    assert stats["prunable_weights"] == CONV_WEIGHTS == 25_200
    assert stats["zero_weights"] == round(ratio * CONV_WEIGHTS) == int((after == 0).sum())
    total, nonzero = count_params(net)
    assert stats["params_total"] == total and stats["params_nonzero"] == nonzero == total - round(ratio * CONV_WEIGHTS)
    if ratio:
        assert before[after == 0].max() <= before[after != 0].min()  # the smallest magnitudes went
    assert not any(hasattr(m, "weight_orig") for m, _ in prunable(net))  # permanent: no masks left
    assert set(net.state_dict()) == set(_net().state_dict())  # BasicSR keys unchanged


@pytest.mark.parametrize("ratio", [0.3, 0.8])
def test_layer_scope_zeroes_ratio_of_every_conv(ratio):
    net, stats = prune_l1(_net(), ratio, "layer", keep=["conv_first", "conv_last"])
    convs = dict(net.named_modules())
    for name in ("conv_first", "conv_last"):
        assert int((convs[name].weight == 0).sum()) == 0  # kept dense
    expected = 0
    for m, _ in prunable(net, ["conv_first", "conv_last"]):
        n = m.weight.numel()
        assert int((m.weight == 0).sum()) == round(ratio * n)  # e.g. conv_body: round(0.3 * 576) = 173
        expected += round(ratio * n)
    assert stats["prunable_weights"] == CONV_WEIGHTS - 2 * 216
    assert stats["zero_weights"] == expected
    assert stats["params_nonzero"] == stats["params_total"] - expected


def test_global_scope_strips_small_layers_that_layer_scope_keeps():
    net = _net()
    with torch.no_grad():
        net.conv_last.weight.mul_(1e-3)  # a trained ESRGAN's tail convs hold small weights
    pruned, _ = prune_l1(net, 0.5, "global")
    assert int((pruned.conv_last.weight == 0).sum()) == 216  # all of it gone
    pruned, _ = prune_l1(_net(), 0.5, "layer")
    assert int((pruned.conv_last.weight == 0).sum()) == 108


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"prune ratio 1.0 is outside \[0, 1\)"):
        prune_l1(_net(), 1.0, "global")
    with pytest.raises(ValueError, match="pruning.keep: \\['conv_middle'\\] are not conv layers"):
        prune_l1(_net(), 0.3, "layer", keep=["conv_middle"])
    with pytest.raises(ValueError, match="pruning.scope 'channel'"):
        prune_l1(_net(), 0.3, "channel")


def test_finetune_trains_the_survivors_and_keeps_the_zeros(tmp_path, tiny_params):
    tiny_params["pruning"].update(finetune_lr=1e-3)
    tiny_params["teacher"].update(patch_size=32, batch_size=2)
    p = config.parse(tiny_params)
    prepare_set(["skimage:astronaut"], 4, tmp_path / "train")
    torch.manual_seed(0)
    net_ref, _ = prune_l1(RRDBNet(p.teacher_arch), 0.5, "layer", ["conv_first", "conv_last"])
    torch.manual_seed(0)
    net = RRDBNet(p.teacher_arch)
    zeros_before = {n: m.weight == 0 for n, m in net_ref.named_modules() if isinstance(m, torch.nn.Conv2d)}
    calls = []

    def finetune(masked):
        calls.append(1)
        return l1_finetune(masked, tmp_path / "train", 5, p, torch.device("cpu"))

    tuned, stats = prune_l1(net, 0.5, "layer", ["conv_first", "conv_last"], finetune)
    assert calls == [1]
    for name, m in tuned.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            assert torch.equal(m.weight == 0, zeros_before[name])  # the same weights zero, no others
    assert not torch.equal(tuned.conv_body.weight, net_ref.conv_body.weight)  # the survivors trained
    assert stats["zero_weights"] == sum(int(z.sum()) for z in zeros_before.values())
    assert set(tuned.state_dict()) == set(net_ref.state_dict())


def test_the_stage_prunes_every_grid_ratio_each_as_if_alone(tmp_path, monkeypatch, capsys, tiny_params):
    from esrkd.checkpoint import save_generator

    from .test_bad_input import _assert_refused, _stage

    tiny_params["teacher"].update(patch_size=32, batch_size=2)
    tiny_params["grid"]["prune"] = [0.0, 0.3, 0.5]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    prepare_set(["skimage:astronaut"], 4, tmp_path / "train")
    save_generator(tmp_path / "t.pth", _net(), None, {"role": "teacher"})
    common = ["--teacher", "t.pth", "--scope", "layer", "--finetune-iters", "2", "--data", "train"]

    assert _stage(monkeypatch, tmp_path, "prune", *common, "--out", "all") == 0  # the ratios of grid.prune
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["0.0", "0.3", "0.5"]
    assert _stage(monkeypatch, tmp_path, "prune", *common, "--ratio", "0.5", "--out", "alone") == 0
    assert [p.name for p in (tmp_path / "alone").iterdir()] == ["0.5"]
    # The fine-tune draws its patches from the seeded RNG: ratio 0.5 after two others is ratio 0.5 alone.
    assert (tmp_path / "all/0.5/net_g.pth").read_bytes() == (tmp_path / "alone/0.5/net_g.pth").read_bytes()
    stats = json.loads((tmp_path / "all/0.3/prune.json").read_text())
    assert stats["ratio"] == 0.3 and stats["finetune_iters"] == 2 and stats["zero_weights"] > 0

    code = _stage(monkeypatch, tmp_path, "prune", *common, "--ratio", "0.3", "0.3", "--out", "twice")
    _assert_refused(code, capsys.readouterr().err, "--ratio 0.3 0.3", "listed twice", out=tmp_path / "twice")


def test_a_crash_at_a_later_ratio_keeps_the_fine_tunes_already_done(tmp_path, monkeypatch, capsys, tiny_params):
    """DVC deletes the stage's whole output before running it again: a ratio fine-tuned before the crash
    resumes from its final checkpoint (no iteration trained twice) and comes out byte-identical."""
    import shutil

    import esrkd.prune
    from esrkd.checkpoint import save_generator

    from .test_bad_input import _stage

    tiny_params["teacher"].update(patch_size=32, batch_size=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    prepare_set(["skimage:astronaut"], 4, tmp_path / "train")
    save_generator(tmp_path / "t.pth", _net(), None, {"role": "teacher"})
    common = ["--teacher", "t.pth", "--scope", "layer", "--finetune-iters", "3", "--data", "train"]
    assert _stage(monkeypatch, tmp_path, "prune", *common, "--ratio", "0.3", "--out", "alone") == 0

    real = esrkd.prune.prune_l1

    def crash_at_half(net, ratio, *args):
        if ratio == 0.5:
            raise RuntimeError("killed")
        return real(net, ratio, *args)

    with monkeypatch.context() as patched:
        patched.setattr(esrkd.prune, "prune_l1", crash_at_half)
        with pytest.raises(RuntimeError, match="killed"):
            _stage(monkeypatch, tmp_path, "prune", *common, "--ratio", "0.3", "0.5", "--out", "all")
    assert torch.load(tmp_path / "checkpoints/all__0.3.pt", weights_only=False)["iteration"] == 3
    shutil.rmtree(tmp_path / "all")  # as `dvc repro` does before it runs the stage again
    capsys.readouterr()

    assert _stage(monkeypatch, tmp_path, "prune", *common, "--ratio", "0.3", "0.5", "--out", "all") == 0
    assert "prune fine-tune: resuming at iteration 3 from checkpoints/all__0.3.pt" in capsys.readouterr().err
    assert (tmp_path / "all/0.3/net_g.pth").read_bytes() == (tmp_path / "alone/0.3/net_g.pth").read_bytes()
    assert not list((tmp_path / "checkpoints").iterdir())  # gone once every ratio is written
