"""The ``direct`` per-task gradient engine: the K backward chains of a multi-layer perceptron as plain
batched matrix products, without vmap.

For losses L_1..L_K that are separate scalars (``torch.stack([l_1, .., l_K])``) the autograd graph splits
into the part that only one task reaches (its head and loss) and the part that several tasks reach (the
shared layers). The engine

1. runs one ordinary backward of Σ_k L_k through the single-task part, stopping where it enters the
   shared part; a hook on each head's last node keeps that task's gradient apart from the others', so
   the heads are traversed once (a vmapped backward traverses every head K times, K − 1 of them with a
   zero gradient);
2. carries the K stacked gradients (K, *shape) through the shared part node by node: linear layers
   (``addmm``, ``mm``, the transpose of a weight) as one matrix product over all K·R rows, the
   elementwise activations (ReLU, leaky ReLU, GELU, SiLU, ELU, softplus, tanh, sigmoid, multiplication
   by a mask or a tensor such as dropout's, division, negation) with their derivative broadcast over
   the K rows, sums and differences of tensors (residual connections), layer and batch normalisation
   (batch statistics differentiated per task in training mode), slices and selections, means, the
   shape and mixing operations of mixture-of-experts layers (stack, cat, view/reshape, (un)squeeze,
   permute, transpose, expand, sum, softmax, bmm), and embedding lookups.

Where a tensor is read both by one task's own layers and by shared ones (PLE: a task's experts and the
shared gate read the same level output), the task's nodes that read it are carried with the shared part
(all K rows, the other tasks' zero), so the first backward never has to run a shared node.

The result equals autograd's per-task gradients (up to rounding in the order of sums). It is used only
when every node of the shared part that leads to a requested input is one of those kinds; otherwise
:func:`per_task_gradients` says why not and the caller uses the vmap or loop engine. Reading saved tensors
relies on the names PyTorch gives them (``_saved_mat1``, ``_saved_result``, ...); where they differ the
engine declines and the others give the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.autograd.graph import GradientEdge

Slot = tuple[object, int]  # (autograd node, input number): where a gradient arrives


def per_task_gradients(
    roots: Sequence[tuple[GradientEdge, torch.Tensor] | None],
    inputs: Sequence[torch.Tensor | GradientEdge],
    retain_graph: bool,
) -> tuple[list[torch.Tensor | None], list[bool]] | str:
    """Per-task gradients of the K task losses (``roots[k]``: the edge of L_k and a scalar 1, None for a
    constant loss) w.r.t. ``inputs``: one (K, *shape) tensor per input (None where no gradient arrives)
    and whether each input was reached; or, where this engine does not apply, why not (a node of the
    shared part it has no rule for, an input without gradient, a rule that failed on a saved tensor)."""
    K = len(roots)
    slots = [_slot(x) for x in inputs]
    if any(s is None for s in slots):
        return "an input does not require grad"
    graph = _Graph(roots, slots)
    if graph.unsupported:
        return graph.reason
    captured = graph.run_heads(roots, retain_graph)
    results: dict[Slot, torch.Tensor] = {}
    try:
        with torch.no_grad():  # saved tensors such as a weight require grad; the gradients do not
            graph.run_shared(captured, results, K)
    except (RuntimeError, AttributeError, TypeError, IndexError, ValueError) as exc:  # freed buffers, odd saved tensors
        return f"{type(exc).__name__} in a rule: {str(exc).splitlines()[0][:160]}"
    grads = [results.get(s) for s in slots]  # type: ignore[arg-type]
    return grads, [g is not None for g in grads]


def _slot(x: torch.Tensor | GradientEdge) -> Slot | None:
    if isinstance(x, GradientEdge):
        return (x.node, x.output_nr)
    if not x.requires_grad:
        return None
    edge = torch.autograd.graph.get_gradient_edge(x)
    return (edge.node, edge.output_nr)


class _Graph:
    """The graph of the K losses: which tasks reach each node, which nodes lead to a requested slot,
    where the single-task part hands gradients to the shared part."""

    def __init__(self, roots: Sequence[tuple[GradientEdge, torch.Tensor] | None], slots: Sequence[Slot]):
        self.targets = {s: i for i, s in enumerate(slots)}
        target_nodes = {s[0] for s in slots}
        # nodes in an order where every node comes after all nodes with an edge into it
        children: dict[object, list[tuple[object, int]]] = {}
        order: list[object] = []
        starts = [r[0].node for r in roots if r is not None]
        visited: set[object] = set()
        for start in starts:
            stack: list[tuple[object, bool]] = [(start, False)]
            while stack:
                node, done = stack.pop()
                if done:
                    order.append(node)
                    continue
                if node in visited:
                    continue
                visited.add(node)
                edges = list(node.next_functions)  # positions matter: a rule returns one gradient per edge
                children[node] = edges
                stack.append((node, True))
                stack.extend((c, False) for c, _ in edges if c is not None and c not in visited)
        order.reverse()
        self.order, self.children = order, children
        # tasks reaching each node (bit k: task k)
        reach: dict[object, int] = {n: 0 for n in order}
        for k, root in enumerate(roots):
            if root is not None:
                reach[root[0].node] |= 1 << k
        for node in order:
            for child, _ in children[node]:
                if child is not None:
                    reach[child] |= reach[node]
        self.reach = reach
        # nodes from which a requested slot is reachable
        needed: set[object] = set()
        for node in reversed(order):
            if node in target_nodes or any(c in needed for c, _ in children[node]):
                needed.add(node)
        self.needed = needed
        shared_set = {n for n in order if n in needed and reach[n].bit_count() > 1}
        # A tensor read both by one task's own layers and by shared ones (a PLE task expert's input is also
        # read by the shared gate): phase 1 could not stop there without running shared nodes, so the
        # single-task nodes that read it join the shared part (carried over all K rows, the other tasks'
        # rows zero), with every needed node below them, until no such tensor is left; each round moves
        # the boundary up by at least one node.
        while True:
            for node in order:  # parents come first: one pass closes the set under needed children
                if node in shared_set:
                    shared_set.update(c for c, _ in children[node] if c in needed)
            handover, fed_by_shared = _boundary(order, children, shared_set, needed, reach)
            conflicts = {s for edges in handover.values() for _, s, _ in edges} & fed_by_shared
            if not conflicts:
                break
            shared_set |= {node for node, edges in handover.items() if any(s in conflicts for _, s, _ in edges)}
        self.handover = handover  # single-task node -> [(edge index, slot, task)]: where heads hand over
        shared = [n for n in order if n in shared_set]
        self.shared = shared
        unknown = sorted(
            {
                type(n).__name__
                for n in shared
                if type(n).__name__ not in _HANDLERS and not _is_target_only(n, children[n], needed)
            }
        )
        self.unsupported = bool(unknown)
        self.reason = f"layers shared by several tasks include operations it has no rule for: {', '.join(unknown)}"
        handover_slots = {s for edges in handover.values() for _, s, _ in edges}
        self.handover_slots = list(handover_slots)
        self.head_slots = [s for s in slots if s[0] in needed and s[0] not in shared_set]
        self.shared_set = shared_set

    def run_heads(
        self, roots: Sequence[tuple[GradientEdge, torch.Tensor] | None], retain_graph: bool
    ) -> dict[Slot, dict[int, torch.Tensor]]:
        """One backward of Σ_k L_k through the single-task part: the gradients each task hands to the
        shared part (slot -> task -> gradient), and the requested slots of the single-task part."""
        captured: dict[Slot, dict[int, torch.Tensor]] = {}
        self.head_results: dict[Slot, tuple[int, torch.Tensor]] = {}
        live = [r for r in roots if r is not None]
        wanted = self.handover_slots + self.head_slots
        if not live or not wanted:
            return captured

        def make_hook(edges: list[tuple[int, Slot, int]]) -> Callable:
            def hook(grad_inputs, grad_outputs):
                for i, slot, task in edges:
                    g = grad_inputs[i]
                    if g is None:
                        continue
                    per_task = captured.setdefault(slot, {})
                    per_task[task] = g if task not in per_task else per_task[task] + g

            return hook

        handles = [node.register_hook(make_hook(edges)) for node, edges in self.handover.items()]
        try:
            grads = torch.autograd.grad(
                [r[0] for r in live],
                [GradientEdge(*s) for s in wanted],
                [r[1] for r in live],
                retain_graph=True if self.shared else retain_graph,
                allow_unused=True,
            )
        finally:
            for h in handles:
                h.remove()
        for slot, g in zip(self.head_slots, grads[len(self.handover_slots) :]):
            if g is not None:
                self.head_results[slot] = (self.reach[slot[0]].bit_length() - 1, g)
        return captured

    def run_shared(
        self, captured: dict[Slot, dict[int, torch.Tensor]], results: dict[Slot, torch.Tensor], K: int
    ) -> None:
        """Carry the stacked (K, ...) gradients through the shared part; requested slots go to ``results``."""
        pending: dict[object, dict[int, torch.Tensor]] = {}
        for (node, nr), per_task in captured.items():
            pending.setdefault(node, {})[nr] = _stack_rows(per_task, K)
        captured.clear()  # the per-task pieces, now stacked: not kept through the shared part
        for slot, (task, g) in self.head_results.items():
            results[slot] = _stack_rows({task: g}, K)
        self.head_results.clear()
        for node in self.shared:
            grads = pending.pop(node, None)
            if not grads:
                continue
            for nr, g in grads.items():
                if (node, nr) in self.targets:
                    results[(node, nr)] = g
            edges = self.children[node]
            wanted = [c in self.needed for c, _ in edges]
            if not any(wanted) or 0 not in grads:
                continue
            outputs = _HANDLERS[type(node).__name__](node, grads[0], wanted, edges)
            for (child, nr), want, g in zip(edges, wanted, outputs):
                if want and g is not None:
                    slot_grads = pending.setdefault(child, {})
                    slot_grads[nr] = g if nr not in slot_grads else slot_grads[nr] + g


def _boundary(order, children, shared_set, needed, reach) -> tuple[dict, set]:
    """The edges from single-task nodes into the shared part (node -> [(edge index, slot, task)]) and the
    slots that shared nodes feed."""
    handover: dict[object, list[tuple[int, Slot, int]]] = {}
    fed_by_shared: set[Slot] = set()
    for node in order:
        single = node not in shared_set
        for i, (child, nr) in enumerate(children[node]):
            if child not in shared_set:
                continue
            if single and node in needed:
                handover.setdefault(node, []).append((i, (child, nr), reach[node].bit_length() - 1))
            elif not single:
                fed_by_shared.add((child, nr))
    return handover, fed_by_shared


def _is_target_only(node, edges, needed) -> bool:
    """A shared node none of whose edges leads to a requested slot (e.g. an accumulator, or a
    requested linear output whose layer input needs no gradient): nothing to compute through it."""
    return not any(c in needed for c, _ in edges)


def _stack_rows(per_task: dict[int, torch.Tensor], K: int) -> torch.Tensor:
    some = next(iter(per_task.values()))
    if len(per_task) == K:
        return torch.stack([per_task[k] for k in range(K)])
    out = some.new_zeros((K, *some.shape))
    for k, g in per_task.items():
        out[k] = g
    return out


def _shape(edge: tuple[object, int]) -> tuple[int, ...]:
    child, nr = edge
    return tuple(child._input_metadata[nr].shape)


def _reduce_to(g: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Sum the (K, *broadcast shape) gradient ``g`` down to (K, *shape) (undoing broadcasting)."""
    lead = g.dim() - 1 - len(shape)
    if lead > 0:
        g = g.sum(dim=tuple(range(1, 1 + lead)))
    dims = tuple(i + 1 for i, n in enumerate(shape) if n == 1 and g.shape[i + 1] != 1)
    return g.sum(dim=dims, keepdim=True) if dims else g


