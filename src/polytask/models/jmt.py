"""Hierarchical supervision after the Joint Many-Task model (Hashimoto, Xiong, Tsuruoka & Socher, EMNLP
2017), for images.

Tasks are supervised at increasing depths, lower-level tasks first (by default ordered by kind: edges,
normals, depth, segmentation, then image-level tasks; ``order`` overrides). A shared encoder (stem and
one stage, 1/4 resolution) gives e; level j's stage reads [h_{j-1}, e, emb_{j-1}] — the previous level's
features, a shortcut of the encoder output (the paper's shortcut connections to the input), and an
embedding (1x1 convolution, ``label_channels`` wide) of the previous task's predicted label distribution
(softmax for classes, sigmoid for edges, the values for regression) — and task j's head reads h_j.

Successive regularisation: the paper trains the levels in turn and keeps each lower level's parameters
close to their values after its own training stage, δ‖θ − θ'‖². Training here is joint (every task in
every step), so a stage is ``stage_steps`` training steps: θ' is the snapshot of the parameters below the
top level (encoder, lower levels, their heads and label embeddings) at the start of the current stage,
and the penalty δ Σ ‖θ − θ'‖² (``delta``, paper 1e-2) keeps
the lower levels from drifting while higher tasks train on them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from polytask.dense import DenseTask
from polytask.errors import PolytaskError
from polytask.models.base import MultiTaskModel
from polytask.models.conv import BasicBlock, Stem, check_image_shape, stage, task_head
from polytask.models.registry import register
from polytask.tasks import Task

LEVEL = {"edges": 0, "normals": 1, "depth": 2, "segmentation": 3}


def default_order(tasks: Sequence[Task]) -> list[str]:
    """Low-level tasks first: edges, normals, depth, segmentation, then image-level tasks (stable)."""
    return [t.name for t in sorted(tasks, key=lambda t: LEVEL.get(t.kind, 4) if isinstance(t, DenseTask) else 4)]


def label_distribution(task: Task, pred: torch.Tensor) -> torch.Tensor:
    """The prediction as the next level sees it: class probabilities, edge probabilities or values."""
    if task.kind in ("segmentation", "multiclass"):
        return pred.softmax(dim=1)
    if task.kind in ("edges", "binary"):
        return torch.sigmoid(pred)
    return pred


@register(
    "jmt",
    "Hierarchical supervision (Joint Many-Task, Hashimoto 2017): tasks at increasing depths, successive reg.",
    inputs=("image",),
    dense=True,
    baseline="hps_resnet",
)
class JointManyTask(MultiTaskModel):
    has_representation = False  # no single z that every task head reads

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: Sequence[int],
        order: Sequence[str] | None = None,
        width: int = 32,
        label_channels: int = 8,
        delta: float = 1e-2,
        stage_steps: int = 100,
        blocks: int = 2,
        head_hidden: int = 32,
    ):
        super().__init__()
        c, h, w = check_image_shape(input_shape, "jmt")
        by_name = {t.name: t for t in tasks}
        self.order = list(order) if order is not None else default_order(tasks)
        if sorted(self.order) != sorted(by_name):
            raise PolytaskError(f"jmt: order {self.order} must list every task once: {sorted(by_name)}")
        if delta < 0 or stage_steps < 1:
            raise PolytaskError("jmt: delta >= 0 and stage_steps >= 1 are required")
        self.tasks = [t.name for t in tasks]
        self.task_objs = by_name
        self.delta, self.stage_steps = float(delta), int(stage_steps)
        self.encoder = nn.Sequential(Stem(c, width, stride=2), stage(width, width, 2, blocks))
        self.levels = nn.ModuleList()
        self.embeddings = nn.ModuleList()
        for j in range(len(self.order)):
            extra = 0 if j == 0 else width + label_channels  # [h_{j-1}, e, emb_{j-1}] after the first level
            self.levels.append(
                nn.Sequential(BasicBlock(width + extra, width), *[BasicBlock(width, width) for _ in range(blocks - 1)])
            )
            prev = by_name[self.order[j - 1]] if j > 0 else None
            self.embeddings.append(nn.Identity() if prev is None else nn.Conv2d(prev.out_features, label_channels, 1))
        self.heads = nn.ModuleDict({t.name: task_head(t, width, (h, w), head_hidden) for t in tasks})
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._snapshot: list[torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        e = self.encoder(x)
        out: dict[str, torch.Tensor] = {}
        h = e
        for j, name in enumerate(self.order):
            if j > 0:
                prev = self.order[j - 1]
                dist = label_distribution(self.task_objs[prev], out[prev])
                if dist.dim() == 2:  # an image-level prediction: the same label vector at every position
                    dist = dist[:, :, None, None].expand(-1, -1, *e.shape[-2:])
                else:
                    dist = F.adaptive_avg_pool2d(dist, e.shape[-2:])
                h = torch.cat([h, e, self.embeddings[j](dist)], dim=1)
            h = self.levels[j](h)
            out[name] = self.heads[name](h)
        return {t: out[t] for t in self.tasks}

    def _lower_parameters(self) -> list[nn.Parameter]:
        """Everything below the top level: the encoder, the lower levels with their heads (their predictions
        feed the levels above) and label embeddings; all of it reaches more than one task."""
        params = list(self.encoder.parameters())
        for j, name in enumerate(self.order[:-1]):
            params += list(self.levels[j].parameters()) + list(self.embeddings[j].parameters())
            params += list(self.heads[name].parameters())
        return params

    def regularization(self) -> torch.Tensor | None:
        """δ Σ ‖θ − θ'‖² over the lower levels, θ' their values at the start of the current stage."""
        if self.delta == 0 or len(self.order) < 2 or not self.training:
            return None
        lower = self._lower_parameters()
        if self._snapshot is None or int(self.steps) % self.stage_steps == 0:
            self._snapshot = [p.detach().clone() for p in lower]
        self.steps += 1
        return self.delta * sum((p - q).pow(2).sum() for p, q in zip(lower, self._snapshot))

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        if len(self.order) > 1:
            yield from self._lower_parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        self._check_task(task)
        if task == self.order[-1]:  # the top level reaches only its own task
            if len(self.order) == 1:
                yield from self.encoder.parameters()
            yield from self.levels[-1].parameters()
            yield from self.embeddings[-1].parameters()
            yield from self.heads[task].parameters()
