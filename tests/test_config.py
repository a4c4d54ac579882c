import pytest
import yaml

from esrkd import config
from esrkd.arch import RRDBNet, count_params
from esrkd.distill import student_args
from esrkd.errors import UserError

from .conftest import ROOT


def test_demo_and_paper_profiles_validate():
    demo = config.load(ROOT / "params.yaml")
    paper = config.load(ROOT / "params.paper.yaml")
    assert demo.base.profile == "demo" and paper.base.profile == "paper"
    for p in (demo, paper):
        assert p.grid.prune == [0.0, 0.3, 0.5, 0.8]
        assert p.grid.width == [16, 32, 48]
        assert p.prune == 0.3
    assert paper.net.num_block == 23 and paper.teacher.patch_size == 128


def test_profiles_have_the_same_keys():
    def keys(d, prefix=""):
        return {prefix + k for k in d} | {x for k, v in d.items() if isinstance(v, dict) and k not in ("test", "train_subimages") for x in keys(v, f"{prefix}{k}.")}

    demo = yaml.safe_load((ROOT / "params.yaml").read_text())
    paper = yaml.safe_load((ROOT / "params.paper.yaml").read_text())
    assert keys(demo) == keys(paper)


def test_paper_profile_networks_have_the_papers_parameter_counts():
    p = config.load(ROOT / "params.paper.yaml")
    teacher = RRDBNet(p.teacher_arch)
    assert count_params(teacher)[0] == 16_697_987
    expected = {16: 6_538_115, 32: 9_588_355, 48: 12_974_979}
    for width in p.grid.width:
        assert count_params(RRDBNet(student_args(p.teacher_arch, width)))[0] == expected[width]


def _error(raw: dict) -> str:
    with pytest.raises(UserError) as info:
        config.parse(raw, "params.yaml")
    return str(info.value)


def test_unknown_key_is_named(demo_params):
    demo_params["teacher"]["learning_rate"] = 1e-4
    assert _error(demo_params) == "params.yaml: teacher.learning_rate: unknown key; remove it or check its spelling."


def test_wrong_type_is_named(demo_params):
    demo_params["net"]["num_block"] = "many"
    msg = _error(demo_params)
    assert msg.startswith("params.yaml: net.num_block: ") and "integer" in msg and "'many'" in msg


def test_missing_key_is_named(demo_params):
    del demo_params["distill"]["feature_loss"]
    assert _error(demo_params) == "params.yaml: distill.feature_loss: missing; add it."