# ------------------------------------------------------------------------------ node rules
# each: (node, gradient at its output (K, *out), which edges are wanted, edges) -> gradient per edge
def _addmm(node, g, wanted, edges):
    alpha, beta = node._saved_alpha, node._saved_beta
    out: list[torch.Tensor | None] = [None, None, None]
    if wanted[0]:
        out[0] = _reduce_to(g if beta == 1 else g * beta, _shape(edges[0]))
    if wanted[1]:
        grad = torch.matmul(g, node._saved_mat2.transpose(0, 1))
        out[1] = grad if alpha == 1 else grad * alpha
    if wanted[2]:
        grad = _weight_grad(node._saved_mat1, g, edges[2])
        out[2] = grad if alpha == 1 else grad * alpha
    return out


def _mm(node, g, wanted, edges):
    out: list[torch.Tensor | None] = [None, None]
    if wanted[0]:
        out[0] = torch.matmul(g, node._saved_mat2.transpose(0, 1))
    if wanted[1]:
        out[1] = _weight_grad(node._saved_self, g, edges[1])
    return out


def _weight_grad(X: torch.Tensor, g: torch.Tensor, edge: tuple[object, int]) -> torch.Tensor:
    """The K products Xᵀ g_k (K, in, out). When they go on through a transpose to the weight (nn.Linear
    stores W as (out, in)), they are formed as g_kᵀ X, so that the weight's gradient is contiguous."""
    if type(edge[0]).__name__ == "TBackward0":
        return torch.matmul(g.transpose(1, 2), X).transpose(1, 2)
    return torch.matmul(X.transpose(0, 1), g)


