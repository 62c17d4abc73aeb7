"""Building blocks of the mixture-of-experts recommenders: experts, softmax gates, towers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from polytask.errors import PolytaskError
from polytask.models.base import mlp
from polytask.tasks import Task


def expert(in_features: int, hidden: Sequence[int]) -> nn.Sequential:
    """An expert: Linear+ReLU layers of widths ``hidden`` (MMoE's synthetic setup: one layer of 16)."""
    if not hidden:
        raise PolytaskError("an expert needs at least one hidden layer width")
    return mlp([in_features, *hidden], final_activation=True)


class Gate(nn.Module):
    """g(x) = softmax(W x) over ``n_experts`` (MMoE's gate: linear, no bias)."""

    def __init__(self, in_features: int, n_experts: int):
        super().__init__()
        if n_experts < 1:
            raise PolytaskError("a gate needs at least one expert")
        self.linear = nn.Linear(in_features, n_experts, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=-1)


def mix(weights: torch.Tensor, expert_outputs: torch.Tensor) -> torch.Tensor:
    """Σ_i g_i f_i: (N, E) weights times (N, E, D) expert outputs -> (N, D)."""
    return torch.einsum("ne,ned->nd", weights, expert_outputs)


def tower(in_features: int, hidden: Sequence[int], task: Task) -> nn.Sequential:
    """A task tower: Linear+ReLU layers ``hidden`` then the task's output layer."""
    return mlp([in_features, *hidden, task.out_features])
