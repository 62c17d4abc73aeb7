"""Multi-Task Attention Network, MTAN (Liu, Johns & Davison, CVPR 2019), on a residual trunk.

A shared trunk plus, per task, a soft attention module at every stage (the ResNet layout of
Vandenhende et al.'s reference): with u_j the stage's features before its last block and p_j its output,

    a_j = sigmoid(BN(conv1x1(ReLU(BN(conv1x1([u_j, f_{j-1}(â_{j-1})]))))))),   â_j = a_j ⊙ p_j,

where [·,·] concatenates channels (only u_0 at the first stage), the middle width is C_j / 4, and
f_{j-1} is a task-shared 3x3 conv-BN-ReLU (stride of stage j) carrying the attended feature to the next
stage. Each head reads its task's last â. Only the attention modules are per task, so parameters grow
sub-linearly in K.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from polytask.errors import PolytaskError
from polytask.models.base import MultiTaskModel
from polytask.models.conv import DEFAULT_STRIDES, DEFAULT_WIDTHS, ResTrunk, check_image_shape, conv_bn_relu, task_head
from polytask.models.registry import register
from polytask.tasks import Task


def attention(cin: int, channels: int) -> nn.Sequential:
    mid = max(1, channels // 4)
    return nn.Sequential(
        nn.Conv2d(cin, mid, 1, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(),
        nn.Conv2d(mid, channels, 1, bias=False),
        nn.BatchNorm2d(channels),
        nn.Sigmoid(),
    )


@register(
    "mtan",
    "MTAN (Liu 2019): shared ResNet + per-task attention modules at every stage",
    inputs=("image",),
    dense=True,
    baseline="hps_resnet",
)
class MTAN(MultiTaskModel):
    has_representation = False  # no single z that every task head reads

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: Sequence[int],
        widths: Sequence[int] = DEFAULT_WIDTHS,
        strides: Sequence[int] = DEFAULT_STRIDES,
        blocks: int = 2,
        head_hidden: int = 32,
    ):
        super().__init__()
        c, h, w = check_image_shape(input_shape, "mtan")
        if blocks < 2:
            raise PolytaskError("mtan: the attention reads the stage before its last block, so blocks must be >= 2")
        self.tasks = [t.name for t in tasks]
        self.trunk = ResTrunk(c, widths, strides, blocks)
        ws = self.trunk.widths
        self.carry = nn.ModuleList(conv_bn_relu(ws[j - 1], ws[j], 3, self.trunk.strides[j]) for j in range(1, len(ws)))
        self.attention = nn.ModuleDict(
            {
                t: nn.ModuleList(attention(ws[j] * (1 if j == 0 else 2), ws[j]) for j in range(len(ws)))
                for t in self.tasks
            }
        )
        self.heads = nn.ModuleDict({t.name: task_head(t, ws[-1], (h, w), head_hidden) for t in tasks})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.trunk.stem(x)
        attended: dict[str, torch.Tensor] = {}
        for j, stage in enumerate(self.trunk.stages):
            u = stage[:-1](x)
            x = stage[-1](u)
            for t in self.tasks:
                inp = u if j == 0 else torch.cat([u, self.carry[j - 1](attended[t])], dim=1)
                attended[t] = self.attention[t][j](inp) * x
        return {t: self.heads[t](attended[t]) for t in self.tasks}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.trunk.parameters()
        yield from self.carry.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        self._check_task(task)
        yield from self.attention[task].parameters()
        yield from self.heads[task].parameters()
