"""What keeps NaN out of a result: a skipped batch's buffer updates undone, and a selected model whose
parameters, buffers or evaluation losses are not finite refused instead of reported."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

from polytask.errors import NonFiniteMetricError


def buffer_snapshot(model: nn.Module) -> Callable[[], None]:
    """A copy of the model's buffers (BatchNorm's running statistics, ...) and a function that puts it back."""
    buffers = list(model.buffers())
    saved = [b.detach().clone() for b in buffers]

    def restore() -> None:
        with torch.no_grad():
            for b, v in zip(buffers, saved):
                b.copy_(v)

    return restore


def check_finite_model(model: nn.Module, what: str) -> None:
    """Raise :class:`NonFiniteMetricError` when a parameter or buffer of ``model`` is NaN or infinite."""
    bad = [
        name
        for name, t in [*model.named_parameters(), *model.named_buffers()]
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise NonFiniteMetricError(
            f"{what}: the model holds NaN or inf in {len(bad)} tensor(s) ({', '.join(bad[:4])}...); its metrics "
            "would be meaningless. Lower the learning rate, or use on_nonfinite='raise' to find the first bad batch"
        )


def check_finite_losses(losses: Mapping[str, float], what: str) -> None:
    """Raise :class:`NonFiniteMetricError` when an evaluation loss is NaN or infinite (a metric that is
    undefined on a split, e.g. AUC on one class, is not an error; a model that outputs NaN is)."""
    bad = [task for task, value in losses.items() if not math.isfinite(value)]
    if bad:
        raise NonFiniteMetricError(
            f"{what} are not finite for task(s) {', '.join(bad)}: the run has no meaningful result"
        )


def gradients_finite(params: list[torch.Tensor]) -> bool:
    """Whether every gradient of ``params`` is finite: one fused norm over the dense gradients (and the
    values of sparse ones), one host sync."""
    grads = [p.grad for p in params if p.grad is not None]
    dense = [g for g in grads if not g.is_sparse]
    norms = list(torch._foreach_norm(dense)) if dense else []
    norms += [g.coalesce().values().norm() for g in grads if g.is_sparse]
    return not norms or bool(torch.isfinite(torch.stack([n.to(norms[0].device, torch.float32) for n in norms]).sum()))
