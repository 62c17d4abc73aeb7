"""Loss weightings against values worked out by hand (SPEC.md section 3)."""

import math

import pytest
import torch

import polytask as pt
from polytask.balancing import weightings as W


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol)


def test_registry_lists_all_loss_weightings():
    assert {"ew", "uw", "gls", "dwa", "dtp", "lbtw", "rlw", "famo"} <= set(pt.balancing.available())


def test_unknown_method_and_option_errors_name_the_problem():
    with pytest.raises(pt.UnknownNameError, match=r"unknown method 'nope'.*dwa.*famo"):
        pt.balancing.create("nope", tasks=2)
    with pytest.raises(pt.ConfigError, match=r"no option.*temp.*valid options: tasks, temperature"):
        pt.balancing.create("dwa", tasks=2, temp=3)


def test_ew_is_ones():
    b = pt.balancing.create("ew", tasks=["a", "b", "c"])
    assert close(b.weights(torch.tensor([1.0, 5.0, 0.1])), [1, 1, 1])


def test_dwa_by_hand():
    # r = [0.5/1, 2/2] = [0.5, 1]; T = 2: w = 2 exp(r/2) / Σ exp(r/2)
    e1, e2 = math.exp(0.25), math.exp(0.5)
    expected = [2 * e1 / (e1 + e2), 2 * e2 / (e1 + e2)]  # [0.875647, 1.124353]
    assert close(W.dwa_weights(torch.tensor([0.5, 2.0]), torch.tensor([1.0, 2.0])), expected)
    b = pt.balancing.create("dwa", tasks=["a", "b"])
    losses = torch.tensor([3.0, 3.0])
    assert close(b.weights(losses), [1, 1])  # epoch 1: no history
    b.epoch_end(losses={"a": 1.0, "b": 2.0})
    assert close(b.weights(losses), [1, 1])  # epoch 2: one epoch of history only
    b.epoch_end(losses={"a": 0.5, "b": 2.0})
    assert close(b.weights(losses), expected)
    assert close(sum(expected), 2.0)  # weights sum to K
    with pytest.raises(pt.PolytaskError, match="epoch-average training losses"):
        b.epoch_end()


def test_lbtw_by_hand():
    b = pt.balancing.create("lbtw", tasks=["a", "b"])
    assert close(b.weights(torch.tensor([2.0, 4.0])), [1, 1])  # L(0) from the first batch
    assert close(b.weights(torch.tensor([1.0, 1.0])), [math.sqrt(0.5), math.sqrt(0.25)])  # (L/L0)^0.5


def test_lbtw_initial_loss_is_the_first_positive_one():
    """A task without a labelled sample in the first batch has loss 0 there: no L(0) to divide by (it
    used to give weights of 1e10 on the next steps)."""
    b = pt.balancing.create("lbtw", tasks=["a", "b", "c"])
    assert close(b.weights(torch.tensor([1.0, 4.0, 0.0])), [1, 1, 0])
    assert b.initial == [1.0, 4.0, None]
    assert close(b.weights(torch.tensor([0.25, 1.0, 3.0])), [0.5, 0.5, 1])  # L_c(0) = 3 from this batch
    assert close(b.weights(torch.tensor([0.25, 1.0, 0.75])), [0.5, 0.5, 0.5])
    c = pt.balancing.create("lbtw", tasks=["a", "b", "c"])
    c.load_state_dict(b.state_dict())
    assert c.initial == [1.0, 4.0, 3.0]


# methods that take logs or ratios of the losses (or whose objective is unbounded below for L < 0)
LOSS_FLOOR = {
    "uw": {},
    "imtl_l": {},
    "gls": {},
    "dwa": {},
    "lbtw": {},
    "famo": {},
    "gradnorm": {},
    "imtl": {},
    "mgda": {"normalization": "loss"},
    "mgda_ub": {"normalization": "loss+"},
}


@pytest.mark.parametrize("method", sorted(LOSS_FLOOR))
def test_a_negative_loss_is_an_error_for_methods_that_take_logs_or_ratios(method):
    torch.manual_seed(0)
    enc, heads = torch.nn.Linear(4, 8), torch.nn.ModuleList(torch.nn.Linear(8, 1) for _ in range(2))
    b = pt.balancing.create(method, tasks=["a", "b"], **LOSS_FLOOR[method])

    def losses(shift):
        z = enc(torch.randn(16, 4))
        return {"a": heads[0](z).pow(2).mean(), "b": heads[1](z).pow(2).mean() + shift}, z

    ok, z = losses(0.0)
    b.backward(ok, shared_params=list(enc.parameters()), representation=z)  # non-negative: fine
    bad, z = losses(-10.0)
    with pytest.raises(pt.PolytaskError, match=rf"{method}: loss of task\(s\) 'b' \(-9.\d+ < 0\) below"):
        b.backward(bad, shared_params=list(enc.parameters()), representation=z)
    if method == "famo":  # its bound is min_losses: a lower bound makes the same loss acceptable
        f = pt.balancing.create("famo", tasks=["a", "b"], min_losses=[0.0, -20.0])
        f.backward(bad, shared_params=list(enc.parameters()))
        with pytest.raises(pt.PolytaskError, match=r"'a' \(\d.\d+ < 5\).*pass min_losses="):
            pt.balancing.create("famo", tasks=["a", "b"], min_losses=[5.0, -20.0]).backward(bad)


