"""MTI-Net (Vandenhende, Georgoulis & Van Gool, ECCV 2020): multi-scale task interaction networks.

The trunk's stage outputs give S scales (1/2 ... 1/16 of the input with the default strides). From the
coarsest scale to the finest, per task, an initial-prediction module (two BasicBlocks) reads the trunk's
feature at that scale, concatenated with the task's ×2-upsampled feature-propagation output from the
coarser scale, and makes an initial prediction (deep-supervised at every scale). The feature-propagation
module (FPM) lets the tasks interact before the next scale:

    x = [f_1 .. f_K];  w = softmax over tasks of conv1x1(conv-BN-ReLU(x));  u = BasicBlock(Σ_t w_t ⊙ f_t);
    out_t = f_t + SE_t(u)   (a per-task squeeze-and-excitation gate, reduction ``se_reduction``).

PAD-Net's multi-modal distillation then runs at every scale, and each task's head reads the
concatenation of its distilled features from all scales, upsampled to the finest one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from polytask.errors import PolytaskError
from polytask.models.base import MultiTaskModel
from polytask.models.conv import DEFAULT_WIDTHS, BasicBlock, ResTrunk, check_image_shape, conv_bn_relu, task_head
from polytask.models.padnet import Distillation
from polytask.models.registry import register
from polytask.tasks import Task


class SqueezeExcite(nn.Module):
    """x ⊙ sigmoid(W2 ReLU(W1 GAP(x))) (Hu et al. 2018)."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        mid = max(1, channels // reduction)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, mid, 1), nn.ReLU(), nn.Conv2d(mid, channels, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class FeaturePropagation(nn.Module):
    """The FPM: a task-attention-weighted fusion of all tasks' features, refined, then SE-gated per task
    and added to each task's own feature."""

    def __init__(self, tasks: Sequence[str], channels: int, se_reduction: int):
        super().__init__()
        self.tasks = list(tasks)
        k = len(self.tasks)
        self.weights = nn.Sequential(conv_bn_relu(k * channels, channels), nn.Conv2d(channels, k * channels, 1))
        self.refine = BasicBlock(channels, channels)
        self.se = nn.ModuleDict({t: SqueezeExcite(channels, se_reduction) for t in self.tasks})

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        stacked = torch.stack([feats[t] for t in self.tasks], dim=1)  # (N, K, C, H, W)
        n, k, c, h, w = stacked.shape
        attention = self.weights(stacked.reshape(n, k * c, h, w)).reshape(n, k, c, h, w).softmax(dim=1)
        shared = self.refine((attention * stacked).sum(1))
        return {t: feats[t] + self.se[t](shared) for t in self.tasks}


@register(
    "mtinet",
    "MTI-Net (Vandenhende 2020): multi-scale initial predictions, feature propagation and distillation",
    inputs=("image",),
    dense=True,
    baseline="hps_resnet",
)
class MTINet(MultiTaskModel):
    has_representation = False  # no single z that every task head reads

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: Sequence[int],
        widths: Sequence[int] = DEFAULT_WIDTHS,
        strides: Sequence[int] = (2, 2, 2, 2),
        blocks: int = 2,
        se_reduction: int = 4,
        head_hidden: int = 32,
    ):
        super().__init__()
        c, h, w = check_image_shape(input_shape, "mtinet")
        if len(widths) < 2:
            raise PolytaskError("mtinet: needs at least two scales (stages)")
        self.tasks = [t.name for t in tasks]
        self.trunk = ResTrunk(c, widths, strides, blocks)
        ws = self.trunk.widths
        coarsest = len(ws) - 1
        self.initial = nn.ModuleList(
            nn.ModuleDict(
                {
                    t: nn.Sequential(
                        BasicBlock(ws[s] + (ws[s + 1] if s < coarsest else 0), ws[s]), BasicBlock(ws[s], ws[s])
                    )
                    for t in self.tasks
                }
            )
            for s in range(len(ws))
        )
        self.initial_heads = nn.ModuleList(
            nn.ModuleDict({t.name: task_head(t, ws[s], (h, w), hidden=0) for t in tasks}) for s in range(len(ws))
        )
        # FPMs carry scale s + 1 to scale s (none from the finest scale)
        self.propagate = nn.ModuleList(FeaturePropagation(self.tasks, ws[s], se_reduction) for s in range(1, len(ws)))
        self.distill = nn.ModuleList(Distillation(self.tasks, ws[s]) for s in range(len(ws)))
        self.heads = nn.ModuleDict({t.name: task_head(t, sum(ws), (h, w), head_hidden) for t in tasks})
        self._initial_predictions: dict[str, list[torch.Tensor]] = {}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.trunk.stem(x)
        scales = []
        for stage in self.trunk.stages:
            x = stage(x)
            scales.append(x)
        carried: dict[str, torch.Tensor] | None = None
        distilled: list[dict[str, torch.Tensor]] = [{} for _ in scales]
        initial: dict[str, list[torch.Tensor]] = {t: [] for t in self.tasks}
        for s in reversed(range(len(scales))):
            feats = {}
            for t in self.tasks:
                inp = scales[s]
                if carried is not None:
                    inp = torch.cat([inp, F.interpolate(carried[t], size=inp.shape[-2:], mode="bilinear")], dim=1)
                feats[t] = self.initial[s][t](inp)
                if self.training:
                    initial[t].append(self.initial_heads[s][t](feats[t]))
            distilled[s] = self.distill[s](feats)
            if s > 0:
                carried = self.propagate[s - 1](feats)
        self._initial_predictions = initial if self.training else {}
        size = scales[0].shape[-2:]
        out = {}
        for t in self.tasks:
            maps = [
                d[t] if d[t].shape[-2:] == size else F.interpolate(d[t], size=size, mode="bilinear") for d in distilled
            ]
            out[t] = self.heads[t](torch.cat(maps, dim=1))
        return out

    def intermediate_outputs(self) -> dict[str, list[torch.Tensor]]:
        """The initial predictions at every scale (deep supervision)."""
        return self._initial_predictions

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.trunk.parameters()
        if len(self.tasks) > 1:  # every task's initial features reach every task through FPMs and distillation
            yield from self.initial.parameters()
            for fpm in self.propagate:
                yield from fpm.weights.parameters()
                yield from fpm.refine.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        self._check_task(task)
        if len(self.tasks) == 1:
            for level in self.initial:
                yield from level[task].parameters()
            for fpm in self.propagate:
                yield from fpm.weights.parameters()
                yield from fpm.refine.parameters()
        for level in self.initial_heads:
            yield from level[task].parameters()
        for fpm in self.propagate:
            yield from fpm.se[task].parameters()
        for d in self.distill:
            yield from d.parameters_of(task)
        yield from self.heads[task].parameters()
