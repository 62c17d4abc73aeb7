"""``ColumnNetwork``: one residual trunk ("column") per task, with an optional fusion module after each
stage that mixes the K columns' features. The base of the soft-sharing family: soft parameter sharing
(no fusion, a penalty), Cross-Stitch, NDDR-CNN and Sluice networks. Parameters grow linearly in K.

With fusion, every column influences every task, so the columns and the fusion modules are the shared
parameters; without it (soft sharing) each column belongs to its own task and nothing is shared.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from polytask.errors import PolytaskError
from polytask.models.base import MultiTaskModel
from polytask.models.conv import DEFAULT_STRIDES, DEFAULT_WIDTHS, ResTrunk, check_image_shape, scaled, task_head
from polytask.tasks import Task


class ColumnNetwork(MultiTaskModel):
    """K columns of stage widths ``widths`` x ``width_factor``; subclasses set ``self.fusions`` (one module
    per stage, mapping the list of K features to K features, or ``None`` for no mixing)."""

    has_representation = False  # no single z that every task head reads

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: Sequence[int],
        widths: Sequence[int] = DEFAULT_WIDTHS,
        strides: Sequence[int] = DEFAULT_STRIDES,
        blocks: int = 2,
        width_factor: float = 1.0,
        head_hidden: int = 32,
    ):
        super().__init__()
        self.fusions: nn.ModuleList | None = None  # set by subclasses after this __init__
        self.unit_lr_mult = 1.0  # learning-rate multiple of the fusion modules
        if not tasks:
            raise PolytaskError(f"{type(self).__name__} needs at least one task")
        c, h, w = check_image_shape(input_shape, type(self).__name__)
        self.tasks = [t.name for t in tasks]
        self.widths = scaled(widths, width_factor)
        self.columns = nn.ModuleList(ResTrunk(c, self.widths, strides, blocks) for _ in tasks)
        out = self.columns[0].out_channels
        self.heads = nn.ModuleDict({t.name: task_head(t, out, (h, w), head_hidden) for t in tasks})

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The K columns' features after the last stage (and its fusion)."""
        feats = [col.stem(x) for col in self.columns]
        for j in range(len(self.widths)):
            feats = [col.stages[j](f) for col, f in zip(self.columns, feats)]
            if self.fusions is not None:
                feats = self.fusions[j](feats)
        return feats

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.stage_features(x)
        return {t: self.heads[t](f) for t, f in zip(self.tasks, feats)}

    def param_groups(self, lr: float) -> list[dict]:
        if self.fusions is None or self.unit_lr_mult == 1.0:
            return super().param_groups(lr)
        units = {id(p) for p in self.fusions.parameters()}
        rest = [p for p in self.parameters() if id(p) not in units]
        return [{"params": rest, "lr": lr}, {"params": list(self.fusions.parameters()), "lr": lr * self.unit_lr_mult}]

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        if self.fusions is None or len(self.tasks) == 1:
            return iter(())
        yield from self.columns.parameters()
        yield from self.fusions.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        self._check_task(task)
        k = self.tasks.index(task)
        if self.fusions is None or len(self.tasks) == 1:
            yield from self.columns[k].parameters()
            if self.fusions is not None:
                yield from self.fusions.parameters()
        yield from self.heads[task].parameters()
