"""ΔMTL: the average relative change of a multi-task model against single-task baselines, in the two
conventions of the literature.

- **Δp** (Maninis et al. 2019; Vandenhende et al. 2021; LibMTL; polytask's default, ``delta_mtl``):
  the mean over tasks of the mean relative gain within each task,
      Δp = (1/K) Σ_k (1/|M_k|) Σ_j (−1)^{l_j} (M_{m,j} − M_{b,j}) / M_{b,j} × 100,
  l_j = 1 when lower is better. **Positive = better than single-task.**
- **Δm** (Navon et al. 2022, Nash-MTL; Liu et al. 2021, CAGrad; Liu et al. 2023, FAMO): the mean over
  *all metrics* of (−1)^{h_j} (M_{m,j} − M_{b,j}) / M_{b,j} × 100, h_j = 1 when higher is better.
  **Lower = better** (negative beats single-task).

They are not negations of each other: Δp weights every task equally, Δm every metric, so a task with
five metrics (NYUv2's normals) counts five times in Δm. Nash-MTL's Table 2 row for linear
scalarisation has Δm = 5.59 (worse than single-task) but Δp = +0.88 (better).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from polytask.errors import PolytaskError, TaskMismatchError

Scores = Mapping[str, Mapping[str, float]]
Directions = Mapping[str, Mapping[str, "bool | str"]]


def _higher_is_better(value: bool | str, task: str, metric: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("higher", "max", "+"):
        return True
    if value in ("lower", "min", "-"):
        return False
    raise PolytaskError(f"direction of {task}/{metric} must be True/False or 'higher'/'lower', got {value!r}")


def relative_gains(
    scores: Scores, baseline_scores: Scores, directions: Directions, per_metric: bool = False
) -> dict[str, Any]:
    """Per-task gain in percent: (1/|M_k|) Σ_j (−1)^{l_j} (M_m − M_b)/M_b × 100; with ``per_metric`` the
    list of the task's per-metric gains instead of their mean."""
    gains: dict[str, Any] = {}
    for task, metric_dirs in directions.items():
        if task not in scores:
            raise TaskMismatchError(f"delta_mtl: task {task!r} has no scores (have: {sorted(scores)})")
        if task not in baseline_scores:
            raise TaskMismatchError(
                f"delta_mtl: task {task!r} has no baseline scores (have: {sorted(baseline_scores)})"
            )
        if not metric_dirs:
            raise PolytaskError(f"delta_mtl: task {task!r} has no metrics")
        per: list[float] = []
        for metric, direction in metric_dirs.items():
            for name, table in (("scores", scores), ("baseline_scores", baseline_scores)):
                if metric not in table[task]:
                    raise TaskMismatchError(f"delta_mtl: {name} of task {task!r} lack metric {metric!r}")
            m, b = float(scores[task][metric]), float(baseline_scores[task][metric])
            if b == 0.0 or not math.isfinite(b):
                raise PolytaskError(
                    f"delta_mtl: baseline {task}/{metric} = {b}; a relative gain needs a finite non-zero baseline"
                )
            sign = 1.0 if _higher_is_better(direction, task, metric) else -1.0
            per.append(sign * (m - b) / abs(b) * 100.0)
        gains[task] = per if per_metric else sum(per) / len(per)
    return gains


#: the conventions by name, with their definitions (stored in results.json as ``delta_mtl_convention``)
CONVENTIONS = {
    "p": (
        "Δp (results key delta_mtl): mean over tasks of the mean over the task's metrics of "
        "±(M − M_stl)/M_stl × 100 (+ where higher is better); positive = better than single-task "
        "(Maninis et al. 2019, Vandenhende et al. 2021, LibMTL)"
    ),
    "m": (
        "Δm (results key delta_m): mean over all metrics of (−1)^[higher is better] (M − M_stl)/M_stl × 100; "
        "lower = better, negative = better than single-task (Nash-MTL, CAGrad, FAMO)"
    ),
}
#: the results key of each convention, and whether a higher value is better
CONVENTION_KEYS = {"p": ("delta_mtl", True), "m": ("delta_m", False)}


def delta_mtl(scores: Scores, baseline_scores: Scores, directions: Directions, convention: str = "p") -> float:
    """ΔMTL in percent over the tasks named in ``directions`` ({task: {metric: higher_is_better}}):
    Δp (``convention='p'``, positive = better) or Δm (``'m'``, lower = better); see the module.

    >>> delta_mtl({"a": {"acc": 0.9}}, {"a": {"acc": 0.8}}, {"a": {"acc": True}})
    12.5
    """
    if convention == "m":
        return delta_m(scores, baseline_scores, directions)
    if convention != "p":
        raise PolytaskError(f"delta_mtl: convention must be 'p' or 'm', got {convention!r}")
    gains = relative_gains(scores, baseline_scores, directions)
    return sum(gains.values()) / len(gains)


def delta_m(scores: Scores, baseline_scores: Scores, directions: Directions) -> float:
    """Δm in percent (Navon et al. 2022): the mean over all metrics of (−1)^{h_j}(M_m − M_b)/M_b × 100,
    h_j = 1 when higher is better; lower = better.

    >>> delta_m({"a": {"acc": 0.9}}, {"a": {"acc": 0.8}}, {"a": {"acc": True}})
    -12.5
    """
    changes = [
        -gain for task in relative_gains(scores, baseline_scores, directions, per_metric=True).values() for gain in task
    ]
    return sum(changes) / len(changes)


def defined_directions(baseline_scores: Scores, directions: Directions) -> tuple[dict, list[str]]:
    """``directions`` without the metrics whose baseline is zero or not finite (no relative change is
    defined for them), and the dropped ``task/metric`` names; a task left with no metric is dropped."""
    kept: dict[str, dict] = {}
    dropped: list[str] = []
    for task, dirs in directions.items():
        for metric, d in dirs.items():
            b = baseline_scores.get(task, {}).get(metric)
            if b is None or not math.isfinite(float(b)) or float(b) == 0.0:
                dropped.append(f"{task}/{metric}")
            else:
                kept.setdefault(task, {})[metric] = d
    return kept, dropped
