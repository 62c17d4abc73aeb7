"""``MultiTaskModel``: the interface every architecture implements.

``forward(x)`` returns ``{task: prediction}``; ``shared_parameters()`` and ``task_parameters(task)``
split the parameters for balancers; ``representation`` holds the shared features z of the last forward
(still attached to the graph), the input of representation-gradient methods such as MGDA-UB.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from polytask.errors import PolytaskError, TaskMismatchError


class MultiTaskModel(nn.Module):
    """Base class: subclasses set ``self.tasks`` and implement the three methods below."""

    tasks: list[str]
    representation: torch.Tensor | None = None
    # whether forward() sets ``representation`` (one shared z that every task head reads); balancers that
    # need z (MGDA-UB, GradDrop, rep_grad=True) are refused before training on a model that says False.
    # None (a subclass that does not say): not checked before training (the first step tells)
    has_representation: bool | None = None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters used by more than one task (θ_s)."""
        raise NotImplementedError

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        """Parameters used by ``task`` only (θ_k)."""
        raise NotImplementedError

    def regularization(self) -> torch.Tensor | None:
        """An extra loss term of the architecture itself (e.g. soft sharing's coupling penalty), added to
        the training objective outside task balancing; ``None`` when the design has none. Training loops
        call ``model.regularization().backward()`` next to the balancer's backward."""
        return None

    def intermediate_outputs(self) -> dict[str, list[torch.Tensor]]:
        """Predictions of the last forward pass that are supervised with their task's own loss (deep
        supervision, e.g. PAD-Net's initial predictions): {task: [prediction, ...]}; training adds those
        losses to the task's loss (:func:`polytask.tasks.add_intermediate_losses`). Default: none."""
        return {}

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups (a design may train some parameters at a multiple of ``lr``)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def task_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """{task: its own parameters}, the ``task_params`` argument of ``Balancer.backward``."""
        return {t: list(self.task_parameters(t)) for t in self.tasks}

    def _check_task(self, task: str) -> None:
        if task not in self.tasks:
            raise TaskMismatchError(f"{type(self).__name__} has no task {task!r}; tasks: {self.tasks}")


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "linear": nn.Identity}


def mlp(
    sizes: Sequence[int], final_activation: bool = False, dropout: float = 0.0, activation: str = "relu"
) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` (relu, tanh or linear = none) between them."""
    if activation not in ACTIVATIONS:
        raise PolytaskError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)
