"""Input encoders: a batch's inputs -> one dense (N, d) vector per row, for the recommender models.

``input_shape`` is a tuple (dense inputs, flattened), a :class:`~polytask.features.FeatureSpec` (tabular
inputs: one embedding table per categorical field, concatenated with the numerical fields) or a
:class:`~polytask.features.SequenceSpec` (behaviour sequences, mean-pooled).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from polytask.errors import TaskMismatchError
from polytask.features import OOV, FeatureSpec, SequenceSpec


def oov_ids(ids: torch.Tensor, size: int | torch.Tensor) -> torch.Tensor:
    """Integer ids with every value outside [0, size) replaced by the OOV/padding id 0."""
    ids = ids.long()
    return torch.where((ids >= 0) & (ids < size), ids, torch.full_like(ids, OOV))


def _add_dtype_probe(module: nn.Module) -> None:
    """An empty floating buffer that ``model.double()`` / ``.half()`` / ``.to(dtype)`` convert with the
    parameters: inputs are cast to its dtype (so integer or float64 data feed a float32 model, and a
    float64 model gets float64 inputs). Not saved in the state dict."""
    module.register_buffer("float_dtype", torch.empty(0), persistent=False)


class TabularEmbedding(nn.Module):
    """Embeds every categorical field (out-of-range ids -> the OOV row 0) and appends the numerical ones."""

    def __init__(self, spec: FeatureSpec):
        super().__init__()
        self.spec = spec
        self.tables = nn.ModuleList(nn.Embedding(f.vocab_size, f.embed_dim) for f in spec.categorical)
        self.register_buffer("vocab", torch.tensor([f.vocab_size for f in spec.categorical], dtype=torch.long))
        _add_dtype_probe(self)
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
            ids = oov_ids(ids, self.vocab)
            parts += [table(ids[:, k]) for k, table in enumerate(self.tables)]
        if self.spec.numerical:
            num = x.get("numerical")
            if num is None or num.dim() != 2 or num.shape[1] != len(self.spec.numerical):
                got = None if num is None else tuple(num.shape)
                raise TaskMismatchError(f"numerical inputs: expected (N, {len(self.spec.numerical)}), got {got}")
            parts.append(num.to(self.float_dtype.dtype))
        return torch.cat(parts, dim=1)


class DenseInput(nn.Module):
    """Flattens dense inputs of shape ``input_shape``."""

    def __init__(self, input_shape: Sequence[int]):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.out_features = math.prod(self.input_shape)
        _add_dtype_probe(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != self.input_shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise TaskMismatchError(f"inputs: expected (N, {', '.join(map(str, self.input_shape))}), got {got}")
        return x.reshape(x.shape[0], -1).to(self.float_dtype.dtype)


class SequencePooling(nn.Module):
    """Behaviour sequences -> one vector: per event the sum of item, category, behaviour and gap embeddings,
    mean-pooled over the sequence, concatenated with the query category's embedding (the mean-pooling
    baseline to DUPN's LSTM + attention). Out-of-range ids -> 0."""

    FIELDS = ("item", "category", "behaviour", "gap")

    def __init__(self, spec: SequenceSpec, embed_dim: int = 16):
        super().__init__()
        sizes = {
            "item": spec.n_items,
            "category": spec.n_categories,
            "behaviour": spec.n_behaviours,
            "gap": spec.n_gaps,
        }
        self.sizes = sizes
        self.tables = nn.ModuleDict({f: nn.Embedding(n, embed_dim, padding_idx=0) for f, n in sizes.items()})
        self.out_features = 2 * embed_dim

    def forward(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        missing = [f for f in (*self.FIELDS, "query") if not isinstance(x, Mapping) or f not in x]
        if missing:
            raise TaskMismatchError(f"sequence inputs lack field(s) {missing}")
        events = sum(self.tables[f](oov_ids(x[f], self.sizes[f])) for f in self.FIELDS)
        query = self.tables["category"](oov_ids(x["query"], self.sizes["category"]))
        return torch.cat([events.mean(dim=1), query], dim=1)


def input_encoder(input_shape: Sequence[int] | FeatureSpec | SequenceSpec) -> nn.Module:
    """The encoder for ``input_shape``; ``.out_features`` is the width of its output."""
    if isinstance(input_shape, FeatureSpec):
        return TabularEmbedding(input_shape)
    if isinstance(input_shape, SequenceSpec):
        return SequencePooling(input_shape)
    return DenseInput(input_shape)