@pytest.mark.parametrize("method", ["ew", "rlw", "mgda", "pcgrad", "upgrad", "cagrad", "nash_mtl", "imtl_g"])
def test_methods_that_take_no_logs_or_ratios_accept_negative_losses(method):
    torch.manual_seed(0)
    enc, head = torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)
    out = head(enc(torch.randn(16, 4)))
    losses = [out[:, 0].pow(2).mean(), out[:, 1].mean() - 10.0]  # e.g. a log-likelihood term
    w = pt.balancing.create(method, tasks=2).backward(losses, shared_params=list(enc.parameters()))
    assert torch.isfinite(w).all() and enc.weight.grad is not None


def test_dtp_by_hand_and_harder_task_gets_more_weight():
    # w = -(1-k)^γ log k: k = 0.9 -> 0.1 * 0.1053605 = 0.01053605; k = 0.5 -> 0.5 * 0.6931472 = 0.3465736
    assert close(W.dtp_weights(torch.tensor([0.9, 0.5])), [0.1 * -math.log(0.9), 0.5 * -math.log(0.5)])
    # γ = 2: (0.5)^2 * 0.6931472
    assert close(W.dtp_weights(torch.tensor([0.5]), 2.0), [0.25 * math.log(2)])
    b = pt.balancing.create("dtp", tasks=["easy", "hard"], alpha=0.9)
    assert close(b.weights(torch.ones(2)), [1, 1])  # no KPI yet
    b.epoch_end(kpis={"easy": 0.9, "hard": 0.5})
    w = b.weights(torch.ones(2))
    assert w[1] > w[0]
    b.epoch_end(kpis={"easy": 0.5, "hard": 0.5})  # EMA: 0.9*0.5 + 0.1*0.9 = 0.54
    assert close(b.weights(torch.ones(2)), W.dtp_weights(torch.tensor([0.54, 0.5])))
    with pytest.raises(pt.PolytaskError, match=r"KPI of task 'easy' must be in \[0, 1\]"):
        b.epoch_end(kpis={"easy": 3.0, "hard": 0.5})


def test_gls_weights_are_the_gradient_of_the_geometric_mean():
    # L = [1, 4]: GLS = 2, w = GLS / (K L) = [1, 0.25]
    assert close(W.gls_weights(torch.tensor([1.0, 4.0])), [1.0, 0.25])
    losses = torch.tensor([0.3, 2.0, 7.0], requires_grad=True)
    losses.prod().pow(1 / 3).backward()
    assert close(W.gls_weights(losses.detach()), losses.grad)


def test_uw_optimum_is_sigma2_equal_loss():
    losses = torch.tensor([0.2, 3.0, 40.0])
    for form, factor in (("regression", 1.0), ("classification", 2.0)):
        b = pt.balancing.create("uw", tasks=3, form=form)
        opt = torch.optim.Adam(b.parameters(), lr=0.05)
        for _ in range(2000):
            opt.zero_grad()
            b.objective(losses)[0].backward()
            opt.step()
        # stationary point: d/ds (c e^{-s} L + s/2) = 0  <=>  σ² = e^s = 2cL
        assert close(torch.exp(b.log_vars.detach()), factor * losses, tol=1e-3 * 40)
    # at the optimum the objective is K/2 + ½ Σ log L_k, a monotone function of the geometric mean
    b = pt.balancing.create("uw", tasks=3)
    with torch.no_grad():
        b.log_vars.copy_(torch.log(losses))
    assert close(b.objective(losses)[0], 1.5 + 0.5 * torch.log(losses).sum())


def test_uw_weights_and_gradient_by_hand():
    b = pt.balancing.create("uw", tasks=2, form=["regression", "classification"], init=math.log(2.0))
    losses = torch.tensor([1.0, 1.0])
    total, w = b.objective(losses)
    assert close(w, [0.25, 0.5])  # ½ e^{-s}, e^{-s} with e^s = 2
    total.backward()
    assert close(b.log_vars.grad, [-0.25 + 0.5, -0.5 + 0.5])  # -w_k L_k + ½


