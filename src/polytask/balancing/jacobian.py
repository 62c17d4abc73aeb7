"""Per-task gradients: the engine every gradient method runs on.

For losses L (K,) and inputs x_1..x_m (shared parameters, or the shared representation z, plus the
task-specific parameters) :func:`task_gradients` returns, per input, a (K, *x.shape) tensor whose row k
is ∂L_k/∂x. Three engines give the same numbers:

- ``direct``: for losses given as a stack of per-task scalars and shared layers that are linear layers
  and elementwise activations, one backward through the heads and the K chains through the shared
  layers as plain batched matrix products, without vmap (:mod:`polytask.balancing.direct`);
- ``batched``: one backward of the K rows of the identity through the graph,
  ``torch.autograd.grad(L, xs, grad_outputs=I_K, is_grads_batched=True)`` (vmap over the backward);
- ``loop``: K ordinary backwards (for graphs whose ops have no batching rule).

``auto`` uses ``direct`` on the CPU where it applies and there are at least ``DIRECT_FROM_TASKS`` tasks
(a vmapped backward runs every head for all K rows and sums K (K, ...) tensors where they meet; with
fewer tasks the direct engine's Python bookkeeping costs about what it saves:
``benchmarks/engine_heads.py``), else ``batched``, and falls back to ``loop`` (with one warning naming the
reason) when the graph cannot be batched.

From the per-input rows :func:`gramian` forms G = J Jᵀ without concatenating J, and :func:`combine` forms
Jᵀw per input, so methods that need only G never materialise a flat K x P matrix.

:func:`task_jacobian` wraps this for the gradient methods: it returns a :class:`TaskJacobian`, in which
linear layers' blocks may be kept in factored form (their inputs and per-task output gradients, see
:mod:`polytask.balancing.factored`) so that G and Jᵀw are formed without the K weight gradients.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch.autograd.graph import GradientEdge

from polytask.balancing import direct
from polytask.balancing import factored as fac
from polytask.balancing.graph_walk import graph_nodes
from polytask.balancing.sparse_rows import SparseRows, stack_rows
from polytask.errors import NonFiniteGradientError, PolytaskError
from polytask.utils import process_group

ENGINES = ("auto", "direct", "batched", "loop")
# ``auto`` tries the direct engine from this many tasks on (benchmarks/engine_heads.py: MGDA step over
# EW's, direct vs batched, on a 64-512-512-256 MLP: K = 5 linear heads 2.79x vs 3.06x, K = 8 3.73x vs
# 4.31x; with K <= 4 linear heads the batched engine is as fast or faster, e.g. K = 3 2.25x vs 2.18x)
DIRECT_FROM_TASKS = 5


def task_gradients(
    losses: torch.Tensor,
    inputs: Sequence[torch.Tensor],
    engine: str = "auto",
    retain_graph: bool = False,
    must_use: int = 0,
    try_direct: bool = True,
    keep_for_fallback: bool = False,
    reach_any: int = 0,
) -> tuple[list[torch.Tensor], str]:
    """Per-task gradients of ``losses`` (K,) w.r.t. each of ``inputs``: a list of (K, *x.shape) tensors
    (zeros where an input does not influence a loss), and the engine actually used. The first
    ``must_use`` inputs must be in the losses' graph (e.g. the representation z), and at least one of
    the first ``reach_any`` (e.g. the shared parameters): else an error, not a silent zero update.

    ``engine='auto'`` with K >= ``DIRECT_FROM_TASKS`` on the CPU (where it was measured faster; it holds
    more memory than vmap, which frees saved activations as it goes) tries the direct engine first
    (``try_direct=False`` skips that, e.g. once it has declined a model's graph). When the vmapped
    backward fails (an operation vmap cannot run), ``auto`` falls back to the loop. vmap may fail
    part-way, after the graph's first nodes freed their buffers, so ``keep_for_fallback=True`` keeps the
    graph through the attempt (a balancer's first step on a model, see :class:`AutoEngine`); without it
    such a failure is an error that says to use the loop."""
    if engine not in ENGINES:
        raise PolytaskError(f"unknown gradient engine {engine!r}; valid engines: {', '.join(ENGINES)}")
    if not inputs:
        return [], "batched" if engine == "auto" else engine

    def finish(grads: Sequence[torch.Tensor | None], used: str) -> tuple[list[torch.Tensor], str]:
        _check_used([g is not None for g in grads], must_use, reach_any)
        return [_zeros(losses.shape[0], x) if g is None else g for g, x in zip(grads, inputs)], used

    if engine == "auto" and try_direct and losses.shape[0] >= DIRECT_FROM_TASKS and losses.device.type == "cpu":
        grads = _direct(losses, inputs, retain_graph)
        if not isinstance(grads, str):
            return finish(grads, "direct")
    if engine == "direct":
        grads = _direct(losses, inputs, retain_graph)
        if not isinstance(grads, str):
            return finish(grads, "direct")
        raise PolytaskError(
            f"the direct gradient engine does not handle this graph ({grads}; it needs the losses as a stack of "
            "per-task scalars, and shared layers made of the operations listed in polytask.balancing.direct); "
            "use engine='batched' or 'loop'"
        )
    batched_failure, graph_kept = None, True
    if engine == "auto" and keep_for_fallback and _sparse_tables(losses):
        engine = "loop"  # vmap cannot batch sparse gradients: no attempt, no warning (later steps: the memo)
    if engine in ("auto", "batched"):
        graph_kept = retain_graph or (engine == "auto" and keep_for_fallback)
        try:
            grads = _batched(losses, inputs, graph_kept)
            if graph_kept and not retain_graph:  # kept only for a fallback that was not needed
                _release(losses, inputs)
            return finish(grads, "batched")
        except RuntimeError as exc:
            if engine == "batched":
                raise PolytaskError(f"the batched gradient engine cannot run on this graph: {exc}") from exc
            batched_failure = str(exc).splitlines()[0][:200]
            warnings.warn(
                f"per-task gradients: batched backward unavailable ({batched_failure}); "
                "using the loop engine (same numbers, K backwards)",
                RuntimeWarning,
                stacklevel=3,
            )
    try:
        return finish(_loop(losses, inputs, retain_graph), "loop")
    except RuntimeError as exc:
        raise _loop_error(exc, batched_failure, graph_kept) from exc


def _sparse_tables(losses: torch.Tensor) -> bool:
    """Whether an embedding with sparse gradients (nn.Embedding / EmbeddingBag(sparse=True)) is in the
    graph of ``losses``."""
    return any(getattr(node, "_saved_sparse", False) is True for node in graph_nodes(losses.grad_fn))


def _release(losses: torch.Tensor, inputs: Sequence[torch.Tensor | GradientEdge]) -> None:
    """Free the buffers a vmapped backward would have freed (the graph was kept for a fallback), so that
    the activations of this step do not outlive it: one plain backward through the same nodes."""
    torch.autograd.grad(losses, list(inputs), torch.ones_like(losses), allow_unused=True)


def _loop_error(exc: RuntimeError, batched_failure: str | None, graph_kept: bool) -> Exception:
    """A clear error for the loop engine's known failures; ``exc`` itself otherwise."""
    if "donated buffer" in str(exc):
        return PolytaskError(
            "per-task gradients need one backward per task through the model (vmap cannot enter compiled "
            "code), but a torch.compile'd part of it was compiled with donated buffers, whose backward can run "
            "only once: keep compiled code out of the layers several tasks share (see check_compiled_regions)"
        )
    if batched_failure is not None and not graph_kept:
        return PolytaskError(
            f"the batched gradient engine failed part-way on this graph ({batched_failure}) after freeing some of "
            "its buffers, so the loop engine cannot run on this step either: pass engine='loop' for this model"
        )
    return exc


class AutoEngine:
    """What ``engine='auto'`` learned about one model over a balancer's steps, so that later steps skip
    what failed: the direct engine declined its graph (K >= ``DIRECT_FROM_TASKS``), or the vmapped
    backward failed on it (later steps use the loop). The first step keeps the graph through the vmapped
    attempt, so that the loop still has a whole graph if it fails part-way. An explicit engine is
    passed through unchanged."""

    def __init__(self):
        self.direct_declined = False
        self.loop_only = False
        self.steps = 0

    def options(self, engine: str) -> dict:
        """Keyword arguments for :func:`task_gradients` / :func:`task_jacobian` on this step."""
        if engine != "auto":
            return {"engine": engine}
        return {
            "engine": "loop" if self.loop_only else "auto",
            "try_direct": not self.direct_declined,
            "keep_for_fallback": self.steps == 0,
        }

    def check_first_step(self, losses: torch.Tensor, who: str, stop_at: torch.Tensor | None = None) -> None:
        """On a balancer's first step only: :func:`check_compiled_regions` (the graph's structure does
        not change between steps)."""
        if self.steps == 0:
            check_compiled_regions(losses, who, stop_at)

    def learn(self, engine: str, n_tasks: int, used: str) -> None:
        """Record the engine this step used (asked for ``engine``)."""
        if engine == "auto":
            if n_tasks >= DIRECT_FROM_TASKS and not self.direct_declined and not self.loop_only:
                self.direct_declined = used != "direct"
            self.loop_only = self.loop_only or used == "loop"
        self.steps += 1


def _direct(
    losses: torch.Tensor, inputs: Sequence[torch.Tensor], retain_graph: bool
) -> list[torch.Tensor | None] | str:
    """The direct engine's per-task gradients (None where none arrives; :mod:`polytask.balancing.direct`),
    or why it does not apply."""
    roots = _task_outputs(losses)
    if roots is None:
        return "the losses are not a stack of scalars"
    out = direct.per_task_gradients(roots, inputs, retain_graph)
    return out if isinstance(out, str) else out[0]


def _check_used(used: Sequence[bool], must_use: int, reach_any: int = 0) -> None:
    if not all(used[:must_use]):
        raise PolytaskError(
            "the representation is not part of the losses' graph (a stale z from another forward pass, or a "
            "detached one?): pass the shared encoder output of this forward pass"
        )
    if reach_any and not any(used[:reach_any]):
        raise PolytaskError(
            f"none of the {reach_any} shared parameter(s) influences the losses (a detached representation, or "
            "another model's parameters?): they would get no update; pass the parameters the losses depend on"
        )


def _batched(losses: torch.Tensor, inputs: Sequence[torch.Tensor], retain_graph: bool) -> list[torch.Tensor | None]:
    K = losses.shape[0]
    eye = torch.eye(K, dtype=losses.dtype, device=losses.device)
    return list(
        torch.autograd.grad(
            losses, inputs, grad_outputs=eye, retain_graph=retain_graph, allow_unused=True, is_grads_batched=True
        )
    )


def _edge_metadata(edge: GradientEdge):
    """Shape, dtype and device of the tensor a gradient edge stands for (PyTorch's node metadata)."""
    try:
        return edge.node._input_metadata[edge.output_nr]
    except (AttributeError, IndexError):
        return None


def _zeros(K: int, x: torch.Tensor | GradientEdge) -> torch.Tensor:
    if isinstance(x, GradientEdge):
        meta = _edge_metadata(x)
        if meta is None:
            raise PolytaskError("per-task gradients: a linear layer's output received no gradient")
        return torch.zeros((K, *meta.shape), dtype=meta.dtype, device=meta.device)
    return torch.zeros((K, *x.shape), dtype=x.dtype, device=x.device)


def _task_outputs(losses: torch.Tensor) -> list | None:
    """The K losses as separate autograd outputs (edge, gradient 1) when ``losses`` is a stack of scalars,
    so that the backward of task k runs through task k's own branch only (not through every head with a
    zero gradient, as losses[k] would); None otherwise."""
    node = losses.grad_fn
    if losses.dim() != 1 or type(node).__name__ != "StackBackward0" or getattr(node, "_saved_dim", None) != 0:
        return None
    outputs = []
    for part in node.next_functions:
        if part[0] is None:  # a constant loss: no gradient anywhere
            outputs.append(None)
            continue
        meta = _edge_metadata(GradientEdge(*part))
        if meta is None or tuple(meta.shape) != ():
            return None
        outputs.append((GradientEdge(*part), torch.ones((), dtype=meta.dtype, device=meta.device)))
    return outputs if len(outputs) == losses.shape[0] else None


def _loop(
    losses: torch.Tensor, inputs: Sequence[torch.Tensor], retain_graph: bool
) -> list[torch.Tensor | SparseRows | None]:
    K = losses.shape[0]
    rows: list[list[torch.Tensor | None]] = [[] for _ in inputs]
    parts = _task_outputs(losses)
    for k in range(K):
        keep = retain_graph or k < K - 1
        if parts is None:
            grads = torch.autograd.grad(losses[k], inputs, retain_graph=keep, allow_unused=True)
        elif parts[k] is None:
            grads = (None,) * len(inputs)
        else:
            edge, one = parts[k]
            grads = torch.autograd.grad([edge], inputs, [one], retain_graph=keep, allow_unused=True)
        for i, g in enumerate(grads):
            rows[i].append(g)
    return [_stack(r, x) for r, x in zip(rows, inputs)]


def _stack(grads: list[torch.Tensor | None], x: torch.Tensor | GradientEdge) -> torch.Tensor | SparseRows | None:
    """The K per-task gradients of ``x`` as one (K, *x.shape) tensor (zeros for a task that does not reach
    it), as :class:`SparseRows` when some are sparse (nn.Embedding(sparse=True)), None when none exists."""
    if all(g is None for g in grads):
        return None
    if any(g is not None and g.is_sparse for g in grads):
        return stack_rows(grads, x)  # type: ignore[arg-type]
    return torch.stack([_zeros(1, x)[0] if g is None else g for g in grads])


def gramian(grads: Sequence[torch.Tensor], dtype: torch.dtype | None = None) -> torch.Tensor:
    """G = J Jᵀ (K x K, float64) summed over the per-input blocks of J (each block's product in its own
    precision, or in ``dtype``; the sum in float64)."""
    K = grads[0].shape[0]
    blocks = [g.reshape(K, -1) if dtype is None else g.reshape(K, -1).to(dtype) for g in grads]
    G = torch.zeros(K, K, dtype=torch.float64, device=grads[0].device)
    for flat in blocks:
        G += torch.mm(flat, flat.T).double()
    return G


def noise_level(eps: float, columns: int, product_eps: float | None = None) -> float:
    """Relative rounding level of a Gram matrix of rows of ``columns`` entries stored with machine epsilon
    ``eps`` and multiplied with ``product_eps`` (default ``eps``): max(8 eps, product_eps √columns). A
    rounded entry errs by eps of itself, which moves a dot product by about eps of the product of the
    rows' norms; a sum of P rounded products errs by about product_eps √P of it."""
    product_eps = eps if product_eps is None else product_eps
    return max(8.0 * float(eps), float(product_eps) * math.sqrt(max(columns, 1)))


def flatten(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """The (K, P) Jacobian as one matrix (for methods that work on its entries)."""
    K = grads[0].shape[0]
    return torch.cat([g.reshape(K, -1) for g in grads], dim=1)


def combine(grads: Sequence[torch.Tensor | SparseRows], weights: torch.Tensor) -> list[torch.Tensor]:
    """Jᵀw per input block: Σ_k w_k ∂L_k/∂x (sparse for row-sparse blocks)."""
    return [
        g.combine(weights) if isinstance(g, SparseRows) else torch.tensordot(weights.to(g.dtype), g, dims=1)
        for g in grads
    ]


def accumulate(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
    """Add ``grads`` into ``.grad`` (like ``backward`` does); a parameter without a gradient takes the
    tensor itself when it is a fresh, contiguous tensor of the right dtype (no copy)."""
    for p, g in zip(params, grads):
        g = g.detach()
        if g.is_sparse:  # a sparse table's gradient stays sparse (SparseAdam needs it so)
            p.grad = g if p.grad is None else p.grad + g
            continue
        if p.grad is None:
            fresh = g._base is None and g.is_contiguous() and g.dtype == p.dtype and g.shape == p.shape
            p.grad = g if fresh else g.to(p.dtype).reshape(p.shape).clone()
        else:
            p.grad.add_(g)


NON_FINITE_GRADIENTS = (
    "the per-task gradients hold NaN or inf although the losses are finite: check the model's parameters "
    "and the inputs of this batch"
)


def check_finite(grads: Sequence[torch.Tensor]) -> None:
    """Raise :class:`NonFiniteGradientError` when a per-task gradient holds NaN or inf."""
    if not all(bool(torch.isfinite(g).all()) for g in grads):
        raise NonFiniteGradientError(NON_FINITE_GRADIENTS)


class TaskJacobian:
    """Per-task gradients of a list of targets: a dense (K, *x.shape) block per target, except the
    linear layers held as :class:`~polytask.balancing.factored.FactoredLinear` (weight and bias) and
    row-sparse tables (``sparse``: target index -> :class:`SparseRows`), whose dense block is the
    compressed (K, u, ...) one and whose Jᵀw is sparse."""

    def __init__(
        self,
        targets: Sequence[torch.Tensor],
        dense: Sequence[torch.Tensor | None],
        factored: Sequence[tuple[fac.FactoredLinear, list[int]]] = (),
        sparse: dict[int, SparseRows] | None = None,
    ):
        self.targets, self.dense, self.factored = list(targets), list(dense), list(factored)
        self.sparse = dict(sparse or {})
        self.row_scale: torch.Tensor | None = None  # set by scaled()

    @property
    def rows(self) -> list[torch.Tensor]:
        """The dense blocks, one per target (only when nothing is factored)."""
        if self.factored:
            raise PolytaskError("this Jacobian holds factored linear blocks; use gramian() and combine()")
        if self.row_scale is None:
            return self.dense  # type: ignore[return-value]
        return [g * self.row_scale.to(g).view(-1, *([1] * (g.dim() - 1))) for g in self.dense]  # type: ignore[union-attr]

    def dense_blocks(self) -> list[torch.Tensor]:
        return [g for g in self.dense if g is not None]

    def gramian(self) -> torch.Tensor:
        """G = J Jᵀ (K x K, float64). When a product overflows its precision (huge activations times tiny
        output gradients can overflow X Xᵀ although J itself is moderate) it is formed again in float64."""
        G = self._gramian(None)
        if not torch.isfinite(G).all():
            G = self._gramian(torch.float64)
            if not torch.isfinite(G).all():
                raise NonFiniteGradientError(NON_FINITE_GRADIENTS)
        if self.row_scale is not None:
            s = self.row_scale.to(G)
            G = G * torch.outer(s, s)
        return G

    def gram_noise(self, computed_in: torch.dtype | None = None) -> float:
        """The relative rounding level of :meth:`gramian`'s entries (|δG_kl| ≲ noise ‖g_k‖ ‖g_l‖), from
        :func:`noise_level`: the precision the per-task gradients are stored in (a factored layer's inputs
        and output gradients included) or were computed in (``computed_in``, e.g. bfloat16 under autocast
        although the parameters' gradients are float32), and the precision of the P-term dot products.
        Gradient methods treat what lies below it (a near-zero eigenvalue or combination) as zero."""
        dtypes = [g.dtype for g in self.dense_blocks()]
        for block, _ in self.factored:
            dtypes += [block.inputs.dtype, block.deltas.dtype]
        dtypes = dtypes or [torch.float64]
        stored = max(torch.finfo(d).eps for d in [*dtypes, *([computed_in] if computed_in else [])])
        # products of half-precision blocks accumulate in float32 (factored layers; GEMM kernels)
        products = max(torch.finfo(torch.float32 if d in (torch.float16, torch.bfloat16) else d).eps for d in dtypes)
        return noise_level(stored, sum(t.numel() for t in self.targets), products)

    def _gramian(self, dtype: torch.dtype | None) -> torch.Tensor:
        blocks = self.dense_blocks()
        G = gramian(blocks, dtype) if blocks else None
        for block, _ in self.factored:
            G = block.gramian(dtype) if G is None else G + block.gramian(dtype)
        if G is None:
            raise PolytaskError("the Jacobian has no blocks (no shared parameters?)")
        return G

    def combine(self, weights: torch.Tensor) -> list[torch.Tensor]:
        """Jᵀw, one tensor per target."""
        if self.row_scale is not None:
            weights = weights * self.row_scale.to(weights)
        out: list[torch.Tensor | None] = [
            None if g is None else torch.tensordot(weights.to(g.dtype), g, dims=1) for g in self.dense
        ]
        for block, indices in self.factored:
            for i, grad in zip(indices, block.combine(weights)):
                out[i] = grad
        for i, rows in self.sparse.items():
            out[i] = rows.expand(out[i])  # type: ignore[arg-type]
        return out  # type: ignore[return-value]

    def scaled(self, scale: torch.Tensor) -> TaskJacobian:
        """The Jacobian of the losses scale_k L_k (a view: G -> D G D and w -> D w, D = diag(scale))."""
        out = TaskJacobian(self.targets, self.dense, self.factored, self.sparse)
        previous = self.row_scale
        out.row_scale = scale.detach() if previous is None else previous * scale.detach()
        return out


def task_jacobian(
    losses: torch.Tensor,
    targets: Sequence[torch.Tensor],
    others: Sequence[torch.Tensor] = (),
    engine: str = "auto",
    factored: str = "never",
    retain_graph: bool = False,
    must_use: int = 0,
    try_direct: bool = True,
    keep_for_fallback: bool = False,
) -> tuple[TaskJacobian, list[torch.Tensor], str]:
    """Per-task gradients of ``targets`` as a :class:`TaskJacobian` and of ``others`` (e.g. the heads) as
    dense (K, *x.shape) rows, in one backward, and the engine used. ``factored``: which linear layers
    among the targets to hold in factored form (``auto``: where it costs fewer multiply-adds;
    ``always``; ``never``). ``engine='auto'`` is the batched engine, except on the CPU when a target
    (not factored) or one of ``others`` is a convolution kernel: there the loop engine is faster."""
    if factored not in fac.MODES:
        raise PolytaskError(f"factored must be one of {fac.MODES}, got {factored!r}")
    world = world_size()
    position = {id(t): i for i, t in enumerate(targets)}
    blocks, padded_rows = _blocks_to_factor(losses, targets, position, factored, world)
    covered: set[int] = set()
    for block in blocks:
        covered.add(id(block.weight))
        if block.bias is not None:
            covered.add(id(block.bias))
    edges = [edge for block in blocks for edge in block.edges()]
    plain = [t for t in targets if id(t) not in covered]
    if engine == "auto" and _convolutions_on_cpu([*plain, *others]):
        engine = "loop"
    grads, used = task_gradients(
        losses,
        [*edges, *plain, *others],
        engine,
        retain_graph=retain_graph,
        must_use=len(edges) + must_use if must_use else 0,
        try_direct=try_direct,
        keep_for_fallback=keep_for_fallback,
        reach_any=0 if must_use else len(edges) + len(plain),
    )
    deltas, rest = grads[: len(edges)], grads[len(edges) :]
    if world > 1 and any(isinstance(g, SparseRows) for g in rest):
        raise PolytaskError(
            "per-task gradients: sparse embedding gradients (nn.Embedding(sparse=True)) are not supported under "
            "torch.distributed (each process touches other rows); use sparse=False"
        )
    dense: list[torch.Tensor | None] = [None] * len(targets)
    sparse: dict[int, SparseRows] = {}
    for t, g in zip(plain, rest[: len(plain)]):
        if isinstance(g, SparseRows):
            sparse[position[id(t)]] = g
            g = g.values
        dense[position[id(t)]] = g
    factored_blocks, start = [], 0
    for block in blocks:
        n = len(block.uses)
        indices = [position[id(block.weight)]] + ([position[id(block.bias)]] if block.bias is not None else [])
        factored_blocks.append((fac.FactoredLinear(block, deltas[start : start + n]), indices))
        start += n
    if world > 1 and factored_blocks:
        _gather_rows([b for b, _ in factored_blocks], padded_rows, world)
    return TaskJacobian(targets, dense, factored_blocks, sparse), list(rest[len(plain) :]), used


def _blocks_to_factor(
    losses: torch.Tensor, targets: Sequence[torch.Tensor], position: dict[int, int], factored: str, world: int
) -> tuple[list[fac.LinearBlock], list[int]]:
    """The linear blocks to hold in factored form (in target order) and, per block, the row count every
    process pads to (under DDP the largest over processes, agreed with them)."""
    found: list[fac.LinearBlock] = []
    if factored != "never" and any(t.dim() == 2 for t in targets):  # no matrix: no linear layer to walk for
        found = sorted(fac.find_linear_blocks(losses, targets), key=lambda b: position[id(b.weight)])
    rows = [b.rows for b in found]
    if world > 1 and factored != "never":
        found, rows = _agree_on_blocks(found, len(targets), position, losses.device)
    blocks = fac.select_blocks(found, losses.shape[0], factored, [world * r for r in rows])
    chosen = {id(b) for b in blocks}
    return blocks, [r for b, r in zip(found, rows) if id(b) in chosen]


# ------------------------------------------------------------------------------ distributed
def world_size() -> int:
    """Number of processes when ``torch.distributed`` is initialised, else 1."""
    group = process_group()
    return 1 if group is None else group[1]


def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """The mean over processes of the ``.grad`` of ``params`` (what a DDP wrapper does), in place; no-op
    in a single process. A parameter with a gradient in some processes only (the head of a task absent
    in the others) gets a zero gradient where it has none, so that all processes exchange the same
    tensors; one without a gradient anywhere keeps None (an optimizer then skips it, as in one process)."""
    if world_size() == 1:
        return
    params = [p for p in params if p.requires_grad]
    if any(p.grad is not None and p.grad.is_sparse for p in params):
        raise PolytaskError(
            "sparse gradients (nn.Embedding(sparse=True)) are not averaged over processes: use dense embeddings "
            "under torch.distributed"
        )
    device = next((p.grad.device for p in params if p.grad is not None), params[0].device if params else "cpu")
    has = torch.tensor([float(p.grad is not None) for p in params], device=device)
    all_reduce_mean([has])
    for p, h in zip(params, has.tolist()):
        if h > 0 and p.grad is None:
            p.grad = torch.zeros_like(p)
    all_reduce_mean([p.grad for p, h in zip(params, has.tolist()) if h > 0])


def all_reduce_mean(tensors: Sequence[torch.Tensor]) -> None:
    """In-place mean over processes of ``tensors`` (one flat all-reduce); no-op in a single process.

    With equal per-rank batch sizes and mean-reduced losses, the mean of the ranks' per-task gradients
    is the per-task gradient on the global batch, so every rank then aggregates the same J (or G)."""
    n = world_size()
    if n == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= n
    start = 0
    for t in tensors:
        t.copy_(flat[start : start + t.numel()].view_as(t))
        start += t.numel()


# ------------------------------------------------------------------------------ graph leaves
def _convolutions_on_cpu(params: Sequence[torch.Tensor]) -> bool:
    """True when some per-parameter input is a convolution kernel (a leaf of 3+ dimensions) and all are
    on the CPU: there the K ordinary backwards of the loop engine beat the batched one (vmap over a
    convolution's weight gradient; and each task's backward crosses its own head only). MGDA step over
    EW's, loop vs batched (benchmarks/engine_choice.py, 2 cores): hps_resnet 2.3x vs 2.8x, PAD-Net 2.2x
    vs 3.2x, MTI-Net 1.9x vs 3.0x; MGDA-UB on hps_resnet (convolutional heads) 1.06x vs 1.47x."""
    conv = any(p.is_leaf and p.dim() >= 3 for p in params)
    return conv and all(p.device.type == "cpu" for p in params)


def _agree_on_blocks(
    found: list[fac.LinearBlock], n_targets: int, position: dict[int, int], device: torch.device
) -> tuple[list[fac.LinearBlock], list[int]]:
    """The linear blocks every process found (with a bias only where every process attached the same
    one), and each block's largest row count over processes: one all-reduce, so that all processes
    factor the same layers and exchange same-shaped tensors."""
    rows = torch.full((n_targets,), -1, dtype=torch.int64, device=device)
    bias = torch.zeros(n_targets, dtype=torch.int64, device=device)
    for b in found:
        rows[position[id(b.weight)]] = b.rows
        bias[position[id(b.weight)]] = position[id(b.bias)] + 1 if b.bias is not None else 0
    packed = torch.cat([rows, -rows, bias, -bias])
    dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    max_rows, min_rows, max_bias, min_bias = packed.view(4, n_targets).tolist()
    agreed, agreed_rows = [], []
    for b in found:
        i = position[id(b.weight)]
        if -min_rows[i] < 0:  # some process did not find it
            continue
        if max_bias[i] != -min_bias[i]:
            b.bias = None
        agreed.append(b)
        agreed_rows.append(max_rows[i])
    return agreed, agreed_rows


def _gather_rows(blocks: list[fac.FactoredLinear], rows: list[int], world: int) -> None:
    """Give each factored block every process's inputs and output gradients (padded with zero rows to
    the same count, which add nothing to G), in one all-gather."""
    dtype = blocks[0].inputs.dtype
    for b in blocks:
        dtype = torch.promote_types(dtype, torch.promote_types(b.inputs.dtype, b.deltas.dtype))
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    parts = []
    for b, r in zip(blocks, rows):
        X, D = b.inputs.to(dtype), b.deltas.to(dtype)
        pad = r - X.shape[0]
        parts += [torch.nn.functional.pad(X, (0, 0, 0, pad)), torch.nn.functional.pad(D, (0, 0, 0, pad))]
    flat = torch.cat([p.reshape(-1) for p in parts])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    per_rank = [_split_like(g, parts) for g in gathered]
    for i, b in enumerate(blocks):
        X_all = torch.cat([ranks[2 * i] for ranks in per_rank])
        D_all = torch.cat([ranks[2 * i + 1] for ranks in per_rank], dim=1)
        b.use_global_rows(X_all, D_all, world)


def _split_like(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    out, start = [], 0
    for t in like:
        out.append(flat[start : start + t.numel()].view_as(t))
        start += t.numel()
    return out


def graph_leaves(root: torch.Tensor, stop_at: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Leaf tensors requiring grad that ``root`` depends on, in discovery order; the walk does not go
    past ``stop_at``'s node (used to find the task-specific parameters above a representation z)."""
    stop = stop_at.grad_fn if stop_at is not None else None
    leaves, seen = [], set()
    for node in graph_nodes(root.grad_fn, stop):
        variable = getattr(node, "variable", None)  # an accumulator: its parameter (it has no children)
        if variable is not None and id(variable) not in seen:
            seen.add(id(variable))
            leaves.append(variable)
    return leaves


def check_compiled_regions(losses: torch.Tensor, who: str, stop_at: torch.Tensor | None = None) -> None:
    """Raise a :class:`PolytaskError` when the per-task backward passes would cross a torch.compile'd part
    of the graph (a ``CompiledFunctionBackward`` node) for two or more tasks (for every task, when the
    losses are not a stack of per-task scalars), not counting what lies below ``stop_at`` (the
    representation in rep-grad mode, crossed once by the combined backward). PyTorch's compiled backward
    may run only once (donated buffers); where it runs again, inductor code returned wrong gradients in
    polytask's tests (PyTorch 2.13, CPU, 2 threads), so such a graph is refused rather than risked."""
    K = losses.shape[0] if losses.dim() == 1 else 1
    if K < 2:
        return
    roots = _task_outputs(losses)
    starts = [losses.grad_fn] if roots is None else [r[0].node for r in roots if r is not None]
    stop = stop_at.grad_fn if stop_at is not None else None
    crossings: dict[object, int] = {}
    for start in starts:
        for node in graph_nodes(start, stop):
            if type(node).__name__ == "CompiledFunctionBackward":
                crossings[node] = crossings.get(node, 0) + (K if roots is None else 1)
    shared = sum(count >= 2 for count in crossings.values())
    if shared:
        raise PolytaskError(
            f"{who}: the gradients of several tasks cross {shared} torch.compile'd part(s) of the model, so "
            "per-task gradients need one backward per task through compiled code, which PyTorch does not "
            "support reliably (with donated buffers it raises; without them inductor returned wrong gradients "
            "in polytask's tests). Compile only task-specific parts, use rep_grad=True with the compiled "
            "encoder below the representation (it is then crossed once), or use a loss weighting"
        )
