"""Task Affinity Grouping, TAG (Fifty, Amid, Zhao, Yu, Anil & Finn, NeurIPS 2021): inter-task affinities
from one multi-task run.

At a step with shared parameters θ_s and task parameters θ_j, the lookahead affinity of task i onto j is

    Z_{i→j} = 1 − L_j(x; θ_s − Δ_i, θ_j) / L_j(x; θ_s, θ_j),

with Δ_i the update a step on task i alone would make to θ_s (only the shared parameters move). The
reference uses the SGD step Δ_i = η ∇_{θ_s} L_i; when the run trains with Adam, ``lookahead="adam"``
matches its actual step instead, Δ_i = η ∇L_i / (√v̂ + ε) with the optimizer's current second moments.
Affinities are averaged over the steps where they are measured (every ``every`` steps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from polytask.errors import PolytaskError
from polytask.tasks import Task, compute_losses


def lookahead_affinity(
    model: nn.Module,
    tasks: Sequence[Task],
    x,
    targets: Mapping[str, torch.Tensor],
    lr: float,
    shared: Sequence[nn.Parameter],
    scale: Mapping[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """(K, K) matrix Z[i, j] = Z_{i→j} on one batch. ``lr``: the step size η; ``scale``: optional
    per-parameter divisors (id(p) -> tensor) turning the gradient into the optimizer's step (Adam)."""
    names = [t.name for t in tasks]
    losses = compute_losses(tasks, model(x), targets)
    base = torch.stack([losses[n] for n in names]).detach()
    if not torch.all(base > 0):
        raise PolytaskError("TAG lookahead: a task loss is 0 or negative; the affinity ratio is undefined")
    param_names = {id(p): n for n, p in model.named_parameters()}
    shared = [p for p in shared if p.requires_grad]
    z = torch.zeros(len(names), len(names), dtype=torch.float64)
    for i, name in enumerate(names):
        grads = torch.autograd.grad(losses[name], shared, retain_graph=True, allow_unused=True)
        moved = {}
        for p, g in zip(shared, grads):
            if g is None:
                continue
            step = g / scale[id(p)] if scale is not None and id(p) in scale else g
            moved[param_names[id(p)]] = p.detach() - lr * step
        with torch.no_grad():
            after = compute_losses(tasks, functional_call(model, moved, (x,)), targets)
        z[i] = 1.0 - torch.stack([after[n] for n in names]).double() / base.double()
    return z


def adam_scales(optimizer: torch.optim.Optimizer) -> dict[int, torch.Tensor]:
    """id(p) -> √v̂ + ε from an Adam optimizer's state (empty before its first step)."""
    out = {}
    for group in optimizer.param_groups:
        beta2, eps = group["betas"][1], group["eps"]
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state and "exp_avg_sq" in state:
                step = float(state["step"])
                v_hat = state["exp_avg_sq"] / (1 - beta2**step)
                out[id(p)] = v_hat.sqrt() + eps
    return out
