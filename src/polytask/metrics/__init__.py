"""Metrics: per-task metric functions, the metric registry and ΔMTL (positive = better than single-task)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from polytask.metrics.delta import delta_mtl, relative_gains
from polytask.metrics.functions import accuracy, auc, log_loss, macro_f1, mae, mse, rmse, rounded_accuracy
from polytask.registry import Registry


@dataclass(frozen=True)
class Metric:
    """A named metric function with its direction (``higher_is_better``)."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> float:
        return self.fn(pred, target)


METRICS: Registry[Metric] = Registry("metric")
for _name, _fn, _hib in [
    ("accuracy", accuracy, True),
    ("macro_f1", macro_f1, True),
    ("auc", auc, True),
    ("log_loss", log_loss, False),
    ("mae", mae, False),
    ("mse", mse, False),
    ("rmse", rmse, False),
    ("rounded_accuracy", rounded_accuracy, True),
]:
    METRICS.register(_name, (_fn.__doc__ or "").strip().splitlines()[0])(
        lambda _n=_name, _f=_fn, _h=_hib: Metric(_n, _f, _h)
    )


def get(name: str) -> Metric:
    """The registered :class:`Metric` called ``name`` (error lists the valid names)."""
    return METRICS.create(name)


def available() -> list[str]:
    """Names of every registered metric."""
    return METRICS.available()


__all__ = [
    "METRICS",
    "Metric",
    "accuracy",
    "auc",
    "available",
    "delta_mtl",
    "get",
    "log_loss",
    "macro_f1",
    "mae",
    "mse",
    "relative_gains",
    "rmse",
    "rounded_accuracy",
]
