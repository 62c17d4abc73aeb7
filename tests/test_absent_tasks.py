"""A task without a labelled sample in a batch has loss None: it is absent. Every method is then its
formula on the present tasks (the same steps as the method built for those tasks alone), the absent task
gets weight 0 and no gradient, and its state is left as it is."""

import pytest
import torch
from torch import nn

import polytask as pt
from polytask.errors import PolytaskError

TASKS = ["a", "b", "c"]
PRESENT = ["a", "c"]
# RLW draws K random numbers per step, so the method on 2 tasks draws others: tested on its own below
METHODS = [m for m in sorted(pt.balancing.available()) if m != "rlw"]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6), nn.Tanh())
        self.heads = nn.ModuleDict({t: nn.Linear(6, 1) for t in TASKS})

    def forward(self, x):
        z = self.encoder(x)
        return z, {t: h(z)[:, 0] for t, h in self.heads.items()}


def data(step):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(16, 5, generator=g)
    return x, {t: torch.randn(16, generator=g) * (k + 1) + 2 for k, t in enumerate(TASKS)}


def train(method, tasks, steps=3, **options):
    """``steps`` SGD steps of ``method`` built for ``tasks`` on the 3-task model; the other tasks' losses
    are None (balancer on all 3 tasks) or left out (balancer on the present tasks alone)."""
    torch.manual_seed(0)
    model = Net()
    balancer = pt.balancing.create(method, tasks=tasks, **options)
    # weight decay on the model: a head given a zero gradient instead of none would decay
    opt = torch.optim.SGD(
        [{"params": model.parameters(), "weight_decay": 0.01}, {"params": balancer.parameters()}], lr=0.05
    )
    if balancer.needs_kpis:
        balancer.epoch_end(kpis={t: v for t, v in zip(TASKS, (0.4, 0.7, 0.9)) if t in tasks})
    if method == "dwa":  # two epochs of history, so that the weights are not yet all 1
        for epoch_losses in ((1.0, 1.0, 1.0), (0.5, 0.9, 0.7)):  # ratios r differ between the tasks
            balancer.epoch_end(losses={t: v for t, v in zip(TASKS, epoch_losses) if t in tasks})

    def losses(x, y):
        z, out = model(x)
        given = {t: ((out[t] - y[t]) ** 2).mean() if t in PRESENT else None for t in TASKS}
        return z, {t: given[t] for t in tasks}

    weights = []
    for step in range(steps):
        x, y = data(step)
        z, batch_losses = losses(x, y)
        opt.zero_grad(set_to_none=True)
        torch.manual_seed(100 + step)  # the same random draws (PCGrad orders, GradDrop masks)
        w = balancer.backward(
            batch_losses,
            shared_params=list(model.encoder.parameters()),
            task_params={t: list(model.heads[t].parameters()) for t in tasks},
            representation=z,
        )
        weights.append(w.clone())
        opt.step()
        if balancer.needs_post_step_losses:
            with torch.no_grad():
                balancer.post_step(losses(x, y)[1])
    return model, balancer, torch.stack(weights)


