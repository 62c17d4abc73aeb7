"""Gradient balancing methods: per-task gradients in, one update direction out.

Every method here is a :class:`GradientBalancer`: its :meth:`~GradientBalancer.backward` computes the
per-task gradients of the shared parameters (or, with ``rep_grad=True``, of the shared representation
z) in one batched backward (:mod:`polytask.balancing.jacobian`), aggregates them into d = Jᵀw, and
writes ``.grad``:

- shared parameters receive d (in rep-grad mode: one backward of z with the aggregated ∂/∂z, so the
  encoder is trained too);
- task-specific parameters receive Σ_k w_k ∂L_k/∂θ (their own task's gradient, times w_k where the
  method defines weights and ``scale_heads`` is on; times 1 otherwise). When ``task_params`` is not
  given they are found from the autograd graph, so no parameter is silently left without a gradient;
- under ``torch.distributed`` the per-task gradients (and losses) are averaged over processes before the
  aggregation, so each rank takes the step the whole global batch would give.

The weightings themselves are pure functions in :mod:`polytask.balancing.gramian_weightings`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from polytask.balancing import factored as fac
from polytask.balancing import gramian_weightings as gw
from polytask.balancing import jacobian as jac
from polytask.balancing.base import Balancer, Losses, Params
from polytask.balancing.registry import register
from polytask.balancing.sparse_rows import SparseRows
from polytask.balancing.weightings import initial_losses
from polytask.errors import PolytaskError, SolverError


class GradientBalancer(Balancer):
    """Base of the gradient methods.

    Subclasses implement :meth:`gram_weights` (G and losses -> weights w, d = Jᵀw) or, for methods that
    are not functions of G, :meth:`aggregate`. With absent tasks (:attr:`~Balancer.present`)
    :meth:`gram_weights` gets the present tasks' rows and columns of G only, and their indices ``rows``
    for per-task options and state. Options shared by all: ``rep_grad`` (per-task gradients
    w.r.t. the representation z instead of the shared parameters: MGDA-UB style, cheaper, approximate),
    ``engine`` (``auto``/``direct``/``batched``/``loop``, see :func:`~polytask.balancing.jacobian.task_gradients`),
    ``factored`` (``auto``: linear layers whose Gram contribution is cheaper from their inputs and output
    gradients than from K weight gradients are held in that form, :mod:`polytask.balancing.factored`;
    ``always``; ``never``: exact either way; under ``torch.distributed`` their rows are gathered from all
    processes; not used in rep-grad mode) and
    ``scale_heads`` (task-specific parameters get w_k times their task's gradient; ``False``: 1 times).
    """

    needs_shared_params = True
    averages_over_processes = True
    supports_rep_grad = True
    defines_weights = True  # False: heads always get their plain task gradient (PCGrad, GradVac, ...)
    # what to use instead in rep-grad mode on a model without one shared representation (None: nothing)
    parameter_mode: str | None = "rep_grad=False (the same method on the shared parameters)"

    def __init__(
        self,
        tasks: Sequence[str] | int,
        rep_grad: bool = False,
        engine: str = "auto",
        scale_heads: bool = True,
        factored: str = "auto",
    ):
        super().__init__(tasks)
        if rep_grad and not self.supports_rep_grad:
            raise PolytaskError(f"{self.name}: rep_grad=True is not supported")
        if engine not in jac.ENGINES:
            raise PolytaskError(f"{self.name}: engine must be one of {jac.ENGINES}, got {engine!r}")
        if factored not in fac.MODES:
            raise PolytaskError(f"{self.name}: factored must be one of {fac.MODES}, got {factored!r}")
        self.rep_grad = bool(rep_grad)
        self.needs_representation = self.rep_grad
        self.engine = engine
        self.factored = factored
        self.engine_used: str | None = None
        self._auto = jac.AutoEngine()  # what engine='auto' learned about this model
        self.scale_heads = bool(scale_heads)
        self._checked_coverage = False
        # G's relative rounding level in this step (jacobian.noise_level): what gram_weights treats as zero
        self.noise = gw.FLOAT64_NOISE
        # the lowest precision the per-task gradients went through when their dtype does not show it (the
        # Trainer sets bfloat16 under AMP: float32 parameter gradients of a bfloat16 forward and backward)
        self.computed_in: torch.dtype | None = None

    def incompatibility(self, shared_params: Params, has_representation: bool | None) -> str | None:
        shared_params = list(shared_params)
        problem = super().incompatibility(shared_params, has_representation)
        parameter_mode_works = any(p.requires_grad for p in shared_params)
        if problem and self.rep_grad and has_representation is False and self.parameter_mode and parameter_mode_works:
            problem += f"; use {self.parameter_mode}"
        return problem

    # ------------------------------------------------------------------ what subclasses provide
    def gram_weights(self, G: np.ndarray, losses: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(n,) weights from the n x n Gram matrix (float64) and the (global) losses of the n tasks
        ``rows`` (indices into :attr:`tasks`; all K unless some are absent)."""
        raise NotImplementedError

    def aggregate(
        self, jacobian: jac.TaskJacobian, losses: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Per-target update Jᵀw, the weights w on the shared gradients, and the weights for the heads; J,
        the losses and the weights are over the present tasks (:meth:`present_rows`)."""
        G = self.global_gramian(jacobian).cpu().numpy()
        self.noise = jacobian.gram_noise(self.computed_in)
        w_np = self.gram_weights(G, losses.detach().double().cpu().numpy(), np.asarray(self.present_rows()))
        if not np.all(np.isfinite(w_np)):
            raise SolverError(f"{self.name}: non-finite weights {w_np.tolist()} from Gram matrix {G.tolist()}")
        dtype = jacobian.targets[0].dtype
        w = torch.as_tensor(w_np, dtype=dtype, device=jacobian.targets[0].device)
        heads = w if (self.scale_heads and self.defines_weights) else torch.ones_like(w)
        return jacobian.combine(w), w, heads

    def global_gramian(self, jacobian: jac.TaskJacobian) -> torch.Tensor:
        """G of the global batch. Parameter gradients are already averaged over processes. For gradients
        w.r.t. z, rank r holds rows (B_global/B_r) times those of the global batch's samples, so with n
        equal ranks G = (1/n²) Σ_r G_r."""
        G = jacobian.gramian()
        n = jac.world_size()
        if self.rep_grad and n > 1:
            jac.all_reduce_mean([G])
            G /= n
        return G

    # ------------------------------------------------------------------ the step
    def backward(
        self,
        losses: Losses,
        shared_params: Params | None = None,
        task_params: Mapping[str, Params] | None = None,
        representation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-task gradients -> aggregated ``.grad`` on every parameter; returns the (K,) weights w with
        d = Σ_k w_k g_k (for methods without task weights, the effective coefficients)."""
        stacked = self.stack_losses(losses)
        self.check_no_empty_process()
        given = None if shared_params is None else list(shared_params)
        shared = None if given is None else _unique(p for p in given if p.requires_grad)
        if self.rep_grad:
            if representation is None:
                raise PolytaskError(
                    f"{self.name}: rep_grad=True needs representation= (e.g. model.representation, the shared "
                    "encoder output of this forward pass, still in the graph); models without one shared "
                    "representation (MMoE, PLE: gates and experts both read the input) need rep_grad=False"
                )
            if not representation.requires_grad:
                raise PolytaskError(f"{self.name}: the representation does not require grad (was it detached?)")
            targets = [representation]
        else:
            if not given:
                what = "none were given" if given is None else "the list is empty (a model without shared layers?)"
                raise PolytaskError(
                    f"{self.name}: gradient methods need shared_params= (e.g. model.shared_parameters()), and {what}"
                )
            if not shared:
                raise PolytaskError(
                    f"{self.name}: no shared parameter requires grad (a frozen encoder?): gradient methods balance "
                    "the gradients of shared parameters; while it is frozen, train with a loss weighting (e.g. ew)"
                )
            targets = shared
        stacked = self.present_losses()  # the per-task gradients of the present tasks only
        heads = self._heads(stacked, shared, task_params, representation)
        # no compiled code that several per-task backwards would cross
        self._auto.check_first_step(stacked, self.name, representation if self.rep_grad else None)
        distributed = jac.world_size() > 1
        factored = "never" if self.rep_grad else self.factored
        jacobian, head_grads, self.engine_used = jac.task_jacobian(
            stacked,
            targets,
            heads,
            factored=factored,
            retain_graph=self.rep_grad,
            must_use=int(self.rep_grad),
            **self._auto.options(self.engine),
        )
        self._auto.learn(self.engine, len(stacked), self.engine_used)
        global_losses = stacked.detach().clone()
        # per-task gradients of parameters are averaged over processes (= the global batch's); gradients
        # w.r.t. z belong to each rank's own samples and stay local (aggregate() combines their Gram matrices)
        jac.all_reduce_mean([*head_grads, global_losses, *([] if self.rep_grad else jacobian.dense_blocks())])
        update, w, head_w = self.aggregate(jacobian, global_losses)
        if distributed and jacobian.factored:  # factored layers' Jᵀw is per process: average it
            jac.all_reduce_mean([update[i] for _, indices in jacobian.factored for i in indices])
        if self.rep_grad:
            encoder = shared or [p for p in jac.graph_leaves(representation) if p.requires_grad]
            dz = update[0].to(representation.dtype)
            # autograd.grad, not backward: no DDP hook fires; the ranks' encoder gradients are averaged here
            enc = torch.autograd.grad(representation, encoder, dz, allow_unused=True)
            update = [torch.zeros_like(p) if g is None else g for g, p in zip(enc, encoder)]
            jac.all_reduce_mean(update)
            targets = encoder
        update, shared_scale = self.finalize_shared(update)
        jac.accumulate(targets, update)
        if heads:
            jac.accumulate(heads, jac.combine(head_grads, head_w))
        # the weights of the update actually applied to the shared parameters: d = Σ_k w_k g_k
        return self._record(self.all_tasks(w if shared_scale == 1.0 else w * shared_scale))

    def finalize_shared(self, update: list[torch.Tensor]) -> tuple[list[torch.Tensor], float]:
        """Last change to the shared parameters' update (e.g. Nash-MTL's norm clipping) and the factor it
        scaled d by (the returned weights are scaled alike); default: none, 1."""
        return update, 1.0

    def _heads(
        self,
        stacked: torch.Tensor,
        shared: list[torch.Tensor] | None,
        task_params: Mapping[str, Params] | None,
        representation: torch.Tensor | None,
    ) -> list[torch.Tensor]:
        shared_ids = {id(p) for p in shared or ()}
        if task_params is None and self.contested:
            raise PolytaskError(
                f"{self.name}: a task is absent (loss None) in some processes only, so the task-specific parameters "
                "found in each process's graph differ; pass task_params= (e.g. model.task_parameters())"
            )
        if task_params is None:
            leaves = jac.graph_leaves(stacked, stop_at=representation if self.rep_grad else None)
            if self.rep_grad:
                self._check_cut(leaves, shared_ids)
            return [p for p in leaves if id(p) not in shared_ids]
        unknown = [t for t in task_params if t not in self.tasks]
        if unknown:
            raise PolytaskError(f"{self.name}: task_params for unknown task(s) {unknown}; tasks: {self.tasks}")
        heads, seen = [], set()
        present = self.present.tolist() if self.present is not None else [True] * self.num_tasks
        absent = {t for t, here in zip(self.tasks, present) if not here}
        for task, params in task_params.items():
            if task in absent:  # no gradient (None, not 0: an optimizer then skips them, as without the task)
                continue
            for p in params:
                if p.requires_grad and id(p) not in seen:
                    if id(p) in shared_ids:
                        raise PolytaskError(f"{self.name}: a parameter is in both shared_params and task_params")
                    seen.add(id(p))
                    heads.append(p)
        if not self._checked_coverage:  # once: every parameter the losses reach must get a gradient
            self._checked_coverage = True
            stop = representation if self.rep_grad else None
            leaves = jac.graph_leaves(stacked, stop_at=stop)
            if self.rep_grad:
                self._check_cut(leaves, shared_ids)
            missed = [p for p in leaves if id(p) not in seen and id(p) not in shared_ids]
            if missed:
                shapes = [tuple(p.shape) for p in missed[:5]]
                stack_hint = (
                    ""
                    if self.present is None
                    else " (an absent task's head is still in the graph when the other "
                    "losses are elements of one stack of all losses: pass each task's own loss)"
                )
                raise PolytaskError(
                    f"{self.name}: {len(missed)} parameter(s) the losses depend on are in neither shared_params nor "
                    f"task_params (shapes {shapes}...); they would get no gradient. Pass them, or omit task_params "
                    f"to let polytask find the task-specific parameters in the graph{stack_hint}"
                )
        return heads

    def _check_cut(self, leaves_above_z: list[torch.Tensor], shared_ids: set[int]) -> None:
        """In rep-grad mode every path from a shared parameter to the losses must pass through z."""
        downstream = [p for p in leaves_above_z if id(p) in shared_ids]
        if downstream:
            raise PolytaskError(
                f"{self.name}: rep_grad=True, but {len(downstream)} shared parameter(s) reach the losses without "
                "passing through the representation (shapes "
                f"{[tuple(p.shape) for p in downstream[:4]]}); they would get no gradient. Use the parameter mode "
                "(rep_grad=False), or pass the tensor that all shared computation flows through"
            )

    def get_extra_state(self) -> Any:
        return {}

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, rep_grad={self.rep_grad}, engine={self.engine!r}"


# =================================================================== Gramian methods
@register("mgda")
class MGDA(GradientBalancer):
    """MGDA (Sener & Koltun 2018): d = min-norm element of the convex hull of the task gradients.

    ``normalization``: none (default, the paper's definition) / l2 / loss / loss+ (the reference code's
    gradient normalisers; weights found on g_k/n_k are applied to the raw losses, as there). ``solver``:
    ``active_set`` (default: the exact min-norm point) or ``frank_wolfe`` (the paper's Algorithm 2 with the
    reference stopping rule Σ|Δw| < 1e-5, which on badly scaled gradients can stop at a point that
    still conflicts with a task). K = 2 is solved in closed form either way.
    ``rep_grad=True`` is MGDA-UB (also registered as ``mgda_ub``)."""

    name = "mgda"

    def __init__(
        self,
        tasks: Sequence[str] | int,
        normalization: str = "none",
        solver: str = "active_set",
        rep_grad: bool = False,
        engine: str = "auto",
        scale_heads: bool = True,
        factored: str = "auto",
    ):
        super().__init__(tasks, rep_grad, engine, scale_heads, factored)
        if normalization not in gw.MGDA_NORMALIZATIONS:
            raise PolytaskError(f"mgda: normalization must be one of {gw.MGDA_NORMALIZATIONS}, got {normalization!r}")
        if solver not in ("frank_wolfe", "active_set"):
            raise PolytaskError(f"mgda: solver must be 'frank_wolfe' or 'active_set', got {solver!r}")
        self.normalization, self.solver = normalization, solver
        if normalization in ("loss", "loss+"):
            self.loss_use = f"divides each task's gradient by its loss (normalization={normalization!r})"
            self.loss_floor_hint = (
                "add a constant to that loss so that it cannot be negative, or use normalization='l2'"
            )

    def gram_weights(self, G: np.ndarray, losses: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return gw.mgda_weights(G, gw.mgda_normalizers(G, losses, self.normalization), self.solver)


@register("mgda_ub")
class MGDAUB(MGDA):
    """MGDA-UB (Sener & Koltun 2018): MGDA on the gradients w.r.t. the shared representation z (an upper
    bound of the shared-parameter problem); the encoder is trained through one backward of z."""

    name = "mgda_ub"
    parameter_mode = "mgda (MGDA on the shared parameters)"

    def __init__(
        self,
        tasks: Sequence[str] | int,
        normalization: str = "none",
        solver: str = "active_set",
        rep_grad: bool = True,
        engine: str = "auto",
        scale_heads: bool = True,
        factored: str = "auto",
    ):
        super().__init__(tasks, normalization, solver, rep_grad, engine, scale_heads, factored)


@register("cagrad")
class CAGrad(GradientBalancer):
    """CAGrad (Liu et al. 2021): maximise the worst task improvement within a ball of radius c‖g_0‖
    around the mean gradient g_0; c = 0.4, ``rescale`` = 1 (divide by 1 + c²). Task-specific parameters
    get their plain task gradient (the method defines a direction, not task weights)."""

    name = "cagrad"
    defines_weights = False

    def __init__(
        self,
        tasks: Sequence[str] | int,
        c: float = 0.4,
        rescale: int = 1,
        rep_grad: bool = False,
        engine: str = "auto",
        factored: str = "auto",
    ):
        super().__init__(tasks, rep_grad, engine, factored=factored)
        if c < 0:
            raise PolytaskError(f"cagrad: c must be >= 0, got {c}")
        if rescale not in (0, 1, 2):
            raise PolytaskError(f"cagrad: rescale must be 0, 1 or 2, got {rescale}")
        self.c, self.rescale = float(c), int(rescale)

    def gram_weights(self, G: np.ndarray, losses: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return gw.cagrad_weights(G, self.c, self.rescale, self.noise)


@register("nash_mtl")
class NashMTL(GradientBalancer):
    """Nash-MTL (Navon et al. 2022): weights w > 0 with G w = 1/w (Nash bargaining), d = Jᵀw, ‖d‖
    clipped to ``max_norm`` (1.0 as in the reference; 0 disables). ``update_every`` n: recompute w every
    n steps and reuse it in between (one ordinary backward). When the bargaining problem has no solution
    (0 in the convex hull of the task gradients) ``on_failure='raise'`` raises :class:`SolverError`;
    ``'keep'`` reuses the previous weights, or where none were solved yet for these tasks the reference
    code's initial weights α = 1, and warns (``failures`` counts it) — never a silent fallback. The
    returned weights are those of the clipped d (the heads get the unclipped w, as in the reference).
    G is not normalised (the reference code divides G by its norm, which rescales w); the solution is
    exact for G."""

    name = "nash_mtl"

    def __init__(
        self,
        tasks: Sequence[str] | int,
        update_every: int = 1,
        max_norm: float = 1.0,
        on_failure: str = "raise",
        rep_grad: bool = False,
        engine: str = "auto",
        scale_heads: bool = True,
        factored: str = "auto",
    ):
        super().__init__(tasks, rep_grad, engine, scale_heads, factored)
        if update_every < 1:
            raise PolytaskError(f"nash_mtl: update_every must be >= 1, got {update_every}")
        if on_failure not in ("raise", "keep"):
            raise PolytaskError(f"nash_mtl: on_failure must be 'raise' or 'keep', got {on_failure!r}")
        self.update_every, self.max_norm, self.on_failure = int(update_every), float(max_norm), on_failure
        self.steps = 0
        self.failures = 0
        self._weights: np.ndarray | None = None

    def gram_weights(self, G: np.ndarray, losses: np.ndarray, rows: np.ndarray) -> np.ndarray:
        # between solves the last weights are reused, for the tasks they were solved for only
        reusable = (
            self._weights is not None
            and len(self._weights) == self.num_tasks
            and bool(np.all((self._weights > 0) == np.isin(np.arange(self.num_tasks), rows)))
        )
        if reusable and self.steps % self.update_every != 0:
            w = self._weights[rows]
        else:
            try:
                w = gw.nash_mtl_weights(G)
            except SolverError:
                if self.on_failure == "raise":
                    raise
                self.failures += 1
                # no weights solved yet for these tasks: the reference's initial weights, α = 1
                w = self._weights[rows] if reusable else np.ones(len(rows))
                what = "the previous weights" if reusable else "the initial weights 1 (none solved yet)"
                warnings.warn(
                    f"nash_mtl: bargaining problem unsolvable at step {self.steps}; using {what} "
                    f"({self.failures} time(s) so far)",
                    RuntimeWarning,
                    stacklevel=2,
                )
        self._weights = np.zeros(self.num_tasks)
        self._weights[rows] = w
        self.steps += 1
        return w

    def finalize_shared(self, update: list[torch.Tensor]) -> tuple[list[torch.Tensor], float]:
        if self.max_norm > 0:
            norm = float(_global_norm(update))
            if norm > self.max_norm:
                factor = self.max_norm / norm
                for u in update:  # fresh tensors from combine(): scaled in place
                    u.mul_(factor)
                return update, factor
        return update, 1.0

    def get_extra_state(self) -> Any:
        weights = None if self._weights is None else [float(v) for v in self._weights]
        return {"steps": self.steps, "failures": self.failures, "weights": weights}

    def set_extra_state(self, state: Any) -> None:
        self.steps, self.failures = state["steps"], state["failures"]
        self._weights = None if state["weights"] is None else np.asarray(state["weights"], dtype=np.float64)


def _global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """‖concat(tensors)‖: per-tensor norms in the tensors' own precision (a float64 copy of every update
    cost a pass over memory), combined in float64. Nash-MTL's d has ‖d‖² = wᵀGw = K at its solution, so
    no square comes near overflowing."""
    norms = [torch.linalg.vector_norm(t.coalesce().values() if t.is_sparse else t).double() for t in tensors]
    return torch.linalg.vector_norm(torch.stack(norms))


@register("imtl_g")
class IMTLG(GradientBalancer):
    """IMTL-G (Liu et al. 2021): Σ w_k = 1 and the update has equal projections on all unit task
    gradients (closed form). As in the paper's Algorithm 1, task-specific parameters get their own
    task's gradient unweighted."""

    name = "imtl_g"
    defines_weights = False  # the paper updates θ_k with ∇L_k itself (IMTL-G weights may be negative)

    def __init__(
        self, tasks: Sequence[str] | int, rep_grad: bool = False, engine: str = "auto", factored: str = "auto"
    ):
        super().__init__(tasks, rep_grad, engine, factored=factored)

    def gram_weights(self, G: np.ndarray, losses: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return gw.imtl_g_weights(G, self.noise)


@register("imtl")
class IMTL(GradientBalancer):
    """IMTL (Liu et al. 2021), hybrid: losses scaled by e^{s_k} (IMTL-L, learnable s, objective
    e^{s_k} L_k − s_k) and IMTL-G applied to the scaled gradients; task-specific parameters get
    ∇(e^{s_k} L_k). Returns the effective weights on the raw task gradients. Add
    ``balancer.parameters()`` to the optimizer."""

    name = "imtl"
    defines_weights = False  # heads: ∇(e^{s_k} L_k), the paper's Algorithm 1
    loss_use = "minimises e^{s} L - s over s, which has no minimum when L < 0 (the scale e^{s} diverges)"

    def __init__(
        self, tasks: Sequence[str] | int, rep_grad: bool = False, engine: str = "auto", factored: str = "auto"
    ):
        super().__init__(tasks, rep_grad, engine, factored=factored)
        self.log_scales = nn.Parameter(torch.zeros(self.num_tasks))

    def aggregate(self, jacobian, losses):
        rows = torch.as_tensor(self.present_rows(), device=self.log_scales.device)
        scale = torch.exp(self.log_scales.detach()[rows])
        update, w, heads = super().aggregate(jacobian.scaled(scale), losses)
        # ∂/∂s_k (e^{s_k} L_k − s_k) = e^{s_k} L_k − 1; an absent task's s gets none
        s_grad = self.all_tasks(scale * losses.to(scale) - 1)
        scale = scale.to(w.dtype)
        self.log_scales.grad = s_grad if self.log_scales.grad is None else self.log_scales.grad + s_grad
        return update, w * scale, heads * scale

    def gram_weights(self, G: np.ndarray, losses: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return gw.imtl_g_weights(G, self.noise)


@register("aligned_mtl")
class AlignedMTL(GradientBalancer):
    """Aligned-MTL (Senushkin et al. 2023): align the principal components of J (equal singular values
    of the aligned Jacobian), w = B u. ``scale``: min (paper) / median / rmse; ``pref``: preference u."""

    name = "aligned_mtl"

    def __init__(
        self,
        tasks: Sequence[str] | int,
        scale: str = "min",
        pref: Sequence[float] | None = None,
        rep_grad: bool = False,
        engine: str = "auto",
        scale_heads: bool = True,
        factored: str = "auto",
    ):
        super().__init__(tasks, rep_grad, engine, scale_heads, factored)
        if scale not in gw.ALIGNED_SCALES:
            raise PolytaskError(f"aligned_mtl: scale must be one of {gw.ALIGNED_SCALES}, got {scale!r}")
        self.scale = scale
        self.pref = _preference(pref, self.num_tasks, self.name)

    def gram_weights(self, G: np.ndarray, losses: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return gw.aligned_mtl_weights(G, _subset(self.pref, rows), self.scale, self.noise)


@register("upgrad")
class UPGrad(GradientBalancer):
    """UPGrad (Quinton & Rey 2024): average of the projections of each task gradient onto the dual cone
    of all of them (never conflicts with any task: J d ≥ 0). ``reg_eps``/``norm_eps`` > 0 give TorchJD's
    regularised variant (its defaults are 1e-4 each); 0 (default) is the exact definition."""

    name = "upgrad"

    def __init__(
        self,
        tasks: Sequence[str] | int,
        pref: Sequence[float] | None = None,
        norm_eps: float = 0.0,
        reg_eps: float = 0.0,
        rep_grad: bool = False,
        engine: str = "auto",
        scale_heads: bool = True,
        factored: str = "auto",
    ):
        super().__init__(tasks, rep_grad, engine, scale_heads, factored)
        if norm_eps < 0 or reg_eps < 0:
            raise PolytaskError("upgrad: norm_eps and reg_eps must be >= 0")
        self.pref = _preference(pref, self.num_tasks, self.name)
        self.norm_eps, self.reg_eps = float(norm_eps), float(reg_eps)

    def gram_weights(self, G: np.ndarray, losses: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return gw.upgrad_weights(G, _subset(self.pref, rows), self.norm_eps, self.reg_eps)


# =================================================================== gradient surgery
def _orders(K: int) -> list[list[int]]:
    """A random order of the other tasks for each task, from torch's global generator."""
    return [[j for j in torch.randperm(K).tolist() if j != i] for i in range(K)]


@register("pcgrad")
class PCGrad(GradientBalancer):
    """PCGrad (Yu et al. 2020): project each task gradient off the others' normal planes when they
    conflict (random order, against the original gradients) and sum. Task-specific parameters get their
    plain gradient."""

    name = "pcgrad"
    defines_weights = False

    def __init__(
        self, tasks: Sequence[str] | int, rep_grad: bool = False, engine: str = "auto", factored: str = "auto"
    ):
        super().__init__(tasks, rep_grad, engine, factored=factored)

    def gram_weights(self, G: np.ndarray, losses: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return gw.pcgrad_weights(G, _orders(len(G)))


@register("gradvac")
class GradVac(GradientBalancer):
    """Gradient Vaccine (Wang et al. 2021): raise the cosine between task gradients towards an EMA
    target φ̂ (β = 0.01, φ̂ starts at 0), whole-model granularity. Task-specific parameters get their
    plain gradient."""

    name = "gradvac"
    defines_weights = False

    def __init__(
        self,
        tasks: Sequence[str] | int,
        beta: float = 0.01,
        rep_grad: bool = False,
        engine: str = "auto",
        factored: str = "auto",
    ):
        super().__init__(tasks, rep_grad, engine, factored=factored)
        if not 0.0 <= beta <= 1.0:
            raise PolytaskError(f"gradvac: beta must be in [0, 1], got {beta}")
        self.beta = float(beta)
        self.register_buffer("targets", torch.zeros(self.num_tasks, self.num_tasks, dtype=torch.float64))

    def gram_weights(self, G: np.ndarray, losses: np.ndarray, rows: np.ndarray) -> np.ndarray:
        pairs = np.ix_(rows, rows)  # an absent task's targets stay as they are
        targets = self.targets.cpu().numpy().copy()
        w, targets[pairs] = gw.gradvac_weights(G, targets[pairs], _orders(len(G)), self.beta)
        self.targets.copy_(torch.from_numpy(targets))
        return w


# =================================================================== representation-level methods
def sign_purity(grads: torch.Tensor) -> torch.Tensor:
    """GradDrop's positive sign purity P = ½(1 + Σ_k ∇_k / Σ_k |∇_k|) over the task axis (dim 0)."""
    return 0.5 * (1 + grads.sum(0) / grads.abs().sum(0).clamp_min(1e-12))


def graddrop_combine(
    grads: torch.Tensor,
    uniform: torch.Tensor,
    leak: torch.Tensor | float = 0.0,
    batch_sum: bool = True,
    purity: torch.Tensor | None = None,
) -> torch.Tensor:
    """GradDrop (Chen et al. 2020) on per-task gradients (K, B, ...) of a shared activation.

    Sign purity P per activation unit (from the batch-summed gradients when ``batch_sum``, as the paper
    does for batch-separated activations, then tiled over the batch; or given as ``purity``), masks
    M_k = 1[P > U] 1[∇_k > 0] + 1[P < U] 1[∇_k < 0] with ``uniform`` U ~ U(0, 1) of P's shape, and the
    result Σ_k (ℓ_k + (1 − ℓ_k) M_k) ∇_k (leak ℓ)."""
    K = grads.shape[0]
    if purity is None:
        purity = sign_purity(grads.sum(dim=1, keepdim=True) if batch_sum else grads)
    if uniform.shape != purity.shape:
        raise PolytaskError(f"graddrop: uniform draw shape {tuple(uniform.shape)} != {tuple(purity.shape)}")
    mask = ((purity > uniform) & (grads > 0)) | ((purity < uniform) & (grads < 0))
    leak_t = torch.as_tensor(leak, dtype=grads.dtype, device=grads.device).reshape(-1)
    leak_t = leak_t.expand(K).view(K, *([1] * (grads.dim() - 1)))
    return (grads * (leak_t + (1 - leak_t) * mask.to(grads.dtype))).sum(0)


@register("graddrop")
class GradDrop(GradientBalancer):
    """GradDrop (Chen et al. 2020): gradient sign dropout on the shared representation z (always
    rep-grad: the method is defined on activations); the encoder is trained through one backward of z
    with the masked sum. ``leak`` ℓ (float or one per task) lets part of each gradient through
    unmasked. Task-specific parameters get their plain gradient."""

    name = "graddrop"
    defines_weights = False
    needs_shared_params = False
    parameter_mode = None  # defined on activations only

    def __init__(
        self,
        tasks: Sequence[str] | int,
        leak: float | Sequence[float] = 0.0,
        batch_sum: bool = True,
        engine: str = "auto",
    ):
        super().__init__(tasks, rep_grad=True, engine=engine)
        leaks = [float(leak)] * self.num_tasks if isinstance(leak, (int, float)) else [float(x) for x in leak]
        if len(leaks) != self.num_tasks or not all(0.0 <= x <= 1.0 for x in leaks):
            raise PolytaskError(f"graddrop: leak must be in [0, 1], one value or one per task; got {leak!r}")
        self.register_buffer("leak", torch.tensor(leaks))
        self.batch_sum = bool(batch_sum)

    def aggregate(self, jacobian, losses):
        g = jacobian.rows[0]
        jac.check_finite([g])  # a NaN would pass the sign masks silently
        if g.dim() < 2 and self.batch_sum:
            raise PolytaskError("graddrop: the representation needs a batch dimension")
        shape = (1, *g.shape[2:]) if self.batch_sum else tuple(g.shape[1:])
        uniform = torch.rand(shape, device=g.device, dtype=g.dtype)  # same draw on every rank (same seed)
        purity = None
        if self.batch_sum:  # P of the global batch: the ranks' batch sums, averaged (P is scale-free)
            summed = g.sum(dim=1, keepdim=True)
            jac.all_reduce_mean([summed])
            purity = sign_purity(summed)
        leak = self.leak[torch.as_tensor(self.present_rows(), device=self.leak.device)]
        combined = graddrop_combine(g, uniform, leak.to(g), self.batch_sum, purity)
        ones = torch.ones(len(g), dtype=g.dtype, device=g.device)
        return [combined], ones, ones


# =================================================================== GradNorm
@register("gradnorm")
class GradNorm(Balancer):
    """GradNorm (Chen et al. 2018): learnable task weights w (Σ w_k = K, renormalised before each step)
    trained so that the gradient norms G_k = ‖∇_W w_k L_k‖ on a shared layer W approach
    Ḡ · r_k^α, r_k = (L_k/L_k(0)) / mean_i(L_i/L_i(0)); the target is held constant, so
    ∂L_grad/∂w_k = sign(G_k − target_k) ‖∇_W L_k‖. The model step is one backward of Σ w_k L_k.

    ``alpha`` = 1.5 (the paper's NYUv2 value); ``layer``: index among the shared parameters with ≥ 2
    dimensions (−1: the last shared weight matrix, the paper's choice). Add ``balancer.parameters()`` to
    the optimizer (the paper updates w with the model's optimizer). Weights are clamped at 1e-8 before
    renormalising (the paper does not say what to do with a non-positive weight)."""

    name = "gradnorm"
    needs_shared_params = True
    loss_use = "raises the ratio L_k(t) / L_k(0) to the power alpha"

    def __init__(self, tasks: Sequence[str] | int, alpha: float = 1.5, layer: int = -1, engine: str = "auto"):
        super().__init__(tasks)
        if engine not in jac.ENGINES:
            raise PolytaskError(f"gradnorm: engine must be one of {jac.ENGINES}, got {engine!r}")
        self.alpha, self.layer, self.engine = float(alpha), int(layer), engine
        self.loss_weights = nn.Parameter(torch.ones(self.num_tasks))
        self.initial: list[float] | None = None
        self._auto = jac.AutoEngine()  # what engine='auto' learned about this model

    def incompatibility(self, shared_params: Params, has_representation: bool | None) -> str | None:
        return _layer_problem(_weight_matrices(shared_params), self.layer)

    def backward(
        self,
        losses: Losses,
        shared_params: Params | None = None,
        task_params: Mapping[str, Params] | None = None,
        representation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        stacked = self.stack_losses(losses)
        self.check_no_empty_process()
        weight_mats = _weight_matrices(shared_params or ())
        problem = _layer_problem(weight_mats, self.layer)
        if problem:
            raise PolytaskError(f"gradnorm {problem}")
        W = weight_mats[self.layer]
        with torch.no_grad():  # renormalise: Σ w = K over the present tasks (an absent task's w is kept)
            self.loss_weights.clamp_(min=1e-8)
            present = self.present_mask(self.loss_weights)
            scale = present.sum() / (self.loss_weights * present).sum()
            self.loss_weights.copy_(torch.where(present.bool(), self.loss_weights * scale, self.loss_weights))
        w = self.loss_weights.detach() * self.present_mask(self.loss_weights)  # 0 for an absent task
        present = self.present_losses()  # ‖∇_W L_k‖ of the present tasks only
        self._auto.check_first_step(present, self.name)  # no compiled code that the K backwards to W all cross
        options = self._auto.options(self.engine)
        (gW,), used = jac.task_gradients(present, [W], retain_graph=True, reach_any=1, **options)
        self._auto.learn(self.engine, len(present), used)
        if isinstance(gW, SparseRows):  # a sparse table as W: its touched rows hold every task's gradient
            if jac.world_size() > 1:
                raise PolytaskError(
                    "gradnorm: a sparse embedding as the layer W is not supported under torch.distributed"
                )
            gW = gW.values
        global_losses = stacked.detach().clone()
        jac.all_reduce_mean([gW, global_losses])
        self.initial, initial = initial_losses(self.initial, global_losses.tolist())
        rows = self.present_rows()
        norms = gW.reshape(len(rows), -1).norm(dim=1).to(w)
        ratio = global_losses.to(w) / torch.tensor(initial, dtype=w.dtype, device=w.device).clamp_min(1e-12)
        # on the present tasks: G_k = w_k ‖∇_W L_k‖, their mean Ḡ and their mean loss ratio
        index = torch.as_tensor(rows, device=w.device)
        grad_w = self.all_tasks(self._weight_gradient(w[index], norms, ratio[index]))
        self.loss_weights.grad = grad_w if self.loss_weights.grad is None else self.loss_weights.grad + grad_w
        torch.dot(w.to(stacked.dtype), stacked).backward()  # under DDP, the wrapper averages these
        return self._record(w)

    def _weight_gradient(self, w: torch.Tensor, norms: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        """∂L_grad/∂w_k = sign(G_k − Ḡ r_k^α) ‖∇_W L_k‖, r_k = ratio_k / mean(ratio)."""
        G = w * norms
        r = ratio / ratio.mean().clamp_min(1e-12)
        return torch.sign(G - G.mean() * r**self.alpha) * norms

    def get_extra_state(self) -> Any:
        return {"initial": self.initial}

    def set_extra_state(self, state: Any) -> None:
        self.initial = state["initial"]


def _weight_matrices(params: Params) -> list[torch.Tensor]:
    """The shared parameters GradNorm's ``layer`` indexes: those with ≥ 2 dimensions."""
    return [p for p in params if p.requires_grad and p.dim() >= 2]


def _layer_problem(weight_mats: list[torch.Tensor], layer: int) -> str | None:
    if not weight_mats:
        return "needs a shared weight matrix (its layer W), and the shared parameters have none"
    if not -len(weight_mats) <= layer < len(weight_mats):
        return f"has layer={layer}, but the shared parameters have {len(weight_mats)} weight matrices"
    return None


def _unique(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """``params`` in order, each once (a parameter listed twice would otherwise get d twice)."""
    seen: set[int] = set()
    return [p for p in params if not (id(p) in seen or seen.add(id(p)))]


def _subset(pref: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if pref is None else pref[rows]


def _preference(pref: Sequence[float] | None, K: int, name: str) -> np.ndarray | None:
    if pref is None:
        return None
    u = np.asarray(pref, dtype=np.float64)
    if u.shape != (K,) or np.any(u < 0) or u.sum() <= 0:
        raise PolytaskError(f"{name}: pref needs {K} non-negative values with a positive sum, got {pref!r}")
    return u
