import math

import numpy as np
import pytest
import torch
import yaml

from esrkd.arch import DiscArgs, RRDBArgs, RRDBNet, VGGStyleDiscriminator
from esrkd.distill import Distiller, fit_adapters, student_args
from esrkd.losses import feature_distillation_loss, ragan_loss
from esrkd.prune import prune_l1
from esrkd.data import PatchDataset
from esrkd.runs import write_history
from esrkd.train import Engine, Generator, TrainState, distill_weight, fit, learning_rate
from esrkd import config, plots


def _teacher():
    torch.manual_seed(0)
    return RRDBNet(RRDBArgs(num_feat=8, num_block=2, num_grow_ch=4))


def test_distillation_loss_is_zero_when_student_features_equal_the_adapted_teachers():
    torch.manual_seed(0)
    s = [torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)]
    adapters = torch.nn.ModuleList(torch.nn.Conv2d(4, 8, 1) for _ in s)
    adapted = [f(x) for f, x in zip(adapters, s)]
    t = [a.detach() for a in adapted]
    assert feature_distillation_loss(adapted, t).item() == 0.0
    assert feature_distillation_loss(adapted, t, kind="l2").item() == 0.0
    t_off = [x + 1.0 for x in t]  # every element off by one: mse 1 per layer, l2 sqrt(8*5*5) per sample
    assert feature_distillation_loss(adapted, t_off).item() == pytest.approx(2.0)
    assert feature_distillation_loss(adapted, t_off, kind="l2").item() == pytest.approx(2 * math.sqrt(200))


def test_distillation_gradient_reaches_adapters_and_student_but_not_teacher():
    teacher = _teacher()
    prune_l1(teacher, 0.5, "global")
    G = Generator(RRDBNet(student_args(teacher.args, 4)), [0, 1], teacher.args.num_feat)
    distiller = Distiller(teacher, [0, 1], kind="mse")
    lr = torch.rand(2, 3, 6, 6)
    sr, feats = G(lr)
    distiller(lr, sr, feats).backward()
    assert all(a.weight.grad is not None and a.weight.grad.abs().sum() > 0 for a in G.adapters)
    assert G.net.conv_first.weight.grad.abs().sum() > 0
    assert G.net.body[1].rdb3.conv5.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_student_args_keep_depth_and_growth():
    s = student_args(RRDBArgs(num_feat=64, num_block=23, num_grow_ch=32), 16)
    assert (s.num_feat, s.num_block, s.num_grow_ch) == (16, 23, 32)
    with pytest.raises(ValueError, match="width 64 must be > 0 and < the teacher's 64"):
        student_args(RRDBArgs(), 64)


def test_ragan_loss_values():
    same = torch.zeros(4, 1)
    assert ragan_loss(same, same).item() == pytest.approx(math.log(2))
    # a judged 1 above b on average, b 1 below a: both terms are BCE(2, target) = log(1 + e^-2)
    apart = ragan_loss(torch.full((4, 1), 1.0), torch.full((4, 1), -1.0))
    assert apart.item() == pytest.approx(math.log1p(math.exp(-2)), rel=1e-6)
    assert ragan_loss(torch.full((4, 1), -1.0), torch.full((4, 1), 1.0)).item() == pytest.approx(math.log1p(math.exp(2)), rel=1e-6)


def test_learning_rate_halves_after_each_milestone(demo_params):
    demo_params["teacher"].update(lr=1e-3, lr_milestones=[10, 20])
    cfg = config.parse(demo_params).teacher
    assert [learning_rate(i, cfg) for i in (1, 10, 11, 20, 21)] == [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4]


