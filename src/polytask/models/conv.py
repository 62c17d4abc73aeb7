"""Convolutional building blocks of the vision architectures: a small residual trunk (CPU-sized
"TinyRes": stem + stages of BasicBlocks, He et al. 2016) and task heads that fit the task's kind.

A head for a :class:`~polytask.dense.DenseTask` is conv3x3-BN-ReLU -> conv1x1 -> bilinear upsampling
to the input resolution (the MTAN / Vandenhende et al. head layout); a head for a per-image task
(classification, regression) is global average pooling -> Linear-ReLU -> Linear. So every architecture
built from these runs on dense datasets (``scenes``, NYUv2) and on image-level ones (``multidigits``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from polytask.dense import DenseTask
from polytask.errors import PolytaskError, TaskMismatchError
from polytask.tasks import Task

DEFAULT_WIDTHS = (16, 24, 32, 48)
DEFAULT_STRIDES = (2, 2, 1, 1)  # output at 1/4 of the input resolution


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class Stem(nn.Sequential):
    """conv3x3-BN-ReLU on the input images, checking their layout first (a clear error instead of a
    convolution's shape failure)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(*conv_bn_relu(cin, cout, 3, stride))
        self.in_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise TaskMismatchError(
                f"inputs: expected images (N, {self.in_channels}, H, W), got shape {tuple(x.shape)}"
            )
        return super().forward(x)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut, ReLU after the sum."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def stage(cin: int, cout: int, stride: int, blocks: int) -> nn.Sequential:
    """``blocks`` BasicBlocks, the first one changing width and resolution."""
    return nn.Sequential(*[BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(blocks)])


def check_image_shape(input_shape: Sequence[int], name: str) -> tuple[int, int, int]:
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise PolytaskError(f"{name} needs image inputs (C, H, W), got input_shape {tuple(input_shape)}")
    c, h, w = (int(v) for v in input_shape)
    return c, h, w


class ResTrunk(nn.Module):
    """Stem (conv3x3-BN-ReLU to ``widths[0]``) and one stage per width with the given strides.

    ``forward`` returns the last stage's output; ``stage_outputs`` every stage's. ``out_channels`` and
    ``stride`` (total down-sampling) describe the output."""

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        strides: Sequence[int] = DEFAULT_STRIDES,
        blocks: int = 2,
    ):
        super().__init__()
        if len(widths) != len(strides) or not widths:
            raise PolytaskError(f"ResTrunk: widths {tuple(widths)} and strides {tuple(strides)} must have equal length")
        if blocks < 1 or min(widths) < 1 or any(s not in (1, 2) for s in strides):
            raise PolytaskError("ResTrunk: blocks >= 1, widths >= 1 and strides in {1, 2}")
        self.widths, self.strides = tuple(int(w) for w in widths), tuple(int(s) for s in strides)
        self.stem = Stem(in_channels, self.widths[0])
        cins = (self.widths[0], *self.widths[:-1])
        self.stages = nn.ModuleList(stage(ci, co, s, blocks) for ci, co, s in zip(cins, self.widths, self.strides))
        self.out_channels = self.widths[-1]
        self.stride = 1
        for s in self.strides:
            self.stride *= s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for s in self.stages:
            x = s(x)
        return x


def scaled(widths: Sequence[int], factor: float) -> tuple[int, ...]:
    """Stage widths times ``factor`` (at least 4 channels each)."""
    return tuple(max(4, round(w * factor)) for w in widths)


class DenseHead(nn.Sequential):
    """conv3x3-BN-ReLU (skipped when ``hidden`` = 0) -> conv1x1 to the task's channels -> bilinear
    upsampling to ``size``."""

    def __init__(self, cin: int, out: int, size: tuple[int, int], hidden: int = 32):
        if hidden > 0:
            super().__init__(conv_bn_relu(cin, hidden), nn.Conv2d(hidden, out, 1))
        else:
            super().__init__(nn.Conv2d(cin, out, 1))
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if y.shape[-2:] != self.size:
            y = F.interpolate(y, size=self.size, mode="bilinear", align_corners=False)
        return y


class PooledHead(nn.Sequential):
    """Global average pooling -> Linear-ReLU (skipped when ``hidden`` = 0) -> Linear: a head for per-image
    tasks."""

    def __init__(self, cin: int, out: int, hidden: int = 32):
        linear = [nn.Linear(cin, hidden), nn.ReLU(), nn.Linear(hidden, out)] if hidden > 0 else [nn.Linear(cin, out)]
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), *linear)


def task_head(task: Task, cin: int, size: tuple[int, int], hidden: int = 32) -> nn.Module:
    """The head that fits ``task``: dense maps at ``size`` for a DenseTask, else one vector per image."""
    if isinstance(task, DenseTask):
        return DenseHead(cin, task.out_features, size, hidden)
    if task.kind in ("multiclass", "binary", "regression"):
        return PooledHead(cin, task.out_features, hidden)
    raise TaskMismatchError(f"no head for task {task.name!r} of kind {task.kind!r}")