def _t(node, g, wanted, edges):
    return [g.transpose(-2, -1) if g.dim() == 3 else g]


def _relu(node, g, wanted, edges):
    return [torch.ops.aten.threshold_backward(g, node._saved_result, 0)]


def _tanh(node, g, wanted, edges):
    return [torch.ops.aten.tanh_backward(g, node._saved_result)]


def _sigmoid(node, g, wanted, edges):
    return [torch.ops.aten.sigmoid_backward(g, node._saved_result)]


def _leaky_relu(node, g, wanted, edges):
    return [torch.ops.aten.leaky_relu_backward(g, node._saved_self, node._saved_negative_slope, False)]


def _leaky_relu_in_place(node, g, wanted, edges):
    return [torch.ops.aten.leaky_relu_backward(g, node._saved_result, node._saved_negative_slope, True)]


def _gelu(node, g, wanted, edges):
    return [torch.ops.aten.gelu_backward(g, node._saved_self, approximate=node._saved_approximate)]


def _silu(node, g, wanted, edges):
    return [torch.ops.aten.silu_backward(g, node._saved_self)]


def _elu(node, g, wanted, edges):
    alpha, scale, input_scale = node._saved_alpha, node._saved_scale, node._saved_input_scale
    return [torch.ops.aten.elu_backward(g, alpha, scale, input_scale, False, node._saved_self)]


