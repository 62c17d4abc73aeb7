"""Linear layers' per-task gradients in factored form: the Gramian without the K weight gradients.

A linear layer y = X Wᵀ + b used on R rows (batch, or batch x positions) has per-task gradients
∇_W L_k = δ_kᵀ X and ∇_b L_k = δ_kᵀ 1, where δ_k = ∂L_k/∂y (R x out). Their contribution to the Gramian is

    G_kl += <δ_kᵀX, δ_lᵀX> + <δ_kᵀ1, δ_lᵀ1> = <δ_k, S δ_l>,    S = X Xᵀ + 1 1ᵀ (R x R),

and to an update d = Jᵀw it is ∇_W = (Σ_k w_k δ_k)ᵀ X, ∇_b = (Σ_k w_k δ_k)ᵀ 1. Forming S and the K products
S δ_l costs R²·in + K·R²·out multiply-adds and d one more weight-gradient product (R·in·out), against
K·R·in·out for the K weight gradients themselves: for wide layers and moderate R (an MLP on a batch of
128) the factored route is the cheaper one. It is exact (the same G and d up to rounding).

The layers are found in the autograd graph of the losses, so nothing has to be registered before the
forward pass: an ``addmm`` (``nn.Linear``/``F.linear`` with bias) or ``mm`` node whose weight operand is a
parameter (through a transpose, or directly as in ``x @ W``). A parameter is factored only when every
use of it in the graph is such a node, so a weight that is also used elsewhere (tied weights, a
regulariser on W inside the graph) keeps the ordinary per-parameter route. This module relies on the
names of PyTorch's autograd nodes and of their saved tensors; when they do not match, nothing is
factored and the ordinary route gives the same numbers.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.autograd.graph import GradientEdge

from polytask.balancing.graph_walk import graph_nodes

MODES = ("auto", "always", "never")


@dataclass
class LinearUse:
    """One use of a weight in the graph: the autograd node of y = X·W(ᵀ) (+ b) and its input rows X."""

    node: object
    inputs: torch.Tensor  # (R, in)
    bias: torch.Tensor | None


@dataclass
class LinearBlock:
    """A weight (and its bias) whose every use is a recognised linear node."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    transposed: bool  # weight stored (in, out) and used as X @ W
    uses: list[LinearUse] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(u.inputs.shape[0] for u in self.uses)

    def factored_cost(self, n_tasks: int, rows: int | None = None) -> float:
        """Multiply-adds of S, the K products S δ_l, the K² inner products, and d's weight gradient, on
        ``rows`` rows (default: this process's)."""
        R, (n_in, n_out) = rows or self.rows, self.in_out
        return R * R * n_in + n_tasks * R * R * n_out + n_tasks**2 * R * n_out + R * n_in * n_out

    def dense_cost(self, n_tasks: int, rows: int | None = None) -> float:
        """Multiply-adds of the K weight gradients and their K x K inner products."""
        n_in, n_out = self.in_out
        return n_tasks * (rows or self.rows) * n_in * n_out + n_tasks**2 * n_in * n_out

    def edges(self) -> list[GradientEdge]:
        """The outputs of the uses, whose gradients δ the backward is asked for."""
        return [GradientEdge(u.node, 0) for u in self.uses]

    @property
    def in_out(self) -> tuple[int, int]:
        rows, cols = self.weight.shape
        return (rows, cols) if self.transposed else (cols, rows)


