"""ΔMTL: the average relative gain of a multi-task model over single-task baselines.

Maninis et al. 2019; Vandenhende et al. 2021:
    Δ = (1/K) Σ_k (1/|M_k|) Σ_j (−1)^{l_j} (M_{m,j} − M_{b,j}) / M_{b,j} × 100,
with l_j = 1 when lower is better. **Positive = better than single-task.** (Nash-MTL and FAMO report the
negation, "Δm% lower is better".)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

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


def relative_gains(scores: Scores, baseline_scores: Scores, directions: Directions) -> dict[str, float]:
    """Per-task gain in percent: (1/|M_k|) Σ_j (−1)^{l_j} (M_m − M_b)/M_b × 100."""
    gains: dict[str, float] = {}
    for task, metric_dirs in directions.items():
        if task not in scores:
            raise TaskMismatchError(f"delta_mtl: task {task!r} has no scores (have: {sorted(scores)})")
        if task not in baseline_scores:
            raise TaskMismatchError(
                f"delta_mtl: task {task!r} has no baseline scores (have: {sorted(baseline_scores)})"
            )
        if not metric_dirs:
            raise PolytaskError(f"delta_mtl: task {task!r} has no metrics")
        total = 0.0
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
            total += sign * (m - b) / abs(b) * 100.0
        gains[task] = total / len(metric_dirs)
    return gains


def delta_mtl(scores: Scores, baseline_scores: Scores, directions: Directions) -> float:
    """ΔMTL in percent over the tasks named in ``directions`` ({task: {metric: higher_is_better}}).

    >>> delta_mtl({"a": {"acc": 0.9}}, {"a": {"acc": 0.8}}, {"a": {"acc": True}})
    12.5
    """
    gains = relative_gains(scores, baseline_scores, directions)
    return sum(gains.values()) / len(gains)


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
