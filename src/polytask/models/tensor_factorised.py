"""Tensor-factorised sharing: Deep Multi-Task Representation Learning (Yang & Hospedales, ICLR 2017).

One network per task, but for every convolution the K tasks' weights, flattened to D1 (fan-in) x D2
(fan-out) and stacked into W ∈ R^{D1 x D2 x K}, are generated from a decomposition whose feature factors
are shared and whose task factor is per task:

- ``tucker``: W = S ×1 U1 ×2 U2 ×3 U3, core S (r1 x r2 x r3), U1 (D1 x r1), U2 (D2 x r2) shared, row k of
  U3 (K x r3) is task k's;
- ``tt`` (tensor train): W[i, j, k] = Σ_{a,b} G1[i, a] G2[a, j, b] G3[b, k], G1 and G2 shared, column k
  of G3 task k's.

The ranks (``rank`` for the feature modes, ``task_rank`` for the task mode of Tucker) set how much is
shared. As in the reference, the factors are initialised by decomposing the stacked per-task weights
(truncated HOSVD for Tucker, TT-SVD for the train); the reference decomposes single-task-trained weights,
we decompose freshly initialised ones. BatchNorm layers and heads stay per task.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from polytask.errors import PolytaskError
from polytask.models.base import MultiTaskModel
from polytask.models.conv import DEFAULT_STRIDES, DEFAULT_WIDTHS, ResTrunk, check_image_shape, task_head
from polytask.models.registry import register
from polytask.tasks import Task

FORMATS = ("tucker", "tt")


def _leading(matrix: torch.Tensor, r: int) -> torch.Tensor:
    u, _, _ = torch.linalg.svd(matrix, full_matrices=False)
    return u[:, :r]


def tucker_init(w: torch.Tensor, ranks: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Truncated HOSVD of W (D1, D2, K): core and the three factor matrices."""
    factors = [_leading(w.movedim(m, 0).reshape(w.shape[m], -1), r) for m, r in enumerate(ranks)]
    core = torch.einsum("ijk,ia,jb,kc->abc", w, *factors)
    return core, factors


