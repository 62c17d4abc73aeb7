"""Input encoders: a batch's inputs -> one dense (N, d) vector per row, for the recommender models.

``input_shape`` is either a tuple (dense inputs, flattened) or a :class:`~polytask.features.FeatureSpec`
(tabular inputs: one embedding table per categorical field, concatenated with the numerical fields).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from polytask.errors import TaskMismatchError
from polytask.features import OOV, FeatureSpec


class TabularEmbedding(nn.Module):
    """Embeds every categorical field (out-of-range ids -> the OOV row 0) and appends the numerical ones."""

    def __init__(self, spec: FeatureSpec):
        super().__init__()
        self.spec = spec
        self.tables = nn.ModuleList(nn.Embedding(f.vocab_size, f.embed_dim) for f in spec.categorical)
        self.register_buffer("vocab", torch.tensor([f.vocab_size for f in spec.categorical], dtype=torch.long))
        self.out_features = spec.output_dim

    def forward(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if not isinstance(x, Mapping):
            raise TaskMismatchError("tabular models take {'categorical': (N, C) ids, 'numerical': (N, D)} inputs")
        parts = []
        if self.spec.categorical:
            ids = x.get("categorical")
            if ids is None or ids.dim() != 2 or ids.shape[1] != len(self.spec.categorical):
                got = None if ids is None else tuple(ids.shape)
                raise TaskMismatchError(f"categorical inputs: expected (N, {len(self.spec.categorical)}), got {got}")
            ids = ids.long()
            ids = torch.where((ids >= 0) & (ids < self.vocab), ids, torch.full_like(ids, OOV))
            parts += [table(ids[:, k]) for k, table in enumerate(self.tables)]
        if self.spec.numerical:
            num = x.get("numerical")
            if num is None or num.dim() != 2 or num.shape[1] != len(self.spec.numerical):
                got = None if num is None else tuple(num.shape)
                raise TaskMismatchError(f"numerical inputs: expected (N, {len(self.spec.numerical)}), got {got}")
            parts.append(num.float())
        return torch.cat(parts, dim=1)


class DenseInput(nn.Module):
    """Flattens dense inputs of shape ``input_shape``."""

    def __init__(self, input_shape: Sequence[int]):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.out_features = math.prod(self.input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != self.input_shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise TaskMismatchError(f"inputs: expected (N, {', '.join(map(str, self.input_shape))}), got {got}")
        return x.reshape(x.shape[0], -1).float()


def input_encoder(input_shape: Sequence[int] | FeatureSpec) -> nn.Module:
    """The encoder for ``input_shape``; ``.out_features`` is the width of its output."""
    return TabularEmbedding(input_shape) if isinstance(input_shape, FeatureSpec) else DenseInput(input_shape)
