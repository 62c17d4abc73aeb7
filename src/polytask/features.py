"""Tabular inputs: which fields a dataset has and how a batch carries them.

A tabular batch is ``{"categorical": LongTensor (N, C), "numerical": FloatTensor (N, D)}`` (either may be
absent). Category ids are integers in [0, vocab_size); id 0 is reserved for "unknown" (OOV): loaders map
unseen values to 0 and the embedding layer maps any out-of-range id to 0 as well, so new data never crashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from polytask.errors import PolytaskError

OOV = 0


@dataclass(frozen=True)
class CategoricalField:
    """A categorical field with ``vocab_size`` ids (0 = OOV included) embedded in ``embed_dim`` dims."""

    name: str
    vocab_size: int
    embed_dim: int = 8

    def __post_init__(self) -> None:
        if self.vocab_size < 1 or self.embed_dim < 1:
            raise PolytaskError(f"field {self.name!r}: vocab_size and embed_dim must be >= 1")


@dataclass(frozen=True)
class FeatureSpec:
    """The fields of a tabular dataset: categorical (embedded) and numerical (used as they are)."""

    categorical: tuple[CategoricalField, ...] = ()
    numerical: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [f.name for f in self.categorical] + list(self.numerical)
        if not names:
            raise PolytaskError("FeatureSpec needs at least one field")
        if len(set(names)) != len(names):
            raise PolytaskError(f"FeatureSpec: duplicate field names in {names}")

    @property
    def output_dim(self) -> int:
        """Width of the dense vector the embedding layer makes of one row."""
        return sum(f.embed_dim for f in self.categorical) + len(self.numerical)

    def with_embed_dim(self, embed_dim: int) -> FeatureSpec:
        """The same fields with every categorical embedding ``embed_dim`` wide."""
        fields = tuple(CategoricalField(f.name, f.vocab_size, embed_dim) for f in self.categorical)
        return FeatureSpec(fields, self.numerical)


@dataclass(frozen=True)
class SequenceSpec:
    """Behaviour sequences: per row, ``length`` events of (item, category, behaviour type, time-gap bucket)
    ids and one query-category id; a batch is ``{"item", "category", "behaviour", "gap": (N, L) long,
    "query": (N,) long}``. Id 0 is padding/OOV in every field."""

    n_items: int
    n_categories: int
    n_behaviours: int
    n_gaps: int
    length: int

    def __post_init__(self) -> None:
        if min(self.n_items, self.n_categories, self.n_behaviours, self.n_gaps, self.length) < 1:
            raise PolytaskError("SequenceSpec: every size must be >= 1")


def categorical(names: Sequence[str], vocab_sizes: Sequence[int], embed_dim: int = 8) -> tuple[CategoricalField, ...]:
    """Fields ``names`` with the given vocabulary sizes and one embedding width."""
    return tuple(CategoricalField(n, int(v), embed_dim) for n, v in zip(names, vocab_sizes))


__all__ = ["OOV", "CategoricalField", "FeatureSpec", "SequenceSpec", "categorical"]
