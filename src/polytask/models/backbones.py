"""Shared encoders (backbones): input -> flat feature vector z, with ``out_features`` = dim z."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from polytask.errors import PolytaskError
from polytask.models.base import mlp


class MLPBackbone(nn.Module):
    """Flatten the input, then Linear layers of widths ``hidden``, each followed by ``activation``."""

    def __init__(
        self,
        input_shape: Sequence[int],
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.0,
        activation: str = "relu",
    ):
        super().__init__()
        if not hidden:
            raise PolytaskError("MLPBackbone: hidden needs at least one layer width")
        self.input_shape = tuple(input_shape)
        self.net = nn.Sequential(nn.Flatten(), mlp([math.prod(self.input_shape), *hidden], True, dropout, activation))
        self.out_features = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Conv(3x3)+ReLU+MaxPool(2) blocks of widths ``channels``, then Linear+ReLU to ``hidden``."""

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int] = (16, 32), hidden: int = 64):
        super().__init__()
        if len(input_shape) != 3:
            raise PolytaskError(f"SmallCNN needs (C, H, W) inputs, got input_shape {tuple(input_shape)}")
        c, h, w = input_shape
        blocks: list[nn.Module] = []
        for out in channels:
            blocks += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2
        if h < 1 or w < 1:
            raise PolytaskError(f"SmallCNN: input {tuple(input_shape)} too small for {len(channels)} pooling blocks")
        self.features = nn.Sequential(*blocks, nn.Flatten())
        self.project = nn.Sequential(nn.Linear(c * h * w, hidden), nn.ReLU())
        self.out_features = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(x))
