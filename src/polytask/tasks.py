"""``Task``: what one task predicts, its loss, its metrics (with directions) and its role.

Missing targets: a sample adds nothing to a task's loss or metrics when its target is missing, marked by
``mask`` (bool, True = present), by NaN (float targets) or by ``ignore_index`` (integer class targets).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from polytask import metrics as _metrics
from polytask.errors import PolytaskError, TaskMismatchError

Kind = Literal["multiclass", "binary", "regression"]
Role = Literal["primary", "auxiliary"]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_DEFAULT_LOSS = {"multiclass": "cross_entropy", "binary": "bce", "regression": "mse"}
_DEFAULT_METRICS = {
    "multiclass": ("accuracy", "macro_f1"),
    "binary": ("auc", "log_loss"),
    "regression": ("mae", "rmse"),
}


def _bce(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(pred, target.to(pred.dtype))


LOSSES: dict[str, LossFn] = {
    "cross_entropy": lambda p, t: F.cross_entropy(p, t.long()),
    "bce": _bce,
    "mse": lambda p, t: F.mse_loss(p, t.to(p.dtype)),
    "l1": lambda p, t: F.l1_loss(p, t.to(p.dtype)),
    "smooth_l1": lambda p, t: F.smooth_l1_loss(p, t.to(p.dtype)),
}


@dataclass
class Task:
    """One task of a multi-task problem.

    Args:
        name: key of the task in model outputs and targets.
        kind: ``multiclass`` (logits (N, C)), ``binary`` (one logit (N,) or (N, 1)) or ``regression``.
        out_features: width of the model's raw output for this task (C, or 1).
        metrics: metric names from :mod:`polytask.metrics` (or :class:`~polytask.metrics.Metric`).
        role: ``primary`` (evaluated and selected on) or ``auxiliary`` (trained and reported only).
        loss: a name in :data:`LOSSES` or a callable ``(pred, target) -> mean loss``; default by kind.
        ignore_index: integer class targets equal to this are missing.
        kpi: a metric in [0, 1], higher is better, used by KPI-driven weightings (DTP).
    """

    name: str
    kind: Kind = "multiclass"
    out_features: int = 1
    metrics: Sequence[str | _metrics.Metric] = ()
    role: Role = "primary"
    loss: str | LossFn | None = None
    ignore_index: int = -100
    kpi: str | None = None
    _metric_objs: tuple[_metrics.Metric, ...] = field(init=False, repr=False)
    _loss_fn: LossFn = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in _DEFAULT_LOSS:
            raise PolytaskError(f"task {self.name!r}: kind must be one of {sorted(_DEFAULT_LOSS)}, got {self.kind!r}")
        if self.role not in ("primary", "auxiliary"):
            raise PolytaskError(f"task {self.name!r}: role must be 'primary' or 'auxiliary', got {self.role!r}")
        if self.kind != "multiclass" and self.out_features != 1:
            raise PolytaskError(f"task {self.name!r}: a {self.kind} task has out_features=1")
        loss = self.loss or _DEFAULT_LOSS[self.kind]
        if isinstance(loss, str):
            if loss not in LOSSES:
                raise PolytaskError(f"task {self.name!r}: unknown loss {loss!r}; valid losses: {', '.join(LOSSES)}")
            self._loss_fn = LOSSES[loss]
        else:
            self._loss_fn = loss
        names = self.metrics or _DEFAULT_METRICS[self.kind]
        self._metric_objs = tuple(m if isinstance(m, _metrics.Metric) else _metrics.get(m) for m in names)
        self.metrics = tuple(m.name for m in self._metric_objs)
        if self.kpi is None and self.kind == "multiclass":
            self.kpi = "accuracy"
        if self.kpi is not None:
            kpi = _metrics.get(self.kpi)
            if not kpi.higher_is_better:
                raise PolytaskError(f"task {self.name!r}: kpi {self.kpi!r} must be higher-is-better, in [0, 1]")

    # ----------------------------------------------------------------- shapes and masks
    @property
    def directions(self) -> dict[str, bool]:
        """{metric: higher_is_better}."""
        return {m.name: m.higher_is_better for m in self._metric_objs}

    def _check_shapes(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Validate shapes and return ``pred`` in the layout the loss expects."""
        n = target.shape[0] if target.dim() else -1
        if self.kind == "multiclass":
            ok = pred.dim() == 2 and pred.shape[1] == self.out_features and target.dim() == 1
        else:
            if pred.dim() == 2 and pred.shape[1] == 1:
                pred = pred[:, 0]
            ok = pred.dim() == 1 and target.dim() == 1
        if not ok or pred.shape[0] != n:
            want = f"(N, {self.out_features})" if self.kind == "multiclass" else "(N,) or (N, 1)"
            raise TaskMismatchError(
                f"task {self.name!r}: prediction shape {tuple(pred.shape)} does not match target shape "
                f"{tuple(target.shape)}; a {self.kind} task expects predictions {want} and targets (N,)"
            )
        return pred

    def valid_mask(self, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Bool (N,): True where the target is present."""
        if target.is_floating_point():
            valid = ~torch.isnan(target)
        else:
            valid = target != self.ignore_index
        if mask is not None:
            if mask.shape != valid.shape:
                raise TaskMismatchError(
                    f"task {self.name!r}: mask shape {tuple(mask.shape)} != target shape {tuple(valid.shape)}"
                )
            valid = valid & mask.bool()
        return valid

    # ----------------------------------------------------------------- loss and outputs
    def compute_loss(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, complete: bool = False
    ) -> torch.Tensor:
        """Mean loss over the samples whose target is present (0, still in the graph, when none is).

        ``complete=True`` promises that no target is missing (checked once over the whole split, see
        :func:`complete_tasks`) and skips the per-batch check."""
        pred = self._check_shapes(pred, target)
        if complete and mask is None:
            return self._loss_fn(pred, target)
        if mask is None and not self.has_missing(target):  # fast path: one reduction
            return self._loss_fn(pred, target)
        valid = self.valid_mask(target, mask)
        if not bool(valid.any()):
            return pred.sum() * 0.0
        return self._loss_fn(pred[valid], target[valid])

    def has_missing(self, target: torch.Tensor) -> bool:
        """Whether any target in ``target`` is missing (NaN, or ``ignore_index`` for class targets)."""
        missing = torch.isnan(target).any() if target.is_floating_point() else (target == self.ignore_index).any()
        return bool(missing)

    def postprocess(self, pred: torch.Tensor) -> torch.Tensor:
        """Raw output -> what metrics read: class probabilities, a positive-class probability, or values."""
        if self.kind == "multiclass":
            return pred.softmax(dim=-1)
        pred = pred.reshape(pred.shape[0])
        return torch.sigmoid(pred) if self.kind == "binary" else pred

    def evaluate(self, pred: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
        """{metric: value} over the present samples; ``pred`` is already post-processed."""
        if valid is not None:
            pred, target = pred[valid], target[valid]
        if len(target) == 0:
            return {m.name: float("nan") for m in self._metric_objs}
        return {m.name: m(pred, target) for m in self._metric_objs}

    def kpi_value(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
        """The task's KPI on one batch of raw outputs (for DTP)."""
        if self.kpi is None:
            raise PolytaskError(f"task {self.name!r} has no KPI; DTP needs a metric in [0, 1] per task (Task(kpi=...))")
        valid = self.valid_mask(target, mask)
        p = self.postprocess(pred.detach().float()).cpu().numpy()
        t = target.detach().cpu().numpy()
        v = valid.cpu().numpy()
        if not v.any():
            return float("nan")
        return _metrics.get(self.kpi)(p[v], t[v])


def check_outputs(
    tasks: Sequence[Task], outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
) -> None:
    """Raise :class:`TaskMismatchError` naming the task when outputs/targets and tasks disagree."""
    names = [t.name for t in tasks]
    for where, table in (("model outputs", outputs), ("targets", targets)):
        missing = [n for n in names if n not in table]
        if missing:
            raise TaskMismatchError(f"{where} lack task(s) {missing}; got keys {sorted(table)}")
    extra = [k for k in outputs if k not in names]
    if extra:
        raise TaskMismatchError(f"model outputs have unknown task(s) {extra}; declared tasks: {names}")


def compute_losses(
    tasks: Sequence[Task],
    outputs: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    complete: Collection[str] = (),
    none_if_unlabelled: bool = False,
) -> dict[str, torch.Tensor | None]:
    """{task: loss} for one batch; masks are read from ``targets[task + '_mask']`` when present.

    ``complete``: tasks known to have no missing target in any batch (:func:`complete_tasks` of the split);
    their per-batch missing-value check is skipped. A task without a labelled sample in the batch has loss
    0 (still in the graph), or None with ``none_if_unlabelled``: what a balancer takes as an absent task."""
    check_outputs(tasks, outputs, targets)
    absent = set(unlabelled_tasks(tasks, targets, complete)) if none_if_unlabelled else set()
    return {
        t.name: None
        if t.name in absent
        else t.compute_loss(outputs[t.name], targets[t.name], targets.get(t.name + "_mask"), t.name in complete)
        for t in tasks
    }


def unlabelled_tasks(
    tasks: Sequence[Task], targets: Mapping[str, torch.Tensor], complete: Collection[str] = ()
) -> list[str]:
    """The tasks without a single labelled sample in this batch (every target missing or masked out):
    :meth:`Task.compute_loss` gives them a zero loss with a zero gradient. ``complete`` tasks are skipped."""
    return [
        t.name
        for t in tasks
        if t.name not in complete and not bool(t.valid_mask(targets[t.name], targets.get(t.name + "_mask")).any())
    ]


def add_intermediate_losses(
    tasks: Sequence[Task],
    losses: Mapping[str, torch.Tensor],
    intermediate: Mapping[str, Sequence[torch.Tensor]],
    targets: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Deep supervision: each task's loss plus its own loss on every intermediate prediction of it (e.g.
    PAD-Net's initial predictions), so balancers see one total per task."""
    unknown = [k for k in intermediate if k not in losses]
    if unknown:
        raise TaskMismatchError(f"intermediate predictions for unknown task(s) {unknown}; tasks: {list(losses)}")
    out = dict(losses)
    for t in tasks:
        for pred in intermediate.get(t.name, ()):
            out[t.name] = out[t.name] + t.compute_loss(pred, targets[t.name], targets.get(t.name + "_mask"))
    return out


def complete_tasks(tasks: Sequence[Task], targets: Mapping[str, torch.Tensor]) -> frozenset[str]:
    """The tasks whose targets (a whole split's) have no missing value and no mask: one check up front
    instead of one per batch."""
    done = set()
    for t in tasks:
        target = targets.get(t.name)
        if target is None or (t.name + "_mask") in targets:
            continue
        if not t.has_missing(target):
            done.add(t.name)
    return frozenset(done)