def test_fit_trains_the_student_and_leaves_the_pruned_teacher_untouched(demo_params, tmp_path):
    demo_params["distill"].update(warmup_iters=2, gan_iters=2, batch_size=2, log_every=1)
    cfg = config.parse(demo_params).distill
    teacher = _teacher()
    prune_l1(teacher, 0.5, "global")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    torch.manual_seed(0)
    student = RRDBNet(student_args(teacher.args, 4))
    G = Generator(student, [0, 1], teacher.args.num_feat)
    start = {k: v.clone() for k, v in student.state_dict().items()}
    D = VGGStyleDiscriminator(DiscArgs(num_feat=4, input_size=32))
    distiller = Distiller(teacher, [0, 1], kind="mse")
    hr = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    data = PatchDataset([("x", hr[::4, ::4].copy(), hr)], scale=4, hr_patch=32, num_samples=8, seed=0)
    result = fit(TrainState(G, D, cfg, distiller=distiller), data)
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen: pruned zeros stay zero
    assert not torch.equal(start["conv_first.weight"], student.state_dict()["conv_first.weight"])
    assert not torch.equal(result.ema.state_dict()["conv_first.weight"], student.state_dict()["conv_first.weight"])
    assert [it for it, _ in result.history] == [1, 2, 3, 4]
    assert "warmup/l_distill" in result.history[0][1] and "gan/l_d" in result.history[2][1]
    write_history(tmp_path / "log", result.history)
    logged = np.genfromtxt(tmp_path / "log/gan.tsv", delimiter="\t", names=True)
    assert logged["step"].tolist() == [3, 4]  # step = iteration; GAN phase from iteration 3
    assert logged["l_distill"].tolist() == pytest.approx([row["gan/l_distill"] for _, row in result.history[2:]])


def test_output_only_distillation_uses_the_teachers_sr_and_no_adapters():
    teacher = _teacher()
    distiller = Distiller(teacher, [0, 1], kind="mse", mode="output")
    G = Generator(RRDBNet(student_args(teacher.args, 4)), distiller.layers, teacher.args.num_feat)
    assert len(G.adapters) == 0 and distiller.layers == []
    lr = torch.rand(1, 3, 6, 6)
    sr, feats = G(lr)
    assert distiller(lr, sr, feats).item() == pytest.approx((sr - teacher(lr)).abs().mean().item())
    assert distiller(lr, teacher(lr), []).item() == 0.0
    with pytest.raises(ValueError, match="mode 'none' is not one of"):
        Distiller(teacher, [0], "mse", mode="none")


def test_compiled_training_follows_the_eager_run(demo_params):
    # torch.compile fuses kernels, so floats may differ in the last bits; the trajectory must not.
    demo_params["distill"].update(warmup_iters=2, gan_iters=1, batch_size=2, log_every=1)
    cfg = config.parse(demo_params).distill
    hr = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    runs = []
    for compile in (False, True):
        torch.manual_seed(0)
        teacher = _teacher()
        G = Generator(RRDBNet(student_args(teacher.args, 4)), [0, 1], teacher.args.num_feat)
        D = VGGStyleDiscriminator(DiscArgs(num_feat=4, input_size=32))
        distiller = Distiller(teacher, [0, 1], kind="mse")
        data = PatchDataset([("x", hr[::4, ::4].copy(), hr)], scale=4, hr_patch=32, num_samples=6, seed=0)
        result = fit(TrainState(G, D, cfg, Engine(compile=compile), distiller=distiller), data)
        runs.append((result, G.net.state_dict(), D.state_dict(), G.adapters.state_dict()))
    (eager, g0, d0, a0), (compiled, g1, d1, a1) = runs
    assert list(g0) == list(g1) and list(d0) == list(d1)  # plain modules: no "_orig_mod." keys saved
    assert [it for it, _ in compiled.history] == [1, 2, 3] and {"gan/l_d", "gan/l_distill"} <= set(compiled.history[2][1])
    for (_, a), (_, b) in zip(eager.history, compiled.history):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6) for k in a)
    for before, after in ((g0, g1), (a0, a1)):
        assert all(torch.allclose(before[k], after[k], atol=1e-5) for k in before)
    # D took one Adam step, which moves a weight by ~lr whatever the gradient's size: a near-zero
    # gradient that differs in its last bits may move it the other way.
    assert all(torch.allclose(d0[k].float(), d1[k].float(), atol=2 * cfg.lr) for k in d0)


def test_ema_starts_from_g_and_averages_every_step_as_basicsr(demo_params):
    # decay 0.5 over one iteration: ema = 0.5 * G_before + 0.5 * G_after, for every weight.
    demo_params["teacher"].update(warmup_iters=1, gan_iters=0, batch_size=2, ema_decay=0.5)
    cfg = config.parse(demo_params).teacher
    torch.manual_seed(0)
    G = RRDBNet(RRDBArgs(num_feat=4, num_block=1, num_grow_ch=4))
    before = {k: v.clone() for k, v in G.state_dict().items()}
    hr = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    data = PatchDataset([("x", hr[::4, ::4].copy(), hr)], scale=4, hr_patch=32, num_samples=2, seed=0)
    result = fit(TrainState(Generator(G), VGGStyleDiscriminator(DiscArgs(num_feat=4, input_size=32)), cfg), data)
    after, ema = G.state_dict(), result.ema.state_dict()
    assert not torch.equal(before["conv_first.weight"], after["conv_first.weight"])
    for k in before:
        assert torch.allclose(ema[k], 0.5 * before[k] + 0.5 * after[k], atol=1e-7), k


