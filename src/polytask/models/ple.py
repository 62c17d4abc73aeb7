"""CGC and PLE (Tang et al. 2020, "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL)
Model for Personalized Recommendations").

- CGC (Customized Gate Control): per task m_k task-specific experts plus m_s shared experts; task k's gate
  softmax(W_k x) mixes its own and the shared experts only; tower h_k on the mixture.
- PLE: L stacked extraction layers of CGC. At level l, task k's experts and gate read task k's output of
  level l − 1 and the shared experts read the shared output; on every non-final level a shared gate mixes
  *all* experts (every task's and the shared ones) into the shared output for the next level. The first
  level reads the (embedded) input everywhere.

Defaults: 1 task-specific and 1 shared expert per level, 2 levels for PLE (DeepCTR-Torch's defaults),
expert layers of 16 units and towers of 8 as for MMoE. ``model.gates`` keeps the final level's task gates.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from polytask.errors import PolytaskError
from polytask.features import FeatureSpec
from polytask.models.base import MultiTaskModel
from polytask.models.experts import Gate, expert, mix, tower
from polytask.models.inputs import input_encoder
from polytask.models.registry import register
from polytask.tasks import Task


class ExtractionLayer(nn.Module):
    """One CGC level: task-specific and shared experts, task gates, and (non-final) a shared gate."""

    def __init__(
        self, tasks: list[str], in_features: int, specific: int, shared: int, hidden: Sequence[int], final: bool
    ):
        super().__init__()
        if specific < 0 or shared < 0 or specific + shared < 1:
            raise PolytaskError(f"CGC needs >= 1 expert per task (specific={specific}, shared={shared})")
        self.tasks, self.final = tasks, final
        self.specific = nn.ModuleDict(
            {t: nn.ModuleList(expert(in_features, hidden) for _ in range(specific)) for t in tasks}
        )
        self.shared = nn.ModuleList(expert(in_features, hidden) for _ in range(shared))
        self.task_gates = nn.ModuleDict({t: Gate(in_features, specific + shared) for t in tasks})
        self.shared_gate = None if final else Gate(in_features, len(tasks) * specific + shared)
        self.out_features = hidden[-1]

    def forward(self, task_inputs: dict[str, torch.Tensor], shared_input: torch.Tensor):
        shared_out = [f(shared_input) for f in self.shared]
        own = {t: [f(task_inputs[t]) for f in self.specific[t]] for t in self.tasks}
        gates = {t: self.task_gates[t](task_inputs[t]) for t in self.tasks}
        task_out = {t: mix(gates[t], torch.stack(own[t] + shared_out, dim=1)) for t in self.tasks}
        shared_next = None
        if self.shared_gate is not None:
            everything = [o for t in self.tasks for o in own[t]] + shared_out
            shared_next = mix(self.shared_gate(shared_input), torch.stack(everything, dim=1))
        return task_out, shared_next, gates


class PLE(MultiTaskModel):
    """Stacked extraction layers (``levels`` = 1 is CGC). No single shared representation exists (task
    gates read the input), so ``representation`` stays ``None``."""

    has_representation = False  # no single z that every task head reads

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape,
        levels: int = 2,
        specific_experts: int = 1,
        shared_experts: int = 1,
        experts: Sequence[int] = (16,),
        towers: Sequence[int] = (8,),
    ):
        super().__init__()
        if levels < 1:
            raise PolytaskError(f"levels must be >= 1, got {levels}")
        self.tasks = [t.name for t in tasks]
        self.inputs = input_encoder(input_shape)
        widths = [self.inputs.out_features] + [experts[-1]] * (levels - 1)
        self.levels = nn.ModuleList(
            ExtractionLayer(self.tasks, w, specific_experts, shared_experts, experts, final=(i == levels - 1))
            for i, w in enumerate(widths)
        )
        self.towers = nn.ModuleDict({t.name: tower(experts[-1], towers, t) for t in tasks})
        self.gates: dict[str, torch.Tensor] = {}

    def forward(self, x) -> dict[str, torch.Tensor]:
        e = self.inputs(x)
        task_in, shared_in = dict.fromkeys(self.tasks, e), e
        for level in self.levels:
            task_in, shared_in, self.gates = level(task_in, shared_in)
        return {t: self.towers[t](task_in[t]) for t in self.tasks}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.inputs.parameters()
        for level in self.levels:
            yield from level.shared.parameters()
            if level.shared_gate is not None:
                yield from level.shared_gate.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        self._check_task(task)
        for level in self.levels:
            yield from level.specific[task].parameters()
            yield from level.task_gates[task].parameters()
        yield from self.towers[task].parameters()


@register(
    "cgc",
    "CGC (Tang et al. 2020): task-specific + shared experts, each task's gate mixes its own and shared",
    inputs=("vector", "tabular", "sequence"),
    dense=False,
)
def cgc(
    tasks: Sequence[Task],
    input_shape: Sequence[int] | FeatureSpec,
    specific_experts: int = 1,
    shared_experts: int = 1,
    experts: Sequence[int] = (16,),
    towers: Sequence[int] = (8,),
) -> PLE:
    return PLE(tasks, input_shape, 1, specific_experts, shared_experts, tuple(experts), tuple(towers))


@register(
    "ple",
    "PLE (Tang et al. 2020): stacked CGC levels, a shared gate over all experts on non-final levels",
    inputs=("vector", "tabular", "sequence"),
    dense=False,
)
def ple(
    tasks: Sequence[Task],
    input_shape: Sequence[int] | FeatureSpec,
    levels: int = 2,
    specific_experts: int = 1,
    shared_experts: int = 1,
    experts: Sequence[int] = (16,),
    towers: Sequence[int] = (8,),
) -> PLE:
    return PLE(tasks, input_shape, levels, specific_experts, shared_experts, tuple(experts), tuple(towers))
