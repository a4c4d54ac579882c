import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def demo_params() -> dict:
    """A fresh copy of the demo params.yaml as a plain dict, for tests to alter."""
    return copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))