def test_history_is_written_as_one_table_per_phase(tmp_path):
    # what `dvc plots` (dvc.yaml) and the report's curves read: a row per logged iteration, lr in every table
    history = [(10, {"warmup/l_pix": 0.5, "lr": 0.0002}), (20, {"warmup/l_pix": 0.375, "lr": 0.0002}),
               (30, {"gan/l_pix": 0.25, "gan/l_d": 0.75, "lr": 0.0001})]
    write_history(tmp_path / "log", history)
    assert sorted(p.name for p in (tmp_path / "log").iterdir()) == ["gan.tsv", "warmup.tsv"]
    assert (tmp_path / "log/warmup.tsv").read_text() == "step\tl_pix\tlr\n10\t0.5\t0.0002\n20\t0.375\t0.0002\n"
    assert (tmp_path / "log/gan.tsv").read_text() == "step\tl_pix\tl_d\tlr\n30\t0.25\t0.75\t0.0001\n"
    write_history(tmp_path / "empty", [])  # 0 iterations (a teacher taken as it is)
    assert not list((tmp_path / "empty").iterdir())
    # the report's curves join the phases in step order
    log = plots.read_log(tmp_path / "log")
    assert plots.loss_curve(log, "l_pix").values.tolist() == [[10, 0.5], [20, 0.375], [30, 0.25]]
    assert plots.loss_curve(log, "l_d").values.tolist() == [[30, 0.75]]
    assert plots.loss_curve(plots.read_log(tmp_path / "empty"), "l_pix").empty


def test_the_stage_trains_several_modes_each_as_if_alone_and_resumes_the_done_ones(tmp_path, monkeypatch, capsys, tiny_params):
    """`--mode none output` (the ablate stage) trains each mode as a run of its own would; after a crash in
    the second, DVC's re-run (outputs deleted) takes the first from its final checkpoint, untrained again."""
    import shutil

    import esrkd.train
    from esrkd.checkpoint import save_discriminator, save_generator
    from esrkd.data import prepare_set

    from .test_bad_input import _assert_refused, _stage

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    p = config.parse(tiny_params)
    prepare_set(["skimage:astronaut"], 4, tmp_path / "train")
    torch.manual_seed(0)
    save_generator(tmp_path / "t.pth", RRDBNet(p.teacher_arch), None, {"role": "teacher", "prune": 0.3})
    save_discriminator(tmp_path / "d.pth", VGGStyleDiscriminator(p.disc_arch))
    common = ["--teacher", "t.pth", "--disc", "d.pth", "--data", "train", "--width", "4"]
    total = p.distill.warmup_iters + p.distill.gan_iters

    assert _stage(monkeypatch, tmp_path, "distill", *common, "--mode", "output", "--out", "alone") == 0
    real = esrkd.train.fit

    def crash_in_output(state, data, desc, resume, val, keep_warmup):
        if desc.endswith("output"):
            raise RuntimeError("killed")
        return real(state, data, desc, resume, val, keep_warmup)

    with monkeypatch.context() as patched:
        patched.setattr(esrkd.train, "fit", crash_in_output)
        with pytest.raises(RuntimeError, match="killed"):
            _stage(monkeypatch, tmp_path, "distill", *common, "--mode", "none", "output", "--out", "both/none", "both/output")
    assert torch.load(tmp_path / "checkpoints/both__none.pt", weights_only=False)["iteration"] == total
    shutil.rmtree(tmp_path / "both")  # as `dvc repro` does before it runs the stage again
    capsys.readouterr()

    assert _stage(monkeypatch, tmp_path, "distill", *common, "--mode", "none", "output", "--out", "both/none", "both/output") == 0
    assert f"distill 4 none: resuming at iteration {total} from checkpoints/both__none.pt" in capsys.readouterr().err
    assert not list((tmp_path / "checkpoints").iterdir())  # gone once both are written
    for name in ("net_d.pth", "log/warmup.tsv", "log/gan.tsv"):
        assert (tmp_path / "both/output" / name).read_bytes() == (tmp_path / "alone" / name).read_bytes()
    both, alone = (torch.load(tmp_path / f"{d}/net_g.pth", weights_only=True)["params_ema"] for d in ("both/output", "alone"))
    assert all(torch.equal(both[k], alone[k]) for k in alone)  # the files differ only in the log path they name
    none_meta = torch.load(tmp_path / "both/none/net_g.pth", weights_only=False)["meta"]
    assert none_meta["distill"]["mode"] == "none" and none_meta["log"] == "both/none/log"

    code = _stage(monkeypatch, tmp_path, "distill", *common, "--mode", "none", "output", "--out", "one")
    _assert_refused(code, capsys.readouterr().err, "one --out folder per mode", out=tmp_path / "one")


