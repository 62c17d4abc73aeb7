"""Auto-λ (Liu, James, Davison & Johns, TMLR 2022): task weights learned by a one-step meta-gradient on
the primary tasks.

Task weights λ (unconstrained, 0.1 each at the start, as the reference) weight the training objective
Σ_i λ_i L_i. Before each network step, with α the network's learning rate:

1. a virtual step θ' = θ − α ∇_θ Σ_i λ_i L_i(θ; training batch);
2. the meta-loss Σ_{i ∈ primary} L_i(θ'; meta batch), where the reference's "validation" batch is another
   batch drawn from the training set;
3. an Adam step (lr ``lr``) on λ along ∂ meta / ∂λ, through θ' (exact, by a second-order backward; the
   reference approximates it by a finite difference);
4. the network step on Σ_i λ_i L_i with the updated λ.

Differences from the reference, documented: the virtual step is plain SGD (the reference includes its
SGD momentum and weight decay); the λ gradient is exact rather than the finite-difference estimate.
Auxiliary tasks (``primary`` excludes them) are thereby weighted by how much a step on them helps the
primary tasks: a harmful task's λ falls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from polytask.errors import PolytaskError
from polytask.tasks import Task, compute_losses


class AutoLambda:
    """The λ of ``tasks`` for ``model``; :meth:`step` makes one meta update of λ and one network step."""

    def __init__(
        self,
        model: nn.Module,
        tasks: Sequence[Task],
        primary: Sequence[str] | None = None,
        lr: float = 1e-4,
        init: float = 0.1,
        virtual_lr: float | None = None,
    ):
        self.model, self.tasks = model, list(tasks)
        names = [t.name for t in self.tasks]
        self.primary = list(primary) if primary is not None else [t.name for t in self.tasks if t.role == "primary"]
        unknown = [p for p in self.primary if p not in names]
        if unknown or not self.primary:
            raise PolytaskError(f"Auto-λ: primary tasks {self.primary} must be a non-empty subset of {names}")
        self.weights = torch.full((len(names),), float(init), requires_grad=True)
        self.optimizer = torch.optim.Adam([self.weights], lr=lr)
        self.virtual_lr = virtual_lr

    def weighted_loss(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(w * losses[t.name] for w, t in zip(self.weights, self.tasks))

    def meta_gradient(self, batch, meta_batch, alpha: float) -> torch.Tensor:
        """∂/∂λ of Σ_{primary} L_i(θ − α ∇_θ Σ λ_i L_i(batch); meta_batch)."""
        x, targets = batch
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        losses = compute_losses(self.tasks, self.model(x), targets)
        objective = self.weighted_loss(losses)
        grads = torch.autograd.grad(objective, list(params.values()), create_graph=True, allow_unused=True)
        fast = {n: p if g is None else p - alpha * g for (n, p), g in zip(params.items(), grads)}
        mx, mtargets = meta_batch
        meta_losses = compute_losses(self.tasks, functional_call(self.model, fast, (mx,)), mtargets)
        meta = sum(meta_losses[name] for name in self.primary)
        (grad,) = torch.autograd.grad(meta, [self.weights])
        return grad

    def step(self, batch, meta_batch, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """Update λ by the meta-gradient, then take the network step on Σ λ_i L_i; returns the losses."""
        alpha = self.virtual_lr if self.virtual_lr is not None else optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        self.weights.grad = self.meta_gradient(batch, meta_batch, alpha)
        self.optimizer.step()
        x, targets = batch
        losses = compute_losses(self.tasks, self.model(x), targets)
        optimizer.zero_grad(set_to_none=True)
        network = [p for p in self.model.parameters() if p.requires_grad]
        self.weighted_loss(losses).backward(inputs=network)
        optimizer.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    def current(self) -> dict[str, float]:
        return {t.name: float(w) for t, w in zip(self.tasks, self.weights.detach())}


def fit_auto_lambda(
    data,
    arch: str = "hps_mlp",
    arch_options: dict | None = None,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 1e-3,
    autol_lr: float = 3e-4,
    seed: int = 0,
) -> dict:
    """Train ``arch`` on ``data`` with Auto-λ (Adam on the network, the meta batch from a second shuffled
    training loader, as the reference); returns the λ after every epoch and the final test scores."""
    from polytask import models
    from polytask.data.base import BatchLoader
    from polytask.training.evaluation import evaluate
    from polytask.utils import seed_everything

    seed_everything(seed)
    model = models.create(arch, tasks=data.tasks, input_shape=data.input_shape, **(arch_options or {}))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    auto = AutoLambda(model, data.tasks, lr=autol_lr, virtual_lr=lr)
    history = []
    for epoch in range(epochs):
        batches = BatchLoader(data.train, batch_size, shuffle=True, seed=seed + epoch)
        meta = BatchLoader(data.train, batch_size, shuffle=True, seed=seed + 50_000 + epoch)
        for batch, meta_batch in zip(batches, meta):
            auto.step(batch, meta_batch, optimizer)
        history.append(auto.current())
    test = evaluate(model, data.tasks, BatchLoader(data.test, 1024)).scores
    return {"weights": history, "test_scores": test}