def test_out_of_range_is_named(demo_params):
    demo_params["teacher"]["batch_size"] = 0
    assert _error(demo_params).startswith("params.yaml: teacher.batch_size: Input should be greater than 0")


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: d.update(prune=0.4), "prune: 0.4 is not one of grid.prune"),
        (lambda d: d["grid"].update(prune=[0.0, 1.0]), "grid.prune.1: prune ratio 1.0 is outside [0, 1)"),
        (lambda d: d["grid"].update(width=[16, 64]), "grid.width: width 64 must be > 0 and < net.num_feat (64)"),
        (lambda d: d["grid"].update(width=[0]), "grid.width: width 0 must be > 0"),
        (lambda d: d["grid"].update(prune=[0.0, 0.3, 0.3, 0.5, 0.5]), "grid.prune: [0.3, 0.5] listed more than once; list each value once"),
        (lambda d: d["grid"].update(width=[16, 32, 16]), "grid.width: [16] listed more than once"),
        (lambda d: d["ablation"].update(width=[16, 16]), "ablation.width: [16] listed more than once"),
        (lambda d: d["distill"].update(layers=[0, 1, 0]), "distill.layers: [0] listed more than once"),
        (lambda d: d["teacher"].update(patch_size=40), "teacher.patch_size: 40 must be a multiple of 32"),
        (lambda d: d["distill"].update(layers=[0, 5]), "distill.layers: [5] are not RRDB blocks 0..1"),
        (lambda d: d["data"]["test"].update({"../x": ["skimage:coffee"]}), "data.test.../x.[key]"),
        (lambda d: d["data"].update(train_subimages={"size": 30, "step": 16}),
         "data.train_subimages: size 30 and step 16 must be multiples of base.scale, and size at least teacher.patch_size (32)"),
        (lambda d: d["data"].update(train_subimages={"size": 32, "step": 0}), "data.train_subimages.step: Input should be greater than 0"),
    ],
)
def test_cross_field_checks(demo_params, change, expected):
    change(demo_params)
    assert expected in _error(demo_params)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="no such params file"):
        config.load(tmp_path / "params.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("base: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        config.load(bad)


@pytest.mark.parametrize("key, value", [("teacher.lr", ".inf"), ("distill.lr", ".nan"), ("pruning.finetune_lr", ".inf"),
                                        ("distill.distill_weight", ".nan"), ("teacher.ema_decay", "-.inf"), ("prune", ".nan"),
                                        ("teacher.betas.1", ".inf"), ("grid.prune.0", ".nan")])
def test_non_finite_floats_are_refused(demo_params, key, value):
    *blocks, last = key.split(".")
    target = demo_params
    for block in blocks:
        target = target[int(block) if isinstance(target, list) else block]
    target[int(last) if isinstance(target, list) else last] = yaml.safe_load(value)  # YAML's own spelling of inf / nan
    assert _error(demo_params).startswith(f"params.yaml: {key}: Input should be a finite number (got ")


def _load(tmp_path, text: str) -> config.Params:
    (tmp_path / "params.yaml").write_text(text)
    return config.load(tmp_path / "params.yaml")


def test_scientific_notation_without_dot_is_a_float(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace("  lr: 2.0e-4 ", "  lr: 1e-4   ", 1)
    assert "lr: 1e-4" in text  # PyYAML alone reads YAML 1.1's `1e-4` as a string; DVC's YAML 1.2 reads a float
    assert _load(tmp_path, text).teacher.lr == 1e-4


@pytest.mark.parametrize("keep", [["conv_frist"], ["conv_first", "body.2.rdb1.conv1"], ["body.0"], ["body.0.rdb1.conv6"]])
def test_pruning_keep_names_a_teacher_conv(demo_params, keep):
    demo_params["pruning"]["keep"] = keep  # the demo teacher has 2 RRDB blocks: body.0 and body.1
    bad = [name for name in keep if name != "conv_first"]
    assert _error(demo_params) == (f"params.yaml: pruning.keep: {bad} are not conv layers of the teacher "
                                   "(conv_first, body.0.rdb1.conv1 ... conv_last); use BasicSR's names.")


def test_pruning_keep_takes_every_conv_of_the_teacher(demo_params):
    demo_params["pruning"]["keep"] = ["conv_first", "body.1.rdb3.conv5", "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    assert config.parse(demo_params).pruning.keep[1] == "body.1.rdb3.conv5"


@pytest.mark.parametrize("text, expected", [
    ("grid:\n  prune: [0.3]\n  width: [4]\n  prune: [0.5]\n", "grid.prune: given twice (lines 2 and 4); keep one."),
    ("prune: 0.3\nbase: {}\nprune: 0.5\n", "prune: given twice (lines 1 and 3); keep one."),
    ("data:\n  test:\n    - a: 1\n      a: 2\n", "data.test.0.a: given twice (lines 3 and 4); keep one."),
])
def test_a_key_given_twice_is_refused_with_both_lines(tmp_path, text, expected):
    with pytest.raises(UserError) as info:
        _load(tmp_path, text)
    assert str(info.value) == f"{tmp_path / 'params.yaml'}: {expected}"


@pytest.mark.parametrize("key, value, expected", [
    ("grid.prune", ["0.3", 0.5], "grid.prune.0: Input should be a valid number (got '0.3')"),
    ("prune", "0.3", "prune: Input should be a valid number (got '0.3')"),
    ("teacher.lr", "2e-4", "teacher.lr: Input should be a valid number (got '2e-4')"),
    ("teacher.betas", ["0.9", 0.99], "teacher.betas.0: Input should be a valid number (got '0.9')"),
    ("net.num_block", 2.0, "net.num_block: Input should be a valid integer (got 2.0)"),
    ("net.num_block", "2", "net.num_block: Input should be a valid integer (got '2')"),
    ("teacher.batch_size", True, "teacher.batch_size: Input should be a valid integer (got True)"),
    ("base.compile", "false", "base.compile: Input should be a valid boolean (got 'false')"),
    ("data.train", [1], "data.train.0: Input should be a valid string (got 1)"),
])
def test_a_value_of_the_wrong_type_is_refused_not_coerced(demo_params, key, value, expected):
    block, _, last = key.rpartition(".")
    (demo_params[block] if block else demo_params)[last] = value
    assert _error(demo_params) == f"params.yaml: {expected}."


def test_integers_are_floats_and_yaml_lists_are_tuples(demo_params):
    demo_params["teacher"].update(lr=1, betas=[0, 1 - 1e-3])
    demo_params["grid"]["prune"] = [0, 0.3]
    p = config.parse(demo_params)
    assert p.teacher.lr == 1.0 and isinstance(p.teacher.lr, float)
    assert p.teacher.betas == (0.0, 0.999) and p.grid.prune == [0.0, 0.3]