def test_rlw_weights_are_a_random_point_of_the_simplex():
    b = pt.balancing.create("rlw", tasks=4)
    torch.manual_seed(0)
    w1, w2 = b.weights(torch.ones(4)), b.weights(torch.ones(4))
    assert close(w1.sum(), 1) and (w1 > 0).all() and not close(w1, w2)
    torch.manual_seed(0)
    assert close(b.weights(torch.ones(4)), w1)  # reproducible from the seed


def test_famo_one_update_by_hand():
    b = pt.balancing.create("famo", tasks=["a", "b"])
    # ξ = 0: z = [.5, .5]; L = [1, 4]: c = 1 / (.5/1 + .5/4) = 1.6; w = c z / L = [0.8, 0.2]
    w = b.weights(torch.tensor([1.0, 4.0]))
    assert close(w, [0.8, 0.2])
    # after the step L = [0.5, 3.6]: δ = [ln 2, ln(4/3.6)], ∇ = z ⊙ (δ − zᵀδ), ξ ← ξ − 0.025 (∇ + 0.001 ξ)
    d1, d2 = math.log(2), math.log(4 / 3.6)
    g = [0.5 * (d1 - (d1 + d2) / 2), 0.5 * (d2 - (d1 + d2) / 2)]
    b.post_step({"a": torch.tensor(0.5), "b": torch.tensor(3.6)})
    assert close(b.logits, [-0.025 * g[0], -0.025 * g[1]])
    assert b.logits[1] > b.logits[0]  # the task that improved less gains weight
    with pytest.raises(pt.PolytaskError, match="before backward"):
        b.post_step({"a": torch.tensor(0.5), "b": torch.tensor(3.6)})


def test_famo_step_gradient_is_that_of_the_log_objective():
    logits = torch.tensor([0.3, -0.2, 0.1])
    losses = torch.tensor([0.5, 2.0, 1.5], requires_grad=True)
    z = torch.softmax(logits, 0)
    c = 1 / (z / losses.detach()).sum()
    (c * z * torch.log(losses)).sum().backward()
    assert close(W.famo_weights(losses.detach(), logits), losses.grad)


@pytest.mark.parametrize("method", ["ew", "uw", "gls", "dwa", "dtp", "lbtw", "rlw", "famo"])
def test_backward_fills_grads_of_the_weighted_sum(method):
    torch.manual_seed(0)
    shared, head_a, head_b = torch.nn.Linear(3, 4), torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)
    x = torch.randn(8, 3)
    b = pt.balancing.create(method, tasks=["a", "b"])

    def losses():
        z = shared(x)
        return {"a": head_a(z).pow(2).mean(), "b": (head_b(z) - 1).abs().mean()}

    torch.manual_seed(1)
    w = b.backward(losses(), shared_params=shared.parameters())
    got = [p.grad.clone() for p in (*shared.parameters(), *head_a.parameters(), *head_b.parameters())]
    for p in (*shared.parameters(), *head_a.parameters(), *head_b.parameters()):
        p.grad = None
    ls = losses()
    (w[0] * ls["a"] + w[1] * ls["b"]).backward()
    want = [p.grad for p in (*shared.parameters(), *head_a.parameters(), *head_b.parameters())]
    assert all(torch.allclose(g, h, atol=1e-6) for g, h in zip(got, want))
    assert w.shape == (2,) and torch.isfinite(w).all()


def test_backward_rejects_nan_and_mismatched_tasks():
    b = pt.balancing.create("ew", tasks=["a", "b"])
    with pytest.raises(pt.NonFiniteLossError, match="task\\(s\\) b"):
        b.backward({"a": torch.tensor(1.0, requires_grad=True), "b": torch.tensor(float("nan"))})
    with pytest.raises(pt.TaskMismatchError, match=r"unknown task\(s\) \['c'\].*missing task\(s\) \['b'\]"):
        b.backward({"a": torch.tensor(1.0), "c": torch.tensor(1.0)})
    with pytest.raises(pt.TaskMismatchError, match="got 3 losses for 2 tasks"):
        b.backward([torch.tensor(1.0)] * 3)


@pytest.mark.parametrize("method", ["dwa", "dtp", "lbtw", "famo", "uw"])
def test_state_dict_round_trip(method):
    b = pt.balancing.create(method, tasks=["a", "b"])
    b.weights(torch.tensor([1.0, 2.0])) if method != "uw" else None
    b.epoch_end(losses={"a": 1.0, "b": 2.0}, kpis={"a": 0.3, "b": 0.6})
    b.epoch_end(losses={"a": 0.5, "b": 1.0}, kpis={"a": 0.4, "b": 0.7})
    if method == "famo":
        b.post_step([torch.tensor(0.5), torch.tensor(1.0)])
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.3)
    c = pt.balancing.create(method, tasks=["a", "b"])
    c.load_state_dict(b.state_dict())
    losses = torch.tensor([0.7, 1.1])
    assert close(b.objective(losses)[1], c.objective(losses)[1])
