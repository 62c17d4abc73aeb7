"""Row-sparse per-task gradients, as ``nn.Embedding(sparse=True)`` gives them.

Task k's gradient of a (V, D) table touches only the rows its batch looked up. The K gradients are held
as the rows any task touched, U (u,), and their values (K, u, D): zero outside U for every task, so this
block is an exact, compressed stand-in for the dense (K, V, D) one. Gram contributions, projections and
any other per-entry operation give the same numbers on it, and Σ_k w_k g_k goes back to a sparse (V, D)
gradient (the kind a sparse optimizer such as SparseAdam expects) on U.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from polytask.errors import PolytaskError


@dataclass
class SparseRows:
    """The K gradients of one table on the rows ``rows`` any of them touches: ``values`` (K, u, *row)."""

    rows: torch.Tensor
    values: torch.Tensor
    shape: torch.Size

    def expand(self, compressed: torch.Tensor) -> torch.Tensor:
        """A (u, *row) tensor on ``rows`` as the sparse gradient of the whole table."""
        return torch.sparse_coo_tensor(  # rows come sorted and unique from torch.unique
            self.rows[None], compressed, self.shape, is_coalesced=True, check_invariants=False
        )

    def combine(self, weights: torch.Tensor) -> torch.Tensor:
        """Σ_k w_k g_k, sparse."""
        return self.expand(torch.tensordot(weights.to(self.values.dtype), self.values, dims=1))


def stack_rows(grads: Sequence[torch.Tensor | None], like: torch.Tensor) -> SparseRows:
    """The K gradients of ``like`` (sparse, dense or None: no gradient) as one :class:`SparseRows`."""
    parts = []
    for g in grads:
        if g is None:
            parts.append(None)
            continue
        if not g.is_sparse:
            g = g.to_sparse(1)  # a task whose gradient came dense: its nonzero rows
        if g.sparse_dim() != 1:
            raise PolytaskError(
                f"per-task gradients: a sparse gradient with {g.sparse_dim()} sparse dimensions; only row-sparse "
                "ones (nn.Embedding(sparse=True)) are supported"
            )
        g = g.coalesce()
        parts.append((g.indices()[0], g.values()))
    present = [p for p in parts if p is not None]
    rows = torch.unique(torch.cat([i for i, _ in present])) if present else like.new_zeros(0, dtype=torch.long)
    values = like.new_zeros((len(grads), rows.numel(), *like.shape[1:]))
    for k, part in enumerate(parts):
        if part is not None:
            index, value = part
            values[k].index_add_(0, torch.searchsorted(rows, index), value.to(values.dtype))
    return SparseRows(rows, values, like.shape)
