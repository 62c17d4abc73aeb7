"""The ``Balancer`` interface: per-task losses in, ``.grad`` on every parameter out.

One call serves the Trainer and a user's own loop::

    weights = balancer.backward(losses, shared_params=..., task_params=..., representation=None)
    optimizer.step()

``losses`` is ``{task: scalar}`` (or a sequence in the balancer's task order). Like ``loss.backward()``,
gradients are *accumulated* into ``.grad``; zero them as usual. The return value is the detached (K,)
vector of task weights actually used, in ``balancer.tasks`` order.

A task without a labelled sample in the batch has ``None`` as its loss: it is *absent*. Every method
then is its formula on the present tasks (the weights of a method on K − 1 tasks, GLS's geometric mean
and FAMO's softmax over the present ones, MGDA's hull of the present gradients), the absent task gets
weight 0 and no gradient, and its state (FAMO's logit, GradVac's targets, UW's variance) is left as is.
A zero loss would instead be read as a task with a zero gradient: finished for MGDA (no update), the
best task for GLS and FAMO. Under ``torch.distributed`` a task is present when any process has it.

Two families share the interface: loss weightings (:class:`LossWeighting`: weights from losses, then one
backward of Σ w_k L_k) and gradient methods (which read per-task gradients of ``shared_params`` or of
``representation`` and therefore need those arguments). Stateful methods receive their extra inputs
through explicit calls: :meth:`Balancer.epoch_end` (epoch-average losses and KPIs, for DWA and DTP) and
:meth:`Balancer.post_step` (the same batch's losses after the optimizer step, for FAMO).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from polytask.balancing.jacobian import all_reduce_mean, world_size
from polytask.errors import (
    EmptyShareError,
    NonFiniteLossError,
    NoTaskPresentError,
    PolytaskError,
    TaskMismatchError,
)


def global_losses(losses: torch.Tensor) -> torch.Tensor:
    """The detached (K,) losses averaged over processes under ``torch.distributed`` (the global batch's
    losses when ranks hold equal batches); the losses themselves in a single process."""
    out = losses.detach()
    if world_size() > 1:
        out = out.clone()
        all_reduce_mean([out])
    return out


Losses = Mapping[str, torch.Tensor] | Sequence[torch.Tensor] | torch.Tensor
Params = Iterable[torch.Tensor]


class Balancer(nn.Module):
    """Base class of every balancing method.

    Subclasses set the class flags that tell a training loop what to feed them:
    ``needs_post_step_losses`` (call :meth:`post_step` after ``optimizer.step()`` with the same batch's
    new losses), ``needs_kpis`` (pass ``kpis`` to :meth:`epoch_end`), ``needs_shared_params`` and
    ``needs_representation`` (gradient methods). Learnable balancer parameters (e.g. UW's log-variances)
    are ``nn.Parameter``s: add ``balancer.parameters()`` to the optimizer.
    """

    name: str = "base"
    needs_post_step_losses: bool = False
    needs_kpis: bool = False
    needs_shared_params: bool = False
    needs_representation: bool = False
    # True: backward() already leaves every process the gradients of the global batch (gradient methods);
    # False: it is one ordinary backward of this process's losses, averaged by DDP or a training loop
    averages_over_processes: bool = False
    # methods that take logs or ratios of the losses, or whose objective is unbounded below for a negative
    # loss, say so here: a loss below loss_floor() is then an error naming the task, not meaningless weights
    loss_use: str | None = None
    loss_floor_hint = (
        "add a constant to that loss so that it cannot be negative, or use a method that takes no logs or "
        "ratios of the losses (e.g. ew, rlw, mgda)"
    )

    def __init__(self, tasks: Sequence[str] | int):
        super().__init__()
        # after stack_losses(): (K,) bool of the tasks with a loss in this batch; None when all have one
        self.present: torch.Tensor | None = None
        self._present_losses: torch.Tensor | None = None
        self.contested = self.empty_process = False
        if isinstance(tasks, int):
            if tasks < 1:
                raise PolytaskError(f"{type(self).__name__}: number of tasks must be >= 1, got {tasks}")
            tasks = [f"task{k}" for k in range(tasks)]
        tasks = list(tasks)
        if not tasks or len(set(tasks)) != len(tasks):
            raise PolytaskError(f"{type(self).__name__}: tasks must be non-empty and unique, got {tasks}")
        self.tasks: list[str] = tasks
        self.last_weights: torch.Tensor | None = None

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def incompatibility(self, shared_params: Params, has_representation: bool | None) -> str | None:
        """Why this method cannot train a model with these shared parameters and with (or without) one
        shared representation z (``None``: not known before a forward pass, not checked), as a phrase
        whose subject is the method ("needs ..."); None when it can. Training loops check it before the
        first step, so a mismatch fails in milliseconds."""
        if self.needs_shared_params and not any(p.requires_grad for p in shared_params):
            return (
                "balances the gradients of shared parameters, and the model has none that is trained (every task "
                "has its own network, or the shared layers are frozen): use a loss weighting"
            )
        if self.needs_representation and has_representation is False:
            return (
                "needs the gradients w.r.t. one shared representation z that every task head reads, and the "
                "model has none (per-task columns, experts mixed by gates, per-task attention, ...)"
            )
        return None

    # ------------------------------------------------------------------ helpers for subclasses
    def stack_losses(self, losses: Losses, check_finite: bool = True, need_grad: bool = True) -> torch.Tensor:
        """Validate ``losses`` against ``self.tasks`` and return them as a (K,) tensor in task order, with
        0 for an absent task (loss ``None``); sets :attr:`present`. With ``need_grad`` a given loss without
        an autograd graph is an error naming the task (it would train nothing, silently).

        A (K,) tensor is taken as is (the Trainer's fast path); a mapping is checked against the task names.
        """
        absent: list[int] = []
        if isinstance(losses, torch.Tensor) and losses.dim() == 1:
            if losses.numel() != self.num_tasks:
                raise TaskMismatchError(
                    f"{self.name}: got {losses.numel()} losses for {self.num_tasks} tasks {self.tasks}"
                )
            stacked = losses
        else:
            if isinstance(losses, Mapping):
                unknown = [k for k in losses if k not in self.tasks]
                missing = [k for k in self.tasks if k not in losses]
                if unknown or missing:
                    raise TaskMismatchError(
                        f"{self.name}: losses for unknown task(s) {unknown} / missing task(s) {missing}; "
                        f"balancer tasks: {self.tasks} (give an absent task's loss as None)"
                    )
                items = [losses[k] for k in self.tasks]
            else:
                items = list(losses.reshape(-1)) if isinstance(losses, torch.Tensor) else list(losses)
            if len(items) != self.num_tasks:
                raise TaskMismatchError(f"{self.name}: got {len(items)} losses for {self.num_tasks} tasks {self.tasks}")
            for k, (name, loss) in enumerate(zip(self.tasks, items)):
                if loss is None:
                    absent.append(k)
                elif not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    raise TaskMismatchError(f"{self.name}: loss of task {name!r} must be a scalar tensor")
            given = [loss for loss in items if loss is not None]
            zero = given[0].detach().new_zeros(()) if given else torch.zeros(())
            items = [zero if loss is None else loss.reshape(()) for loss in items]
            stacked = torch.stack(items)
        one_tensor = isinstance(losses, torch.Tensor) and losses.dim() == 1
        detached = _detached_tasks(self.tasks, stacked, None if one_tensor else items, absent) if need_grad else []
        if detached:  # a non-finite one is reported as such (below or by the caller's check)
            finite = dict(zip(self.tasks, torch.isfinite(stacked.detach()).tolist()))
            detached = [t for t in detached if finite[t]]
        if detached:
            raise PolytaskError(
                f"{self.name}: the loss of task(s) {', '.join(detached)} does not require grad (computed under "
                "torch.no_grad() or detached?), so it cannot train anything; give an absent task's loss as None"
            )
        self.present = self._agreed_presence(absent, stacked)
        # the present tasks' losses alone (0 for one absent here but present in another process)
        self._present_losses = stacked if self.present is None else torch.stack([items[k] for k in self.present_rows()])
        if check_finite:
            self.check_finite(stacked)
        if self.loss_use is not None:
            self.check_loss_floor(stacked)
        return stacked

    def present_losses(self) -> torch.Tensor:
        """The (K_p,) losses of the present tasks from the last :meth:`stack_losses`, each still in its
        own graph (for methods that compute per-task gradients of the present tasks only)."""
        return self._present_losses

    def _agreed_presence(self, absent: list[int], stacked: torch.Tensor) -> torch.Tensor | None:
        """The (K,) mask of present tasks (None: all), the same on every process: a task is present where
        any process has a loss for it."""
        self.contested = False  # a task absent in some processes only
        self.empty_process = False  # some process has no task at all in its share of the batch
        if world_size() > 1:
            votes = torch.ones(self.num_tasks + 1, dtype=torch.float32, device=stacked.device)
            votes[absent] = 0.0
            votes[-1] = float(len(absent) < self.num_tasks)
            all_reduce_mean([votes])
            *tasks, filled = votes.tolist()
            absent = [k for k, v in enumerate(tasks) if v == 0.0]
            self.contested = any(0.0 < v < 1.0 for v in tasks)
            self.empty_process = filled < 1.0
        if not absent:
            return None
        if len(absent) == self.num_tasks:
            raise NoTaskPresentError(
                f"{self.name}: every task's loss is None (no task has a labelled sample in this batch); skip the batch"
            )
        mask = torch.ones(self.num_tasks, dtype=torch.bool)
        mask[absent] = False
        return mask

    def check_no_empty_process(self) -> None:
        """For methods whose per-task backward every process must join (gradient methods, GradNorm): raise,
        in every process alike, when some process has no task in its share of the batch."""
        if self.empty_process:
            raise EmptyShareError(
                f"{self.name}: under torch.distributed a process has no labelled sample of any task in its share "
                "of the batch while others have some, and this method needs every process in its per-task "
                "backward; use larger batches per process (or a loss weighting)"
            )

    def present_rows(self) -> list[int]:
        """Indices of the present tasks (all K when none is absent)."""
        if self.present is None:
            return list(range(self.num_tasks))
        return self.present.nonzero().flatten().tolist()

    def present_mask(self, like: torch.Tensor) -> torch.Tensor:
        """1 for each present task, 0 for an absent one, as a (K,) tensor like ``like``."""
        if self.present is None:
            return torch.ones(self.num_tasks, dtype=like.dtype, device=like.device)
        return self.present.to(dtype=like.dtype, device=like.device)

    def on_present(self, fn: Callable[..., torch.Tensor], *vectors: torch.Tensor) -> torch.Tensor:
        """``fn`` of the present tasks' entries of the (K,) ``vectors``, scattered back; 0 for an absent task.
        The weighting of a method on the present tasks alone, for methods whose weights couple the tasks
        (a softmax, a geometric mean)."""
        if self.present is None:
            return fn(*vectors)
        index = torch.as_tensor(self.present_rows(), device=vectors[0].device)
        return self.all_tasks(fn(*(v[index] for v in vectors)))

    def all_tasks(self, values: torch.Tensor) -> torch.Tensor:
        """A (K_p,) vector over the present tasks as a (K,) one, 0 for the absent tasks."""
        if self.present is None:
            return values
        out = values.new_zeros(self.num_tasks)
        out[torch.as_tensor(self.present_rows(), device=values.device)] = values
        return out

    def loss_floor(self) -> torch.Tensor | None:
        """The lowest loss per task this method accepts (None: 0), when it sets ``loss_use``."""
        return None

    def check_loss_floor(self, losses: torch.Tensor) -> None:
        """Raise a :class:`PolytaskError` naming the tasks whose loss is below :meth:`loss_floor`."""
        values = losses.detach()
        floor = self.loss_floor()
        floor = torch.zeros_like(values) if floor is None else floor.to(values)
        below = values < floor
        if self.present is not None:  # an absent task's 0 is no loss
            below &= self.present.to(below.device)
        if bool(below.any()):
            bad = [
                f"{t!r} ({v:.4g} < {f:.4g})"
                for t, v, f, b in zip(self.tasks, values.tolist(), floor.tolist(), below.tolist())
                if b
            ]
            raise PolytaskError(
                f"{self.name}: loss of task(s) {', '.join(bad)} below what it accepts: {self.name} {self.loss_use}; "
                f"{self.loss_floor_hint}"
            )

    def check_finite(self, losses: torch.Tensor, total: torch.Tensor | None = None) -> None:
        """Raise :class:`NonFiniteLossError` naming the tasks whose loss is NaN/inf.

        With ``total`` (a weighted sum of ``losses`` with finite weights) only the total is tested: a NaN or
        infinite loss always makes it non-finite (w·NaN = NaN; w·inf = ±inf or NaN), so one scalar check
        per step suffices and the per-task test runs only on failure.
        """
        finite = (
            math.isfinite(total.detach().item()) if total is not None else bool(torch.isfinite(losses.detach()).all())
        )
        if not finite:
            bad = [t for t, ok in zip(self.tasks, torch.isfinite(losses.detach()).tolist()) if not ok]
            raise NonFiniteLossError(bad or ["(weights)"])

    def _record(self, weights: torch.Tensor) -> torch.Tensor:
        self.last_weights = weights.detach()
        return self.last_weights

    # ------------------------------------------------------------------ the interface
    def backward(
        self,
        losses: Losses,
        shared_params: Params | None = None,
        task_params: Mapping[str, Params] | None = None,
        representation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Accumulate gradients into ``.grad`` of every parameter; return the (K,) weights used."""
        raise NotImplementedError

    def epoch_end(self, losses: Mapping[str, float] | None = None, kpis: Mapping[str, float] | None = None) -> None:
        """Epoch-level update from epoch-average training losses and task KPIs; default: nothing."""

    def post_step(self, losses: Losses) -> None:
        """Update from the same batch's losses after the optimizer step; default: nothing."""

    # extra (non-tensor) state is saved in state_dict() through PyTorch's extra-state hook
    def get_extra_state(self) -> Any:
        return {}

    def set_extra_state(self, state: Any) -> None:
        pass

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}"


def _detached_tasks(tasks: Sequence[str], stacked: torch.Tensor, items: list | None, absent: list[int]) -> list[str]:
    """The tasks whose given loss has no autograd graph. From the items when losses came one per task; from
    the stack's inputs when a (K,) tensor came from ``torch.stack`` (a vector computed otherwise is only
    checked as a whole)."""
    if items is not None:
        return [t for k, (t, loss) in enumerate(zip(tasks, items)) if k not in absent and not loss.requires_grad]
    if not stacked.requires_grad:
        return list(tasks)
    fn = stacked.grad_fn
    if fn is not None and type(fn).__name__.startswith("StackBackward") and len(fn.next_functions) == len(tasks):
        return [t for t, (inner, _) in zip(tasks, fn.next_functions) if inner is None]
    return []


class LossWeighting(Balancer):
    """A balancer whose step is one backward of Σ_k w_k L_k.

    Subclasses implement :meth:`weights` (a function of the detached losses and the method's state) or,
    when the objective is not a weighted sum with constant weights (UW), :meth:`objective`. Weights of
    absent tasks are set to 0 afterwards; a method whose weights couple the tasks computes them with
    :meth:`~Balancer.on_present`.
    """

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """(K,) weights from the detached (K,) losses."""
        raise NotImplementedError

    def objective(self, losses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scalar to backpropagate, (K,) effective weights on the task losses; 0 for an absent task)."""
        w = self.weights(global_losses(losses)).to(losses.dtype) * self.present_mask(losses)
        return torch.dot(w, losses), w

    def backward(
        self,
        losses: Losses,
        shared_params: Params | None = None,
        task_params: Mapping[str, Params] | None = None,
        representation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One backward of the weighted objective; ``shared_params``/``task_params`` are not needed."""
        stacked = self.stack_losses(losses, check_finite=False)
        total, w = self.objective(stacked)
        self.check_finite(stacked, total)
        if total.requires_grad:  # in a process where every task is absent (another has them) it is a constant
            total.backward()
        if world_size() > 1:  # learnable weights (UW, IMTL-L): average their gradients like DDP does the model's
            all_reduce_mean([p.grad for p in self.parameters() if p.grad is not None])
        return self._record(w)
