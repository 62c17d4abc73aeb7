"""The MMoE paper's trend on mmoe_synthetic (slow: 30 trainings)."""

import importlib.util
import statistics
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "reproduce_mmoe.py"


@pytest.mark.slow
def test_omoe_degrades_as_correlation_falls_and_mmoe_much_less():
    spec = importlib.util.spec_from_file_location("reproduce_mmoe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ps = [1.0, 0.5, 0.0]
    moe = {"n_experts": 4, "experts": (8,)}
    results = module.sweep(ps, range(5), ["omoe", "mmoe"], epochs=30, verbose=False, moe=moe)
    mean = {key: statistics.mean(v) for key, v in results.items()}
    assert mean["omoe", 0.5] > mean["omoe", 1.0] and mean["omoe", 0.0] > mean["omoe", 1.0]
    assert mean["mmoe", 0.0] - mean["mmoe", 1.0] < mean["omoe", 0.0] - mean["omoe", 1.0]
    assert mean["mmoe", 0.5] < mean["omoe", 0.5] and mean["mmoe", 0.0] < mean["omoe", 0.0]