def _elu_in_place(node, g, wanted, edges):
    alpha, scale, input_scale = node._saved_alpha, node._saved_scale, node._saved_input_scale
    return [torch.ops.aten.elu_backward(g, alpha, scale, input_scale, True, node._saved_result)]


def _softplus(node, g, wanted, edges):
    return [torch.ops.aten.softplus_backward(g, node._saved_self, node._saved_beta, node._saved_threshold)]


def _add(node, g, wanted, edges, sign=1):
    """a + alpha·b (``sign`` −1: a − alpha·b), e.g. a residual connection."""
    alpha = sign * node._saved_alpha
    out: list[torch.Tensor | None] = [None, None]
    if wanted[0]:
        out[0] = _reduce_to(g, _shape(edges[0]))
    if wanted[1]:
        out[1] = _reduce_to(g if alpha == 1 else g * alpha, _shape(edges[1]))
    return out


def _sub(node, g, wanted, edges):
    return _add(node, g, wanted, edges, sign=-1)


def _mul(node, g, wanted, edges):
    out: list[torch.Tensor | None] = [None, None]
    if wanted[0]:
        out[0] = _reduce_to(g * node._saved_other, _shape(edges[0]))
    if wanted[1]:
        out[1] = _reduce_to(g * node._saved_self, _shape(edges[1]))
    return out


# ------------------------------------------------------------------------------ shape and mixing rules
def _dim(d: int, ndim: int) -> int:
    """A saved dimension (PyTorch stores negative ones as unsigned 64-bit) as a non-negative index into
    a tensor of ``ndim`` dimensions; +1 gives the axis in the stacked (K, ...) gradient."""
    if d >= 2**63:
        d -= 2**64
    return d + ndim if d < 0 else d


def _sizes(node) -> tuple[int, ...]:
    return tuple(int(n) for n in node._saved_self_sym_sizes)


def _reshape(node, g, wanted, edges):  # view, reshape, flatten, squeeze, matmul's unsafe view
    return [g.reshape(g.shape[0], *_sizes(node))]


def _identity(node, g, wanted, edges):  # clone (e.g. reshape of a non-contiguous tensor)
    return [g]


def _unsqueeze(node, g, wanted, edges):
    return [g.squeeze(_dim(node._saved_dim, g.dim() - 1) + 1)]


def _permute(node, g, wanted, edges):
    dims = [_dim(d, g.dim() - 1) for d in node._saved_dims]
    inverse = [0] * len(dims)
    for i, d in enumerate(dims):
        inverse[d] = i
    return [g.permute(0, *(1 + i for i in inverse))]


def _transpose(node, g, wanted, edges):
    ndim = g.dim() - 1
    return [g.transpose(_dim(node._saved_dim0, ndim) + 1, _dim(node._saved_dim1, ndim) + 1)]


