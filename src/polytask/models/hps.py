"""Hard parameter sharing (Caruana 1997): one shared encoder, one head per task.

The parameter-count lower bound of multi-task designs. With a single task it is the single-task
baseline network of the same backbone.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from polytask.errors import PolytaskError
from polytask.models.backbones import MLPBackbone, SmallCNN
from polytask.models.base import MultiTaskModel, mlp
from polytask.models.conv import DEFAULT_STRIDES, DEFAULT_WIDTHS, ResTrunk, check_image_shape, task_head
from polytask.models.registry import register
from polytask.tasks import Task


class HPS(MultiTaskModel):
    """``encoder`` (shared, output z) and ``heads`` ({task: module reading z})."""

    has_representation = True

    def __init__(self, encoder: nn.Module, heads: Mapping[str, nn.Module]):
        super().__init__()
        if not heads:
            raise PolytaskError("HPS needs at least one task head")
        self.encoder = encoder
        self.heads = nn.ModuleDict(dict(heads))
        self.tasks = list(heads)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encoder(x)
        self.representation = z
        return {t: head(z) for t, head in self.heads.items()}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.encoder.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        self._check_task(task)
        return self.heads[task].parameters()


def make_heads(tasks: Sequence[Task], in_features: int, head_hidden: int) -> dict[str, nn.Module]:
    """One head per task: Linear (``head_hidden`` = 0) or Linear+ReLU+Linear."""
    sizes = [in_features, head_hidden] if head_hidden > 0 else [in_features]
    return {t.name: mlp([*sizes, t.out_features]) for t in tasks}


@register(
    "hps_mlp",
    "Hard parameter sharing, MLP encoder (flattened input) + per-task heads",
    inputs=("vector", "image"),
    dense=False,
)
def hps_mlp(
    tasks: Sequence[Task],
    input_shape: Sequence[int],
    hidden: Sequence[int] = (128, 64),
    head_hidden: int = 32,
    dropout: float = 0.0,
    activation: str = "relu",
) -> HPS:
    encoder = MLPBackbone(input_shape, hidden, dropout, activation)
    return HPS(encoder, make_heads(tasks, encoder.out_features, head_hidden))


@register(
    "hps_cnn",
    "Hard parameter sharing, small CNN encoder + per-task heads",
    inputs=("image",),
    dense=False,
)
def hps_cnn(
    tasks: Sequence[Task],
    input_shape: Sequence[int],
    channels: Sequence[int] = (16, 32),
    hidden: int = 64,
    head_hidden: int = 32,
) -> HPS:
    encoder = SmallCNN(input_shape, channels, hidden)
    return HPS(encoder, make_heads(tasks, encoder.out_features, head_hidden))


@register(
    "hps_resnet",
    "Hard parameter sharing, small residual trunk + per-task conv (dense) or pooled heads",
    inputs=("image",),
    dense=True,
)
def hps_resnet(
    tasks: Sequence[Task],
    input_shape: Sequence[int],
    widths: Sequence[int] = DEFAULT_WIDTHS,
    strides: Sequence[int] = DEFAULT_STRIDES,
    blocks: int = 2,
    head_hidden: int = 32,
) -> HPS:
    """The vision baseline (and, with one task, the single-task network) of the dense architectures."""
    c, h, w = check_image_shape(input_shape, "hps_resnet")
    trunk = ResTrunk(c, widths, strides, blocks)
    return HPS(trunk, {t.name: task_head(t, trunk.out_channels, (h, w), head_hidden) for t in tasks})