def tucker_weight(core: torch.Tensor, factors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.einsum("abc,ia,jb,kc->ijk", core, *factors)


def tt_init(w: torch.Tensor, ranks: Sequence[int]) -> list[torch.Tensor]:
    """TT-SVD of W (D1, D2, K) into G1 (D1, r1), G2 (r1, D2, r2), G3 (r2, K)."""
    d1, d2, k = w.shape
    r1, r2 = ranks
    u, s, vh = torch.linalg.svd(w.reshape(d1, d2 * k), full_matrices=False)
    g1 = u[:, :r1]
    rest = (s[:r1, None] * vh[:r1]).reshape(r1 * d2, k)
    u, s, vh = torch.linalg.svd(rest, full_matrices=False)
    g2 = u[:, :r2].reshape(r1, d2, -1)
    g3 = s[:r2, None] * vh[:r2]
    return [g1, g2, g3]


def tt_weight(g1: torch.Tensor, g2: torch.Tensor, g3: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ia,ajb,bk->ijk", g1, g2, g3)


class FactorisedBank(nn.Module):
    """The decomposition of one layer's stacked weights; ``weight()`` rebuilds W (D1, D2, K)."""

    def __init__(self, stacked: torch.Tensor, fmt: str, rank: int, task_rank: int):
        super().__init__()
        d1, d2, k = stacked.shape
        self.fmt = fmt
        if fmt == "tucker":
            core, factors = tucker_init(stacked, (min(d1, rank), min(d2, rank), min(k, task_rank)))
            self.core = nn.Parameter(core)
            self.u1, self.u2, self.task = (nn.Parameter(f) for f in factors)  # task: (K, r3)
        else:
            r1 = min(d1, rank, d2 * k)
            g1, g2, g3 = tt_init(stacked, (r1, min(rank, k, r1 * d2)))
            self.g1, self.g2 = nn.Parameter(g1), nn.Parameter(g2)
            self.task = nn.Parameter(g3.T.contiguous())  # (K, r2): row k is task k's

    def weight(self) -> torch.Tensor:
        if self.fmt == "tucker":
            return tucker_weight(self.core, [self.u1, self.u2, self.task])
        return tt_weight(self.g1, self.g2, self.task.T)

    def shared(self) -> list[nn.Parameter]:
        return [self.core, self.u1, self.u2] if self.fmt == "tucker" else [self.g1, self.g2]


class FactorisedConv(nn.Module):
    """A convolution whose weight is task ``k``'s slice of a bank (stride/padding of the original)."""

    def __init__(self, owner: TensorFactorised, layer: str, k: int, conv: nn.Conv2d):
        super().__init__()
        self.layer, self.k, self.shape = layer, k, tuple(conv.weight.shape)
        self.stride, self.padding = conv.stride, conv.padding
        object.__setattr__(self, "owner", owner)  # a plain reference, not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.owner.layer_weights[self.layer][:, :, self.k]  # (D1, D2)
        weight = w.T.reshape(self.shape)
        return F.conv2d(x, weight, None, self.stride, self.padding)


class TensorFactorised(MultiTaskModel):
    has_representation = False  # no single z that every task head reads

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: Sequence[int],
        fmt: str = "tucker",
        rank: int = 16,
        task_rank: int | None = None,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        strides: Sequence[int] = DEFAULT_STRIDES,
        blocks: int = 2,
        head_hidden: int = 32,
    ):
        super().__init__()
        c, h, w = check_image_shape(input_shape, "tensor_factorised")
        if fmt not in FORMATS:
            raise PolytaskError(f"tensor_factorised: format must be one of {FORMATS}, got {fmt!r}")
        if rank < 1 or (task_rank is not None and task_rank < 1):
            raise PolytaskError("tensor_factorised: rank and task_rank must be >= 1")
        self.tasks = [t.name for t in tasks]
        k = len(self.tasks)
        self.columns = nn.ModuleList(ResTrunk(c, widths, strides, blocks) for _ in self.tasks)
        convs = [n for n, m in self.columns[0].named_modules() if isinstance(m, nn.Conv2d)]
        self.names = {n: f"layer{i}" for i, n in enumerate(convs)}
        banks = {}
        for name, key in self.names.items():
            weights = [col.get_submodule(name).weight.detach() for col in self.columns]
            stacked = torch.stack([wt.reshape(wt.shape[0], -1).T for wt in weights], dim=-1)
            banks[key] = FactorisedBank(stacked, fmt, rank, task_rank or k)
        self.banks = nn.ModuleDict(banks)
        for i, col in enumerate(self.columns):  # swap every convolution for its factorised version
            for name, key in self.names.items():
                parent_name, _, child = name.rpartition(".")
                parent = col.get_submodule(parent_name) if parent_name else col
                setattr(parent, child, FactorisedConv(self, key, i, col.get_submodule(name)))
        self.heads = nn.ModuleDict(
            {t.name: task_head(t, self.columns[0].out_channels, (h, w), head_hidden) for t in tasks}
        )
        self.layer_weights: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.layer_weights = {key: bank.weight() for key, bank in self.banks.items()}  # once per forward
        return {t: self.heads[t](col(x)) for t, col in zip(self.tasks, self.columns)}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        if len(self.tasks) > 1:
            for bank in self.banks.values():
                yield from bank.shared()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        self._check_task(task)
        if len(self.tasks) == 1:
            for bank in self.banks.values():
                yield from bank.shared()
        yield from self.columns[self.tasks.index(task)].parameters()  # BatchNorm
        yield from self.heads[task].parameters()
        # each bank's task factor is one tensor whose row k only task k's loss reaches; it is listed once,
        # under the first task, and Σ_k w_k ∂L_k/∂(factor) still gives every row its own task's gradient
        if task == self.tasks[0]:
            for bank in self.banks.values():
                yield bank.task


def _factory(fmt: str):
    def build(
        tasks: Sequence[Task],
        input_shape: Sequence[int],
        rank: int = 16,
        task_rank: int | None = None,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        strides: Sequence[int] = DEFAULT_STRIDES,
        blocks: int = 2,
        head_hidden: int = 32,
    ) -> TensorFactorised:
        return TensorFactorised(tasks, input_shape, fmt, rank, task_rank, widths, strides, blocks, head_hidden)

    return build


register(
    "tensor_tucker",
    "Tensor-factorised sharing (Yang & Hospedales 2017), Tucker: shared core and feature factors per layer",
    inputs=("image",),
    dense=True,
    baseline="hps_resnet",
)(_factory("tucker"))
register(
    "tensor_tt",
    "Tensor-factorised sharing (Yang & Hospedales 2017), tensor train: shared cores, per-task last core",
    inputs=("image",),
    dense=True,
    baseline="hps_resnet",
)(_factory("tt"))