def _stack(node, g, wanted, edges):
    axis = _dim(node._saved_dim, g.dim() - 1) + 1
    return [g.select(axis, i) if want else None for i, want in enumerate(wanted)]


def _cat(node, g, wanted, edges):
    axis = _dim(node._saved_dim, g.dim() - 1) + 1
    # a part that needs no gradient (e.g. raw numerical features) has no metadata: it gets the remainder
    sizes = [None if e[0] is None else _shape(e)[axis - 1] for e in edges]
    if sizes.count(None) > 1:
        raise TypeError("cat of several inputs without gradient")
    if None in sizes:
        sizes[sizes.index(None)] = g.shape[axis] - sum(n for n in sizes if n is not None)
    parts = g.split(sizes, dim=axis)
    return [part if want else None for part, want in zip(parts, wanted)]


def _sum(node, g, wanted, edges):  # also mean's expansion (MeanBackward0/1 save the same dimensions)
    sizes = _sizes(node)
    if type(node).__name__ in ("SumBackward1", "MeanBackward1") and not node._saved_keepdim:
        for d in sorted(_dim(d, len(sizes)) for d in node._saved_dim):
            g = g.unsqueeze(d + 1)
    elif type(node).__name__ in ("SumBackward0", "MeanBackward0"):
        g = g.reshape(g.shape[0], *([1] * len(sizes)))
    return [g.expand(g.shape[0], *sizes)]


def _mean(node, g, wanted, edges):
    count = math.prod(_sizes(node)) // max(g[0].numel(), 1)  # elements averaged into each output
    return [_sum(node, g / count, wanted, edges)[0]]


def _expand(node, g, wanted, edges):
    return [_reduce_to(g, _sizes(node))]


def _div(node, g, wanted, edges):
    other = node._saved_other
    out: list[torch.Tensor | None] = [None, None]
    if wanted[0]:
        out[0] = _reduce_to(g / other, _shape(edges[0]))
    if wanted[1]:
        out[1] = _reduce_to(-g * node._saved_self / (other * other), _shape(edges[1]))
    return out


def _neg(node, g, wanted, edges):
    return [-g]


def _signed(v: int) -> int:
    """A saved integer (PyTorch stores negative ones as unsigned 64-bit) with its sign."""
    return v - 2**64 if v >= 2**63 else v


def _slice(node, g, wanted, edges):
    sizes = _sizes(node)
    index = [slice(None)] * (len(sizes) + 1)
    index[_dim(node._saved_dim, len(sizes)) + 1] = slice(
        _signed(node._saved_start), _signed(node._saved_end), _signed(node._saved_step)
    )
    out = g.new_zeros((g.shape[0], *sizes))
    out[tuple(index)] = g
    return [out]


def _select(node, g, wanted, edges):
    sizes = _sizes(node)
    out = g.new_zeros((g.shape[0], *sizes))
    out.select(_dim(node._saved_dim, len(sizes)) + 1, _signed(node._saved_index)).copy_(g)
    return [out]