@pytest.mark.parametrize("method", METHODS)
def test_an_absent_task_gives_the_method_on_the_present_tasks(method):
    full_model, full, w_full = train(method, TASKS)
    sub_model, _, w_sub = train(method, PRESENT)
    assert torch.all(w_full[:, 1] == 0)
    assert torch.allclose(w_full[:, [0, 2]], w_sub, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(full_model.named_parameters(), sub_model.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), name
    torch.manual_seed(0)
    untouched = Net()
    for p, q in zip(full_model.heads["b"].parameters(), untouched.heads["b"].parameters()):
        assert torch.equal(p, q)  # the absent task's head gets no gradient
    for p in full.parameters():  # UW, IMTL-L, IMTL, GradNorm: the absent task's entry stays
        assert p.shape[0] == 3 and p[1].item() == pytest.approx(1.0 if method == "gradnorm" else 0.0)


@pytest.mark.parametrize("engine", ["loop", "batched", "direct"])
@pytest.mark.parametrize("method", ["mgda", "mgda_ub", "upgrad", "gradnorm"])
def test_every_engine_takes_the_absent_task_out(method, engine):
    full_model, _, w_full = train(method, TASKS, engine=engine)
    sub_model, _, w_sub = train(method, PRESENT, engine=engine)
    assert torch.allclose(w_full[:, [0, 2]], w_sub, rtol=1e-5, atol=1e-6) and torch.all(w_full[:, 1] == 0)
    for p, q in zip(full_model.parameters(), sub_model.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6)


def test_absent_task_state_is_kept():
    """GradVac's targets of pairs with the absent task and FAMO's logit of it stay as they were."""
    _, gradvac, _ = train("gradvac", TASKS)
    assert torch.all(gradvac.targets[1] == 0) and torch.all(gradvac.targets[:, 1] == 0)
    assert gradvac.targets[0, 2] != 0
    _, famo, _ = train("famo", TASKS)
    assert famo.logits[1] == 0 and famo.logits[0] != 0


def test_rlw_weights_are_a_softmax_over_the_present_tasks():
    _, _, w = train("rlw", TASKS)
    assert torch.all(w[:, 1] == 0)
    assert torch.allclose(w.sum(1), torch.ones(len(w)))


def test_an_absent_task_is_not_a_finished_one():
    """MGDA with a zero loss for the unlabelled task sees a zero gradient in the hull and makes no update;
    with None it makes MGDA's update of the two present tasks."""
    torch.manual_seed(0)
    enc, heads, x = nn.Linear(4, 6), nn.Linear(6, 3), torch.randn(8, 4)

    def losses():
        out = heads(enc(x))
        return [(out[:, 0] - 1).pow(2).mean(), out[:, 1].sum() * 0, (out[:, 2] + 1).pow(2).mean()]

    mgda = pt.balancing.create("mgda", tasks=3)
    mgda.backward(losses(), shared_params=list(enc.parameters()))
    assert torch.all(enc.weight.grad == 0)  # the zero row makes d = 0
    enc.zero_grad()
    first, _, third = losses()
    w = mgda.backward([first, None, third], shared_params=list(enc.parameters()))
    assert enc.weight.grad.abs().sum() > 0 and w[1] == 0 and w.sum() == pytest.approx(1.0)


def test_absent_task_errors():
    ew = pt.balancing.create("ew", tasks=["a", "b"])
    with pytest.raises(PolytaskError, match="every task's loss is None"):
        ew.backward({"a": None, "b": None})
    with pytest.raises(PolytaskError, match=r"missing task\(s\) \['b'\].*give an absent task's loss as None"):
        ew.backward({"a": torch.tensor(1.0, requires_grad=True)})
    famo = pt.balancing.create("famo", tasks=["a", "b"])
    p = torch.ones(2, requires_grad=True)
    famo.backward([p[0] * 2, None])
    with pytest.raises(PolytaskError, match=r"post_step\(\) got losses for other tasks"):
        famo.post_step([p[0], p[1]])


def test_dwa_reads_each_tasks_last_two_epochs_with_labels():
    """An epoch without a labelled sample of a task gives it a NaN epoch loss (the Trainer's mean over no
    batch); DWA's r_k then uses that task's last two epochs with labels (r_k = 1 before it has two)."""
    dwa = pt.balancing.create("dwa", tasks=["a", "b", "c"])
    nan = float("nan")
    for epoch in ((1.0, 1.0, 1.0), (0.5, nan, 0.8), (0.25, nan, 0.4)):
        dwa.epoch_end(losses=dict(zip("abc", epoch)))
    r = torch.tensor([0.25 / 0.5, 1.0, 0.4 / 0.8])
    expected = 3 * torch.softmax(r / 2.0, dim=0)
    assert torch.allclose(dwa.weights(torch.ones(3)), expected)
