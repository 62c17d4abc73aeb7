"""Shared-Bottom, OMoE and MMoE (Ma et al. 2018, "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts").

- Shared-Bottom: y_k = h_k(f(x)), one shared bottom network f.
- OMoE: y_k = h_k(Σ_i g(x)_i f_i(x)), one softmax gate g shared by all tasks.
- MMoE: y_k = h_k(Σ_i g_k(x)_i f_i(x)), g_k(x) = softmax(W_gk x), one gate per task.

Defaults are the paper's synthetic-data setup (§5.1): 8 experts of one 16-unit layer, towers of one
8-unit layer; Shared-Bottom one 113-unit layer (the paper's choice to match MMoE's parameter count). Inputs go
through :func:`~polytask.models.inputs.input_encoder` (dense, or tabular embeddings). The gates of the
last forward are kept in ``model.gates`` ({task: (N, E)}) for inspection.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from polytask.errors import PolytaskError
from polytask.features import FeatureSpec, SequenceSpec
from polytask.models.base import MultiTaskModel
from polytask.models.experts import Gate, expert, mix, tower
from polytask.models.hps import HPS
from polytask.models.inputs import input_encoder
from polytask.models.registry import register
from polytask.tasks import Task


class MixtureOfExperts(MultiTaskModel):
    """``n_experts`` shared experts mixed by softmax gates: one per task (MMoE) or one for all (OMoE).

    There is no single shared representation (gates and experts both read the input), so
    ``representation`` stays ``None``: representation-gradient methods need the parameter mode."""

    has_representation = False  # no single z that every task head reads

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape,
        n_experts: int = 8,
        experts: Sequence[int] = (16,),
        towers: Sequence[int] = (8,),
        gate_per_task: bool = True,
    ):
        super().__init__()
        if n_experts < 1:
            raise PolytaskError(f"n_experts must be >= 1, got {n_experts}")
        self.tasks = [t.name for t in tasks]
        self.inputs = input_encoder(input_shape)
        d = self.inputs.out_features
        self.experts = nn.ModuleList(expert(d, experts) for _ in range(n_experts))
        self.gate_per_task = gate_per_task
        names = self.tasks if gate_per_task else ["shared"]
        self.gate_modules = nn.ModuleDict({n: Gate(d, n_experts) for n in names})
        self.towers = nn.ModuleDict({t.name: tower(experts[-1], towers, t) for t in tasks})
        self.gates: dict[str, torch.Tensor] = {}

    def forward(self, x) -> dict[str, torch.Tensor]:
        e = self.inputs(x)
        outputs = torch.stack([f(e) for f in self.experts], dim=1)  # (N, E, D)
        if self.gate_per_task:
            self.gates = {t: self.gate_modules[t](e) for t in self.tasks}
        else:
            g = self.gate_modules["shared"](e)
            self.gates = dict.fromkeys(self.tasks, g)
        return {t: self.towers[t](mix(self.gates[t], outputs)) for t in self.tasks}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.inputs.parameters()
        yield from self.experts.parameters()
        if not self.gate_per_task:
            yield from self.gate_modules.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        self._check_task(task)
        yield from self.towers[task].parameters()
        if self.gate_per_task:
            yield from self.gate_modules[task].parameters()


@register(
    "shared_bottom",
    "Shared-Bottom: shared embeddings + bottom MLP, one tower per task (Caruana 1997)",
    inputs=("vector", "tabular", "sequence"),
    dense=False,
)
def shared_bottom(
    tasks: Sequence[Task],
    input_shape: Sequence[int] | FeatureSpec | SequenceSpec,
    bottom: Sequence[int] = (113,),
    towers: Sequence[int] = (8,),
) -> HPS:
    """Hard parameter sharing over the input encoder (dense, tabular or sequence) and a bottom MLP."""
    inputs = input_encoder(input_shape)
    encoder = nn.Sequential(inputs, expert(inputs.out_features, tuple(bottom)))
    return HPS(encoder, {t.name: tower(bottom[-1], tuple(towers), t) for t in tasks})


@register(
    "mmoe",
    "MMoE (Ma et al. 2018): shared experts, one softmax gate per task",
    inputs=("vector", "tabular", "sequence"),
    dense=False,
)
def mmoe(
    tasks: Sequence[Task],
    input_shape: Sequence[int] | FeatureSpec,
    n_experts: int = 8,
    experts: Sequence[int] = (16,),
    towers: Sequence[int] = (8,),
) -> MixtureOfExperts:
    return MixtureOfExperts(tasks, input_shape, n_experts, tuple(experts), tuple(towers), gate_per_task=True)


@register(
    "omoe",
    "OMoE (Ma et al. 2018): shared experts, one softmax gate shared by all tasks",
    inputs=("vector", "tabular", "sequence"),
    dense=False,
)
def omoe(
    tasks: Sequence[Task],
    input_shape: Sequence[int] | FeatureSpec,
    n_experts: int = 8,
    experts: Sequence[int] = (16,),
    towers: Sequence[int] = (8,),
) -> MixtureOfExperts:
    return MixtureOfExperts(tasks, input_shape, n_experts, tuple(experts), tuple(towers), gate_per_task=False)