# ------------------------------------------------------------------------------ normalisation rules
def _normalised(g: torch.Tensor, x_hat: torch.Tensor, scale: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """∂/∂x of a normalisation y = x̂ (x̂ = (x − mean)·rstd over ``dims``) for each of the K rows of g:
    rstd · (g − mean(g) − x̂ · mean(g x̂)), the means over ``dims`` of each row; ``scale``: rstd
    (times the affine weight) broadcast to x."""
    return scale * (g - g.mean(dims, keepdim=True) - x_hat * (g * x_hat).mean(dims, keepdim=True))


def _layer_norm(node, g, wanted, edges):
    """LayerNorm: statistics of each sample over its last len(normalized_shape) dimensions."""
    x, mean, rstd = node._saved_input, node._saved_result1, node._saved_result2
    weight = node._saved_weight
    x_hat = (x - mean) * rstd
    m = len(node._saved_normalized_shape)
    norm_dims = tuple(range(g.dim() - m, g.dim()))
    batch_dims = tuple(range(1, g.dim() - m))
    out: list[torch.Tensor | None] = [None, None, None]
    if wanted[0]:
        gw = g if weight is None else g * weight
        out[0] = _normalised(gw, x_hat, rstd, norm_dims)
    if wanted[1]:
        out[1] = (g * x_hat).sum(batch_dims) if batch_dims else g * x_hat
    if wanted[2]:
        out[2] = g.sum(batch_dims) if batch_dims else g
    return out


def _batch_norm(node, g, wanted, edges):
    """BatchNorm: per-channel (axis 1) statistics over the batch and spatial axes, of the batch in
    training mode (each task's row differentiated through them) or the running ones in eval mode."""
    x, weight, eps = node._saved_input, node._saved_weight, node._saved_eps
    shape = (1, -1) + (1,) * (x.dim() - 2)  # a (C,) vector broadcast along x's channel axis
    if node._saved_training:
        mean, invstd = node._saved_result1, node._saved_result2
    else:
        mean, invstd = node._saved_running_mean, torch.rsqrt(node._saved_running_var + eps)
    x_hat = (x - mean.view(shape)) * invstd.view(shape)
    reduced = (1, *range(3, g.dim()))  # every axis of each row but the channels
    out: list[torch.Tensor | None] = [None, None, None]
    if wanted[0]:
        scale = invstd if weight is None else invstd * weight
        if node._saved_training:
            out[0] = _normalised(g, x_hat, scale.view(shape), reduced)
        else:
            out[0] = g * scale.view(shape)
    if wanted[1]:
        out[1] = (g * x_hat).sum(reduced)
    if wanted[2]:
        out[2] = g.sum(reduced)
    return out


def _softmax(node, g, wanted, edges):
    result = node._saved_result
    axis = _dim(node._saved_dim, result.dim()) + 1
    return [result * (g - (g * result).sum(axis, keepdim=True))]


def _bmm(node, g, wanted, edges):
    out: list[torch.Tensor | None] = [None, None]
    if wanted[0]:
        out[0] = torch.matmul(g, node._saved_mat2.transpose(-2, -1))
    if wanted[1]:
        out[1] = torch.matmul(node._saved_self.transpose(-2, -1), g)
    return out


def _embedding(node, g, wanted, edges):
    """Rows of an embedding table: the K (V, D) gradients are index-adds of the looked-up rows' gradients
    (the padding row gets none). Frequency-scaled or sparse gradients: no rule (the engine declines)."""
    if node._saved_scale_grad_by_freq or node._saved_sparse:
        raise TypeError("embedding with scale_grad_by_freq or sparse gradients")
    indices, K = node._saved_indices.reshape(-1), g.shape[0]
    rows = g.reshape(K, indices.numel(), -1)
    out = rows.new_zeros(K, int(node._saved_weight_sym_argsize_0), rows.shape[-1]).index_add_(1, indices, rows)
    padding = node._saved_padding_idx
    if padding < 2**63:  # None is stored as -1, i.e. 2**64 - 1
        out[:, padding] = 0
    return [out]


_HANDLERS: dict[str, Callable] = {
    "AddmmBackward0": _addmm,
    "MmBackward0": _mm,
    "TBackward0": _t,
    "ReluBackward0": _relu,
    "TanhBackward0": _tanh,
    "SigmoidBackward0": _sigmoid,
    "MulBackward0": _mul,
    "LeakyReluBackward0": _leaky_relu,
    "LeakyReluBackward1": _leaky_relu_in_place,
    "GeluBackward0": _gelu,
    "SiluBackward0": _silu,
    "EluBackward0": _elu,
    "EluBackward1": _elu_in_place,
    "SoftplusBackward0": _softplus,
    "AddBackward0": _add,
    "SubBackward0": _sub,
    "ViewBackward0": _reshape,
    "UnsafeViewBackward0": _reshape,
    "SqueezeBackward0": _reshape,
    "SqueezeBackward1": _reshape,
    "SqueezeBackward2": _reshape,
    "CloneBackward0": _identity,
    "UnsqueezeBackward0": _unsqueeze,
    "PermuteBackward0": _permute,
    "TransposeBackward0": _transpose,
    "StackBackward0": _stack,
    "CatBackward0": _cat,
    "SumBackward0": _sum,
    "SumBackward1": _sum,
    "MeanBackward0": _mean,
    "MeanBackward1": _mean,
    "ExpandBackward0": _expand,
    "DivBackward0": _div,
    "NegBackward0": _neg,
    "SliceBackward0": _slice,
    "SelectBackward0": _select,
    "NativeLayerNormBackward0": _layer_norm,
    "NativeBatchNormBackward0": _batch_norm,
    "SoftmaxBackward0": _softmax,
    "BmmBackward0": _bmm,
    "EmbeddingBackward0": _embedding,
}
