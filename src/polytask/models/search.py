"""Plumbing shared by the architectures that search before they train (AdaShare, MTL-NAS): the two
halves of the training split, one pass of updates with plain summed task losses, and the re-draw of every
layer's weights before re-training from scratch."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from polytask.data.base import BatchLoader, Split, take
from polytask.errors import PolytaskError
from polytask.models.base import MultiTaskModel
from polytask.tasks import Task, compute_losses


def halves(train: Split, seed: int, name: str) -> tuple[Split, Split]:
    """A seeded random split of ``train`` into two halves (network updates on one, architecture on the other)."""
    n = len(train)
    if n < 2:
        raise PolytaskError(f"{name}: the search splits the training set in two halves; it needs >= 2 samples")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = order[: n // 2], order[n // 2 :]
    return tuple(Split(take(train.inputs, i), {k: v[i] for k, v in train.targets.items()}) for i in parts)


def train_pass(
    model: nn.Module,
    tasks: Sequence[Task],
    batches: BatchLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    extra_loss: Callable[[], torch.Tensor] | None = None,
    name: str = "search",
) -> None:
    """One pass over ``batches``: Σ_k L_k (+ ``extra_loss()``), backward, ``optimizer.step()``."""
    from polytask.training.evaluation import move_batch

    for x, targets in batches:
        x, targets = move_batch(x, targets, torch.device(device))
        losses = compute_losses(tasks, model(x), targets)
        loss = sum(losses.values())
        if extra_loss is not None:
            loss = loss + extra_loss()
        if not math.isfinite(float(loss.detach())):
            raise PolytaskError(
                f"{name}: non-finite loss during the search ({ {k: float(v) for k, v in losses.items()} })"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def reinitialise(model: nn.Module, seed: int) -> None:
    """Draw every layer's parameters afresh (``reset_parameters``, seeded; the global RNG is restored),
    for re-training a searched architecture from scratch."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed + 7919)
    for m in model.modules():
        if m is not model and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    torch.random.set_rng_state(state)


class UsageSplitModel(MultiTaskModel):
    """A model whose searched structure decides which tasks use each trunk parameter: subclasses list
    ``(parameter, tasks using it)`` in :meth:`_parameter_users`; a parameter used by several tasks is
    shared, one used by task k alone is k's, one used by none gets no gradient and is in neither list.
    ``self.heads`` ({task: module}) are always task-specific."""

    has_representation = False  # no single z that every task head reads

    heads: nn.ModuleDict

    def _parameter_users(self) -> list[tuple[nn.Parameter, set[int]]]:
        raise NotImplementedError

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p, users in self._parameter_users() if len(users) > 1)

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        self._check_task(task)
        k = self.tasks.index(task)
        yield from (p for p, users in self._parameter_users() if users == {k})
        yield from self.heads[task].parameters()
