"""The scale-free feature loss (mse_normalized) and the per-phase record of every loss term's size."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esrkd import config
from esrkd.arch import DiscArgs, RRDBArgs, RRDBNet, VGGStyleDiscriminator
from esrkd.checkpoint import load_generator, model_name
from esrkd.data import PatchDataset
from esrkd.dist import World
from esrkd.distill import Distiller, student_args
from esrkd.losses import feature_distillation_loss
from esrkd.runs import Resume, write_outputs
from esrkd.train import Generator, TrainState, fit


def _adapted(feats: list[torch.Tensor], weight: float, bias: float) -> list[torch.Tensor]:
    """`feats` through 1x1 convs computing weight * x + bias on every channel (weight 1, bias 0: the identity)."""
    adapted = []
    for x in feats:
        channels = x.shape[1]
        f = nn.Conv2d(channels, channels, 1)
        with torch.no_grad():
            f.weight.copy_(weight * torch.eye(channels).view(channels, channels, 1, 1))
            f.bias.fill_(bias)
        adapted.append(f(x))
    return adapted


def test_mse_normalized_by_hand():
    # Teacher layer 1 holds 1s and 3s in equal numbers: mean 2, variance 1, mean square 5.
    # Layer 2 holds 0s and 4s: mean 2, variance 4, mean square 8. A zero student through identity
    # adapters misses by the teacher itself: 5/1 + 8/4 = 7.
    t1 = torch.tensor([1.0, 3.0]).repeat(2 * 3 * 4 * 4 // 2).view(2, 3, 4, 4)
    t2 = torch.tensor([0.0, 4.0]).repeat(2 * 3 * 4 * 4 // 2).view(2, 3, 4, 4)
    s = [torch.zeros(2, 3, 4, 4)] * 2
    loss = feature_distillation_loss(_adapted(s, 1.0, 0.0), [t1, t2], kind="mse_normalized")
    assert loss.item() == pytest.approx(5 / 1 + 8 / 4)
    assert feature_distillation_loss(_adapted(s, 1.0, 0.0), [t1, t2], kind="mse").item() == pytest.approx(5 + 8)


def test_mse_normalized_is_one_per_layer_for_a_student_that_predicts_the_teachers_mean():
    torch.manual_seed(0)
    teacher = [torch.randn(2, 3, 5, 5) * scale + 7 for scale in (0.01, 1.0, 300.0)]
    s = [torch.randn(2, 3, 5, 5) for _ in teacher]
    total = torch.zeros(())
    for si, ti in zip(s, teacher):  # adapter weight 0, bias = the teacher's mean: a constant guess
        total = total + feature_distillation_loss(_adapted([si], 0.0, ti.mean().item()), [ti], kind="mse_normalized")
    assert total.item() == pytest.approx(3.0, rel=1e-4)  # the feature scales span 3e4: no matter


def test_mse_normalized_does_not_send_gradient_through_the_teachers_variance():
    t = torch.randn(1, 3, 4, 4, requires_grad=True)
    s = torch.zeros(1, 3, 4, 4, requires_grad=True)
    feature_distillation_loss(_adapted([s], 1.0, 0.0), [t], kind="mse_normalized").backward()
    # d/dt of mean((s - t)^2) / var(t) with var held fixed: 2 (t - s) / (n var)
    expected = 2 * (t - s) / (t.numel() * t.detach().var(correction=0) + 1e-8 * t.numel())
    assert torch.allclose(t.grad, expected.detach(), rtol=1e-5)
    with pytest.raises(ValueError, match="feature loss 'l1' is not one of"):
        feature_distillation_loss(_adapted([s], 1.0, 0.0), [t], kind="l1")


class _Pixels(nn.Module):
    """A stand-in perceptual loss (the VGG weights are not on disk offline): L1 of 4x4 average pools."""

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(F.avg_pool2d(sr, 4), F.avg_pool2d(hr, 4))


def _fit(demo_params, resume: Resume | None = None, gan_iters: int = 2, keep_warmup: bool = False):
    demo_params["distill"].update(warmup_iters=2, gan_iters=gan_iters, batch_size=2, log_every=1, checkpoint_every=2,
                                  l1_weight=0.01, perceptual_weight=0.5, gan_weight=0.005, distill_weight=3.0, ramp_iters=0)
    cfg = config.parse(demo_params).distill
    torch.manual_seed(0)
    teacher = RRDBNet(RRDBArgs(num_feat=8, num_block=2, num_grow_ch=4))
    G = Generator(RRDBNet(student_args(teacher.args, 4)), [0, 1], teacher.args.num_feat)
    D = VGGStyleDiscriminator(DiscArgs(num_feat=4, input_size=32))
    distiller = Distiller(teacher, [0, 1], kind="mse_normalized")
    hr = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    data = PatchDataset([("x", hr[::4, ::4].copy(), hr)], scale=4, hr_patch=32, num_samples=(cfg.warmup_iters + gan_iters) * 2, seed=0)
    return cfg, fit(TrainState(G, D, cfg, perceptual=_Pixels(), distiller=distiller), data, "distill 4", resume, keep_warmup=keep_warmup)


def test_fit_records_every_terms_size_and_weight_at_the_start_of_each_phase(demo_params, capsys):
    cfg, result = _fit(demo_params)
    assert {k: {t: w for t, (_, w) in terms.items()} for k, terms in result.balance.items()} == {
        "warmup": {"l_pix": 1.0, "l_distill": 3.0},
        "gan": {"l_pix": cfg.l1_weight, "l_percep": cfg.perceptual_weight, "l_g_gan": cfg.gan_weight, "l_distill": 3.0},
    }
    rows = dict(result.history)
    for phase, it in (("warmup", 1), ("gan", cfg.warmup_iters + 1)):
        terms = result.balance[phase]
        logged = {k: rows[it][f"{phase}/{k}"] for k in terms}
        assert all(raw == logged[k] for k, (raw, _) in terms.items())  # what the log says: every term raw
        # the weighted terms add up to the generator's total: the weights are those fit trains with
        assert sum(raw * w for raw, w in terms.values()) == pytest.approx(rows[it][f"{phase}/l_g_total"], rel=1e-6)
    err = capsys.readouterr().err
    raw, w = result.balance["gan"]["l_pix"]
    assert "distill 4: iteration 1 (warmup) l_pix " in err
    assert f"distill 4: iteration 3 (gan) l_pix {raw:.4g} (x0.01 = {raw * w:.4g}), l_percep " in err


def test_a_resumed_fit_keeps_the_balance_of_the_phases_it_had_passed(demo_params, tmp_path):
    # The checkpoint of iteration 2 (end of the warm-up) stays behind: fit leaves removing it to write_outputs.
    _, whole = _fit(demo_params, Resume(tmp_path / "state.pt", "run"))
    _, resumed = _fit(demo_params, Resume(tmp_path / "state.pt", "run"))
    assert resumed.resumed_from == 2
    assert resumed.balance == whole.balance


def test_the_warm_up_snapshot_is_the_warm_up_only_run_and_survives_a_resume(demo_params, tmp_path):
    _, twin = _fit(demo_params, gan_iters=0)  # the same warm-up with no GAN phase after it
    _, whole = _fit(demo_params, Resume(tmp_path / "state.pt", "run"), keep_warmup=True)
    _, resumed = _fit(demo_params, Resume(tmp_path / "state.pt", "run"), keep_warmup=True)  # from iteration 2
    assert resumed.resumed_from == 2 and twin.warmup is None  # kept only when asked for and a GAN phase follows
    for snapshot in (whole.warmup, resumed.warmup):
        assert all(torch.equal(a, b) for a, b in zip(snapshot.state_dict().values(), twin.ema.state_dict().values()))
    assert not torch.equal(whole.ema.conv_first.weight, twin.ema.conv_first.weight)  # the GAN phase moved on from it
    meta = {"role": "student", "width": 4}
    write_outputs(tmp_path / "out", whole, whole.ema, VGGStyleDiscriminator(DiscArgs(num_feat=4, input_size=32)), meta,
                  Resume(tmp_path / "state.pt", "run"), World(0, 1))
    net, saved = load_generator(tmp_path / "out/warmup/net_g.pth")
    assert torch.equal(net.conv_first.weight, twin.ema.conv_first.weight)
    assert model_name(saved) == "student-4-warmup" and model_name(load_generator(tmp_path / "out/net_g.pth")[1]) == "student-4"
