"""MAXL: the masked softmax, the focal loss and entropy term by hand, and the meta step's gradient."""

import math

import pytest
import torch

import polytask as pt
from polytask.auxiliary import MAXL, entropy_regulariser, focal_loss, masked_log_softmax
from polytask.auxiliary.maxl import slot_mask
from polytask.data.digits_aux import hierarchy
from polytask.errors import PolytaskError


def test_masked_softmax_puts_zero_mass_outside_psi():
    psi = [2, 3]
    mask = slot_mask(psi)
    assert mask.tolist() == [[True, True, False, False, False], [False, False, True, True, True]]
    logits = torch.tensor([[5.0, 1.0, 9.0, 9.0, 9.0], [0.0, 0.0, 1.0, 2.0, 3.0]])
    p = masked_log_softmax(logits, torch.tensor([0, 1]), mask).exp()
    assert torch.all(p[0, 2:] == 0) and torch.all(p[1, :2] == 0)
    assert torch.allclose(p.sum(1), torch.ones(2))
    assert p[0, 0].item() == pytest.approx(math.exp(5) / (math.exp(5) + math.exp(1)))


def test_focal_loss_and_entropy_by_hand():
    log_p = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # row 1: -(1-0.5)^2 log 0.5; row 2: -(1-0.1)^2 log 0.1
    expected = (0.25 * math.log(2) + 0.81 * math.log(10)) / 2
    assert focal_loss(log_p, target).item() == pytest.approx(expected)
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # batch mean (0.5, 0.5): Σ p log p = −log 2
    assert entropy_regulariser(probs).item() == pytest.approx(-math.log(2))


def test_hierarchies():
    psi, primary_of, slot_of = hierarchy("parity")
    assert psi == [5, 5] and primary_of[7] == 1 and slot_of[7] == 8 and slot_of[4] == 2
    psi, primary_of, slot_of = hierarchy("pairs")
    assert psi == [2] * 5 and primary_of[7] == 3 and slot_of[7] == 7
    data = pt.data.create("digits_aux", primary="parity", n_train=50, n_val=50)
    assert data.task("digit").role == "auxiliary" and data.info["psi"] == [5, 5]
    # the fine label's slot belongs to its primary class
    mask = slot_mask(data.info["psi"])
    assert mask[data.train.targets["primary"], data.train.targets["digit"]].all()


@pytest.mark.parametrize("order", [2, 1])
def test_meta_step_reaches_the_generator(order):
    torch.manual_seed(0)
    data = pt.data.create("digits_aux", n_train=40, n_val=20)
    maxl = MAXL(data, aux="maxl", order=order, hidden=(16,))
    before = [p.detach().clone() for p in maxl.generator.parameters()]
    net_before = [p.detach().clone() for p in maxl.net.parameters()]
    batch = [(data.train.inputs[:20], {k: v[:20] for k, v in data.train.targets.items()})]
    maxl.generator_pass(batch)
    moved = [not torch.equal(a, p) for a, p in zip(before, maxl.generator.parameters())]
    assert all(moved)  # the primary loss after the inner step differentiates through to φ
    assert all(torch.equal(a, p) for a, p in zip(net_before, maxl.net.parameters()))  # θ is not stepped here
    assert all(p.grad is None for p in maxl.net.parameters())


