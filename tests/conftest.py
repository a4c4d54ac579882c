from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def demo() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def tiny() -> dict:
    """The demo params shrunk to seconds: an 8-feature, 1-block teacher, one width, two prune ratios."""
    p = demo()
    p["base"]["profile"] = "test"
    p["grid"] = {"prune": [0.3, 0.5], "width": [4]}
    p["ablation"] = {"prune": 0.3, "width": [4]}
    p["data"]["train"] = ["skimage:astronaut"]
    p["data"]["test"] = {"tiny": ["skimage:chelsea"]}
    p["net"] = {"num_feat": 8, "num_block": 1, "num_grow_ch": 4, "d_num_feat": 4}
    for block in ("teacher", "distill"):
        p[block].update(batch_size=2, warmup_iters=3, gan_iters=2, log_every=1)
    return p


@pytest.fixture
def demo_params() -> dict:
    """A fresh copy of the demo params.yaml as a plain dict, for tests to alter."""
    return demo()


@pytest.fixture
def tiny_params() -> dict:
    return tiny()
