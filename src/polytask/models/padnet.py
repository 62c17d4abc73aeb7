"""PAD-Net (Xu, Ouyang, Wang & Sebe, CVPR 2018): prediction-and-distillation network.

A shared trunk; per task an initial-prediction module (two BasicBlocks to ``channels`` features f_t and a
1x1 initial prediction, deep-supervised with the task's own loss); then multi-modal distillation, the
attention-guided message passing of the paper's third variant (the one in Vandenhende et al.'s reference):

    d_t = f_t + Σ_{a≠t} sigmoid(W^att_{t,a} * f_a) ⊙ (W^msg_{t,a} * f_a),

with 3x3 convolutions W; each task's final head reads d_t. Decoder-focused: the tasks exchange
information after their first predictions, and the distillation grows with K(K − 1).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from polytask.errors import PolytaskError
from polytask.models.base import MultiTaskModel
from polytask.models.conv import DEFAULT_STRIDES, DEFAULT_WIDTHS, BasicBlock, ResTrunk, check_image_shape, task_head
from polytask.models.registry import register
from polytask.tasks import Task


class Distillation(nn.Module):
    """d_t = f_t + Σ_{a≠t} σ(conv_att(f_a)) ⊙ conv_msg(f_a), one pair of 3x3 convs per ordered task pair."""

    def __init__(self, tasks: Sequence[str], channels: int):
        super().__init__()
        self.tasks = list(tasks)
        pairs = [(t, a) for t in self.tasks for a in self.tasks if a != t]
        self.attention = nn.ModuleDict({f"{t}__{a}": nn.Conv2d(channels, channels, 3, padding=1) for t, a in pairs})
        self.message = nn.ModuleDict({f"{t}__{a}": nn.Conv2d(channels, channels, 3, padding=1) for t, a in pairs})

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for t in self.tasks:
            d = feats[t]
            for a in self.tasks:
                if a != t:
                    key = f"{t}__{a}"
                    d = d + torch.sigmoid(self.attention[key](feats[a])) * self.message[key](feats[a])
            out[t] = d
        return out

    def parameters_of(self, task: str) -> Iterator[nn.Parameter]:
        """The convolutions that produce task ``task``'s messages."""
        for key in self.attention:
            if key.startswith(f"{task}__"):
                yield from self.attention[key].parameters()
                yield from self.message[key].parameters()


@register(
    "padnet",
    "PAD-Net (Xu 2018): shared ResNet, per-task initial predictions, attention-guided multi-modal distillation",
    inputs=("image",),
    dense=True,
    baseline="hps_resnet",
)
class PADNet(MultiTaskModel):
    has_representation = False  # no single z that every task head reads

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: Sequence[int],
        channels: int = 32,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        strides: Sequence[int] = DEFAULT_STRIDES,
        blocks: int = 2,
        head_hidden: int = 32,
    ):
        super().__init__()
        c, h, w = check_image_shape(input_shape, "padnet")
        if channels < 1:
            raise PolytaskError(f"padnet: channels must be >= 1, got {channels}")
        self.tasks = [t.name for t in tasks]
        self.trunk = ResTrunk(c, widths, strides, blocks)
        cin = self.trunk.out_channels
        self.initial = nn.ModuleDict(
            {t: nn.Sequential(BasicBlock(cin, channels), BasicBlock(channels, channels)) for t in self.tasks}
        )
        self.initial_heads = nn.ModuleDict({t.name: task_head(t, channels, (h, w), hidden=0) for t in tasks})
        self.distill = Distillation(self.tasks, channels)
        self.heads = nn.ModuleDict({t.name: task_head(t, channels, (h, w), head_hidden) for t in tasks})
        self._initial_predictions: dict[str, list[torch.Tensor]] = {}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.trunk(x)
        feats = {t: self.initial[t](z) for t in self.tasks}
        self._initial_predictions = {t: [self.initial_heads[t](f)] for t, f in feats.items()} if self.training else {}
        distilled = self.distill(feats)
        return {t: self.heads[t](distilled[t]) for t in self.tasks}

    def intermediate_outputs(self) -> dict[str, list[torch.Tensor]]:
        """The initial predictions (deep supervision)."""
        return self._initial_predictions

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.trunk.parameters()
        if len(self.tasks) > 1:  # each task's initial features feed every other task's distillation
            yield from self.initial.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        self._check_task(task)
        if len(self.tasks) == 1:
            yield from self.initial[task].parameters()
        yield from self.initial_heads[task].parameters()
        yield from self.distill.parameters_of(task)
        yield from self.heads[task].parameters()
