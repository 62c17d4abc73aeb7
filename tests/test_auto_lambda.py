"""Auto-λ: the meta-gradient of a hand-worked example and the direction the weights move."""

import pytest
import torch
from torch import nn

from polytask.auxiliary import AutoLambda
from polytask.tasks import Task


class SharedScalar(nn.Module):
    """Every task predicts w·x with one shared scalar w."""

    def __init__(self, names):
        super().__init__()
        self.names = names
        self.w = nn.Parameter(torch.tensor(0.0))

    def forward(self, x):
        return {n: self.w * x for n in self.names}


def test_meta_gradient_and_weight_directions_by_hand():
    """x = 1, targets y1 = 2 (primary), y2 = 2 (helps), y3 = −2 (hurts); w = 0, λ = 0.1, α = 0.1.
    g = ∂L/∂w = 2(w − y): g1 = g2 = −4, g3 = 4; w' = −α Σ λ_i g_i = 0.04; g1(w') = −3.92;
    ∂L1(w')/∂λ_i = g1(w') · (−α g_i) = −1.568, −1.568, +1.568."""
    names = ["primary", "helps", "hurts"]
    tasks = [Task(n, "regression", 1, ("mse",), role="primary" if n == "primary" else "auxiliary") for n in names]
    model = SharedScalar(names)
    x = torch.tensor([1.0])
    targets = {"primary": torch.tensor([2.0]), "helps": torch.tensor([2.0]), "hurts": torch.tensor([-2.0])}
    auto = AutoLambda(model, tasks, lr=0.01)
    assert auto.primary == ["primary"]
    grad = auto.meta_gradient((x, targets), (x, targets), alpha=0.1)
    assert torch.allclose(grad, torch.tensor([-1.568, -1.568, 1.568]), atol=1e-6)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    auto.step((x, targets), (x, targets), optimizer)
    w = auto.current()
    assert w["primary"] > 0.1 and w["helps"] > 0.1 and w["hurts"] < 0.1  # Adam's first step: ±0.01
    assert w["hurts"] == pytest.approx(0.09, abs=1e-6)
    # the network step used the updated weights: w = 0 − 0.1 · (0.11·(−4) + 0.11·(−4) + 0.09·4)
    assert model.w.item() == pytest.approx(0.1 * (0.11 * 4 + 0.11 * 4 - 0.09 * 4), abs=1e-6)


def test_primary_tasks_must_exist():
    model = SharedScalar(["a"])
    with pytest.raises(Exception, match="primary"):
        AutoLambda(model, [Task("a", "regression")], primary=["b"])


def test_auto_lambda_weights_a_noise_task_down_relative_to_a_useful_one():
    import polytask as pt
    from polytask.auxiliary.auto_lambda import fit_auto_lambda

    data = pt.data.create("digits_aux", noise_task=True, n_train=200, n_val=50)
    result = fit_auto_lambda(data, epochs=10, autol_lr=3e-3)
    last = result["weights"][-1]
    assert last["digit"] > last["noise"] and last["noise"] / last["primary"] < 0.5
    assert result["test_scores"]["primary"]["accuracy"] > 0.5