class FactoredLinear:
    """Per-task gradients of one :class:`LinearBlock`: its inputs X (R, in) and output gradients δ (K, R, out).

    Under ``torch.distributed`` :meth:`use_global_rows` gives it every process's rows (X_all, δ_all, n
    processes of equal batches): the global batch's Jacobian is (1/n) δ_allᵀ X_all, so G is formed from
    the gathered rows and divided by n²; :meth:`combine` stays local (its result is averaged over
    processes by the caller)."""

    def __init__(self, block: LinearBlock, deltas: Sequence[torch.Tensor]):
        self.block = block
        inputs = [u.inputs.detach() for u in block.uses]
        self.inputs = inputs[0] if len(inputs) == 1 else torch.cat(inputs)
        self.deltas = deltas[0] if len(deltas) == 1 else torch.cat(list(deltas), dim=1)
        self._gram_rows: tuple[torch.Tensor, torch.Tensor, int] | None = None

    def use_global_rows(self, inputs: torch.Tensor, deltas: torch.Tensor, world: int) -> None:
        self._gram_rows = (inputs, deltas, world)

    def _compute_dtype(self) -> torch.dtype:
        dtype = torch.promote_types(self.inputs.dtype, self.deltas.dtype)
        return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype

    def gramian(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Σ_layer <δ_k, S δ_l> (K x K, float64), computed in ``dtype`` (default: the tensors' precision,
        at least float32)."""
        dtype = dtype or self._compute_dtype()
        X, deltas, world = self._gram_rows or (self.inputs, self.deltas, 1)
        X, deltas = X.to(dtype), deltas.to(dtype)
        S = X @ X.T
        if self.block.bias is not None:
            S += 1.0
        K = deltas.shape[0]
        flat = deltas.reshape(K, -1)
        G = torch.zeros(K, K, dtype=dtype, device=deltas.device)
        for j in range(K):  # column j below the diagonal: <δ_k, S δ_j>, k ≥ j (no stacked copy of the products)
            G[j:, j] = flat[j:] @ (S @ deltas[j]).reshape(-1)
        G = G.double()
        G = G + G.tril(-1).T  # S is symmetric, so G is
        return G / world**2 if world > 1 else G

    def combine(self, weights: torch.Tensor) -> list[torch.Tensor]:
        """[∇_W, ∇_b] of Σ_k w_k L_k (∇_b only when the layer has a bias)."""
        dtype = self._compute_dtype()
        c = torch.tensordot(weights.to(dtype), self.deltas.to(dtype), dims=1)  # (R, out)
        X = self.inputs.to(dtype)
        grad_w = (X.T @ c) if self.block.transposed else (c.T @ X)
        out = [grad_w.to(self.block.weight.dtype)]
        if self.block.bias is not None:
            out.append(c.sum(0).to(self.block.bias.dtype))
        return out


# ------------------------------------------------------------------------------ graph matching
# nodes a parameter may pass through on its way into a linear node: a transpose (nn.Linear's W.t()) and
# a dtype cast (autocast's cached copy of the weight, shared by the uses in one autocast region)
_PASS_THROUGH = ("TBackward0", "ToCopyBackward0")


def _accumulated(node) -> torch.Tensor | None:
    return getattr(node, "variable", None)


def _parameter_path(node) -> tuple[torch.Tensor | None, list, int]:
    """(the parameter, the nodes from ``node`` down to its accumulator, number of transposes) when
    ``node`` reaches one parameter through pass-through nodes only; else (None, [], 0)."""
    path, transposes = [], 0
    while node is not None and _accumulated(node) is None:
        kind = type(node).__name__
        if kind not in _PASS_THROUGH or len(path) > 3 or len(node.next_functions) != 1:
            return None, [], 0
        transposes += kind == "TBackward0"
        path.append(node)
        node = node.next_functions[0][0]
    if node is None:
        return None, [], 0
    return _accumulated(node), [*path, node], transposes


def _linear_use(node, candidates: dict[int, torch.Tensor]) -> tuple[LinearUse, list, list | None, bool] | None:
    """(use, weight path, bias path, transposed) when ``node`` computes X·W(ᵀ) (+ b) with W (and b) among
    ``candidates``; else None."""
    kind = type(node).__name__
    try:
        if kind == "AddmmBackward0":
            if node._saved_alpha != 1 or node._saved_beta != 1:
                return None
            (bias_node, _), _, (weight_node, _) = node.next_functions
            inputs = node._saved_mat1
        elif kind == "MmBackward0":
            _, (weight_node, _) = node.next_functions
            bias_node, inputs = None, node._saved_self
        else:
            return None
    except (AttributeError, RuntimeError, ValueError):  # other PyTorch versions, freed buffers
        return None
    if inputs is None or inputs.dim() != 2:
        return None
    weight, weight_path, transposes = _parameter_path(weight_node)
    if weight is None or id(weight) not in candidates or weight.dim() != 2 or transposes > 1:
        return None
    bias, bias_path, bias_transposes = _parameter_path(bias_node)
    if bias is None or id(bias) not in candidates or bias.dim() != 1 or bias_transposes:
        bias, bias_path = None, None
    return LinearUse(node, inputs, bias), weight_path, bias_path, transposes == 0


def _only_uses(paths: list[list], indegree: dict) -> bool:
    """True when the edges along ``paths`` (each from a linear node down to an accumulator) are the only
    edges into their nodes: the parameter reaches the losses through these uses and nowhere else."""
    edges = {(parent, child) for path in paths for parent, child in itertools.pairwise(path)}
    incoming: dict[object, int] = {}
    for _, child in edges:
        incoming[child] = incoming.get(child, 0) + 1
    return all(indegree.get(child, 0) == count for child, count in incoming.items())


def find_linear_blocks(losses: torch.Tensor, params: Sequence[torch.Tensor]) -> list[LinearBlock]:
    """The weights among ``params`` whose every use in the graph of ``losses`` is a linear node, with
    their biases (a bias is attached only when it, too, is used nowhere else)."""
    candidates = {id(p): p for p in params if p.requires_grad}
    indegree: dict[object, int] = {}
    matches = []
    for node in graph_nodes(losses.grad_fn):
        match = _linear_use(node, candidates)
        if match is not None:
            matches.append(match)
        for child, _ in node.next_functions:
            if child is not None:
                indegree[child] = indegree.get(child, 0) + 1
    blocks: dict[int, LinearBlock] = {}
    weight_paths: dict[int, list[list]] = {}
    bias_paths: dict[int, list[list]] = {}
    invalid: set[int] = set()
    for use, weight_path, bias_path, transposed in matches:
        key = id(weight_path[-1].variable)
        block = blocks.setdefault(key, LinearBlock(weight_path[-1].variable, use.bias, transposed))
        if block.transposed != transposed:
            invalid.add(key)
        block.uses.append(use)
        weight_paths.setdefault(key, []).append([use.node, *weight_path])
        if bias_path is not None:
            bias_paths.setdefault(id(use.bias), []).append([use.node, *bias_path])
    for key, block in blocks.items():
        if not _only_uses(weight_paths[key], indegree):
            invalid.add(key)
        biases = {id(u.bias) if u.bias is not None else None for u in block.uses}
        if len(biases) != 1 or block.bias is None or not _only_uses(bias_paths[id(block.bias)], indegree):
            block.bias = None  # some uses without it, or it is used elsewhere too: per-parameter route
    owners: dict[int, int] = {}
    for key, block in blocks.items():
        if block.bias is not None:
            owners[id(block.bias)] = owners.get(id(block.bias), 0) + (1 if key not in invalid else 2)
    for block in blocks.values():  # a bias of two weights (or of one that stays dense) stays dense
        if block.bias is not None and owners[id(block.bias)] > 1:
            block.bias = None
    return [b for key, b in blocks.items() if key not in invalid]


def select_blocks(
    blocks: list[LinearBlock], n_tasks: int, mode: str, rows: Sequence[int] | None = None
) -> list[LinearBlock]:
    """The blocks to factor: all of them (``always``), those where it costs fewer multiply-adds
    (``auto``; on ``rows[i]`` rows for block i when given, e.g. the global batch), none (``never``)."""
    if mode == "never":
        return []
    if mode == "always":
        return blocks
    rows = rows or [b.rows for b in blocks]
    return [b for b, r in zip(blocks, rows) if b.factored_cost(n_tasks, r) < b.dense_cost(n_tasks, r)]