def test_second_order_gradient_matches_finite_differences():
    """d/dφ of L_pri(θ − α∇θ L(θ, φ)) by autograd equals a central difference along a random direction."""
    torch.manual_seed(0)
    data = pt.data.create("digits_aux", n_train=20, n_val=20)
    maxl = MAXL(data, aux="maxl", hidden=(8,), entropy_weight=0.0)
    maxl.net.double()
    maxl.generator.double()
    x = data.train.inputs[:10].double()
    y = data.train.targets["primary"][:10]
    names = [n for n, _ in maxl.net.named_parameters()]

    def meta_loss() -> torch.Tensor:
        params = [p for _, p in maxl.net.named_parameters()]
        inner = maxl.training_loss(maxl.net(x), y, maxl.generator(x, y))
        grads = torch.autograd.grad(inner, params, create_graph=True)
        fast = {n: p - maxl.lr * g for n, p, g in zip(names, params, grads)}
        log_pri, _ = torch.func.functional_call(maxl.net, fast, (x,))
        return focal_loss(log_pri, torch.nn.functional.one_hot(y, 5).double())

    gen = list(maxl.generator.parameters())
    analytic = torch.autograd.grad(meta_loss(), gen)
    direction = [torch.randn_like(p) for p in gen]
    eps = 1e-5
    with torch.no_grad():
        for p, d in zip(gen, direction):
            p.add_(eps * d)
    plus = meta_loss().item()
    with torch.no_grad():
        for p, d in zip(gen, direction):
            p.sub_(2 * eps * d)
    minus = meta_loss().item()
    numeric = (plus - minus) / (2 * eps)
    assert sum((a * d).sum() for a, d in zip(analytic, direction)).item() == pytest.approx(numeric, rel=1e-4)


def test_generator_optimiser_keeps_the_reference_ratio_and_can_be_frozen():
    data = pt.data.create("digits_aux", n_train=40, n_val=20)
    maxl = MAXL(data, lr=0.05, hidden=(8,))
    assert maxl.gen_opt.param_groups[0]["lr"] == pytest.approx(0.005)  # reference: 1e-3 against 1e-2
    assert maxl.gen_opt.param_groups[0]["weight_decay"] == 5e-4
    frozen = MAXL(data, lr=0.05, hidden=(8,), generator_lr=0.0)
    before = [p.detach().clone() for p in frozen.generator.parameters()]
    frozen.fit(epochs=2, batch_size=20)
    assert all(torch.equal(a, p) for a, p in zip(before, frozen.generator.parameters()))
    assert frozen.generator_report()["drift"] == 0 and frozen.generator_steps == 0
    with pytest.raises(PolytaskError, match="generator_lr"):
        MAXL(data, generator_lr=-1.0)


def test_generator_report_by_hand():
    data = pt.data.create("digits_aux", n_train=40, n_val=20)
    maxl = MAXL(data, lr=0.1, generator_lr=0.2, generator_weight_decay=0.01, hidden=(8,))
    with torch.no_grad():
        for p in maxl.generator.parameters():
            p.mul_(1.1)  # every parameter 10% further from the origin: drift 0.1
    maxl.generator_steps = 3
    report = maxl.generator_report()
    assert report["drift"] == pytest.approx(0.1, rel=1e-5)
    assert report["weight_decay_drift"] == pytest.approx(1 - (1 - 0.2 * 0.01) ** 3)
    assert report["uniform_top_prob"] == pytest.approx(0.5)  # ψ = 2 everywhere for "pairs"
    assert 0.5 <= report["top_prob"] <= 1


def test_generator_descends_its_meta_objective():
    """With the network held fixed, repeated meta steps on one batch lower L_pri(θ − α∇θ L(θ, φ))."""
    torch.manual_seed(0)
    data = pt.data.create("digits_aux", primary="parity", n_train=40, n_val=20)
    maxl = MAXL(data, lr=0.05, generator_lr=2.0, generator_weight_decay=0.0, entropy_weight=0.0, hidden=(16,))
    x, y = data.train.inputs[:30], data.train.targets["primary"][:30]
    batch = [(x, {k: v[:30] for k, v in data.train.targets.items()})]
    names = [n for n, _ in maxl.net.named_parameters()]

    def meta_loss() -> float:
        params = [p for _, p in maxl.net.named_parameters()]
        grads = torch.autograd.grad(maxl.training_loss(maxl.net(x), y, maxl.generator(x, y)), params)
        fast = {n: (p - maxl.lr * g).detach() for n, p, g in zip(names, params, grads)}
        log_pri, _ = torch.func.functional_call(maxl.net, fast, (x,))
        return float(focal_loss(log_pri, torch.nn.functional.one_hot(y, 2).float()))

    start = meta_loss()
    for _ in range(30):
        maxl.generator_pass(batch)
    assert meta_loss() < start  # by little: the lookahead barely depends on the labels (module docstring)
    assert maxl.generator_report()["drift"] > 0.01 and maxl.generator_report()["weight_decay_drift"] == 0