def _tiny_run(cfg, distiller: Distiller | None, layers: list[int]):
    """A width-4 student (seed 0) and a D (seed 1) trained by fit on a noise image; returns (G, D, fit result)."""
    torch.manual_seed(0)
    G = Generator(RRDBNet(student_args(RRDBArgs(num_feat=8, num_block=2, num_grow_ch=4), 4)), layers, 8)
    torch.manual_seed(1)
    D = VGGStyleDiscriminator(DiscArgs(num_feat=4, input_size=32))
    hr = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    data = PatchDataset([("x", hr[::4, ::4].copy(), hr)], scale=4, hr_patch=32, num_samples=8, seed=0)
    return G, D, fit(TrainState(G, D, cfg, distiller=distiller), data)


def test_the_features_path_at_lambda_0_trains_bitwise_the_student_of_no_distillation(demo_params):
    demo_params["distill"].update(warmup_iters=2, gan_iters=2, batch_size=2, log_every=1, distill_weight=0.0)
    cfg = config.parse(demo_params).distill
    G0, D0, with_path = _tiny_run(cfg, Distiller(_teacher(), [0, 1], "mse_normalized"), [0, 1])
    G1, D1, without = _tiny_run(cfg, None, [])
    assert with_path.balance["warmup"]["l_distill"][0] > 0  # the teacher and the adapters did run
    for a, b in ((G0.net, G1.net), (with_path.ema, without.ema), (D0, D1)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_lambda_distill_ramps_linearly_from_0_and_the_step_uses_it(demo_params):
    demo_params["distill"].update(warmup_iters=2, gan_iters=0, batch_size=2, log_every=1, distill_weight=0.5, ramp_iters=10)
    cfg = config.parse(demo_params).distill
    assert [distill_weight(it, cfg) for it in (1, 5, 10, 30)] == [0.05, 0.25, 0.5, 0.5]
    assert distill_weight(7, cfg.model_copy(update={"ramp_iters": 0})) == 0.5  # no ramp: constant
    _, _, result = _tiny_run(cfg, Distiller(_teacher(), [0, 1], "mse"), [0, 1])
    raw, weight = result.balance["warmup"]["l_distill"]
    assert weight == 0.05 and result.balance["warmup"]["l_pix"][1] == 1.0
    # the logged total is L1 + 0.05 L_distill at iteration 1: the ramped weight is the one trained with
    assert result.history[0][1]["warmup/l_g_total"] == pytest.approx(result.history[0][1]["warmup/l_pix"] + 0.05 * raw, rel=1e-6)


def test_fitted_adapters_are_the_least_squares_map_and_lower_the_first_term():
    teacher = _teacher()
    torch.manual_seed(2)
    G = Generator(RRDBNet(student_args(teacher.args, 4)), [0, 1], teacher.args.num_feat)
    lr = torch.rand(2, 3, 6, 6)
    distiller = Distiller(teacher, [0, 1], "mse")
    with torch.no_grad():
        before = distiller(lr, *G(lr)).item()
        fit_adapters(G.adapters, G.net, teacher, [0, 1], lr)
        after = distiller(lr, *G(lr)).item()
        s_feats, t_feats = G.net.forward_features(lr, [0, 1])[1], teacher.forward_features(lr, [0, 1])[1]
    # numpy's least squares on the same (pixels x channels) problems gives the same residual
    expected = 0.0
    for s, t in zip(s_feats, t_feats):
        x = np.c_[s.permute(0, 2, 3, 1).reshape(-1, 4).double().numpy(), np.ones(2 * 36)]
        y = t.permute(0, 2, 3, 1).reshape(-1, 8).double().numpy()
        w = np.linalg.lstsq(x, y, rcond=None)[0]
        expected += float(np.mean((x @ w - y) ** 2))
    assert after == pytest.approx(expected, rel=1e-4)
    assert after < 0.5 * before  # the initial adapters are far from that map
