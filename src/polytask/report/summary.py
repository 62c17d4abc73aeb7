"""A comparison's summary, always derived from its runs: each run's ΔMTL (both conventions) from its test
scores and its baseline's, then the mean ± std over seeds per method x architecture, sorted by the
leading convention. ``compare`` writes it; ``polytask report`` recomputes it, so an edited or merged
results.json cannot show a leaderboard its runs do not support. :func:`validate_results` checks a
results.json against its schema first, with errors naming the field."""

from __future__ import annotations

import math
import statistics
from typing import Any

from polytask.errors import ConfigError, PolytaskError
from polytask.metrics.delta import CONVENTION_KEYS, defined_directions, delta_m, delta_mtl
from polytask.typecheck import check_value

SCHEMA = "polytask.compare/1"
Scores = dict[str, dict[str, float | None]]
# the fields a results.json of SCHEMA must have, with their JSON types
TOP_LEVEL = {
    "schema": str,
    "config": dict[str, Any],
    "dataset": str,
    "tasks": list[dict[str, Any]],
    "baselines": dict[str, dict[str, Any]],
    "runs": list[dict[str, Any]],
}
TASK_FIELDS = {"name": str, "metrics": dict[str, bool]}
BASELINE_FIELDS = {"test": Scores, "params": int, "ms_per_step": float}
RUN_FIELDS = {
    "method": str,
    "arch": str,
    "seed": int,
    "test_scores": Scores,
    "params": int,
    "ms_per_step": float,
    "history": list[dict[str, Any]],
    "baseline_arch": str,
}
CONFIG_FIELDS = {"seeds": list[int], "epochs": int}


def _fields(where: str, record: Any, spec: dict[str, Any]) -> None:
    if not isinstance(record, dict):
        raise PolytaskError(f"results field {where}: expected a mapping, got {type(record).__name__}")
    for key, annotation in spec.items():
        path = f"{where}.{key}" if where else key
        if key not in record:
            raise PolytaskError(f"results field {path} is missing")
        try:
            check_value(path, record[key], annotation)
        except ConfigError as exc:
            raise PolytaskError(str(exc).replace("config key", "results field")) from None


def validate_results(results: Any) -> None:
    """Raise :class:`PolytaskError` naming the first field of ``results`` that does not fit the schema
    (a missing or mistyped field, a run whose tasks, metrics or baseline do not match the comparison)."""
    _fields("", results, TOP_LEVEL)
    if results["schema"] != SCHEMA:
        raise PolytaskError(f"results field schema is {results['schema']!r}; this polytask reads {SCHEMA!r}")
    _fields("config", results["config"], CONFIG_FIELDS)
    for i, task in enumerate(results["tasks"]):
        _fields(f"tasks[{i}]", task, TASK_FIELDS)
    metrics = {t["name"]: set(t["metrics"]) for t in results["tasks"]}
    for arch, base in results["baselines"].items():
        _fields(f"baselines.{arch}", base, BASELINE_FIELDS)
        _same_metrics(f"baselines.{arch}.test", base["test"], metrics)
    if not results["runs"]:
        raise PolytaskError("results field runs is empty: there is nothing to report")
    for i, run in enumerate(results["runs"]):
        _fields(f"runs[{i}]", run, RUN_FIELDS)
        _same_metrics(f"runs[{i}].test_scores", run["test_scores"], metrics)
        if run["baseline_arch"] not in results["baselines"]:
            raise PolytaskError(
                f"results field runs[{i}].baseline_arch is {run['baseline_arch']!r}, which has no entry in baselines"
            )
    if "delta_mtl_convention" in results:
        lead = results["delta_mtl_convention"]
        if isinstance(lead, dict) and lead.get("leaderboard", "p") not in CONVENTION_KEYS:
            raise PolytaskError(f"results field delta_mtl_convention.leaderboard is {lead.get('leaderboard')!r}")


def _same_metrics(where: str, scores: dict, metrics: dict[str, set]) -> None:
    for task, names in metrics.items():
        if task not in scores:
            raise PolytaskError(f"results field {where} has no task {task!r}")
        missing = names - set(scores[task])
        if missing:
            raise PolytaskError(f"results field {where}.{task} lacks metric(s) {', '.join(sorted(missing))}")


def stats(values: list[float | None]) -> dict[str, float | None]:
    """Mean, sample std (None with one value) and count of the finite values."""
    vals = [v for v in values if v is not None and v == v]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None, "n": len(vals)}


def _finite(scores: dict) -> dict:
    return {t: {m: math.nan if v is None else v for m, v in ms.items()} for t, ms in scores.items()}


def run_deltas(results: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """Both ΔMTL conventions of ``run`` against its baseline's test scores, over the primary tasks (metrics
    whose baseline is 0 or not finite left out, and named)."""
    base = _finite(results["baselines"][run["baseline_arch"]]["test"])
    directions = {t["name"]: t["metrics"] for t in results["tasks"] if t.get("role", "primary") == "primary"}
    directions, undefined = defined_directions(base, directions)
    scores = _finite(run["test_scores"])
    if not directions:
        return {"delta_mtl": math.nan, "delta_m": math.nan, "delta_mtl_excludes": undefined}
    return {
        "delta_mtl": delta_mtl(scores, base, directions),
        "delta_m": delta_m(scores, base, directions),
        "delta_mtl_excludes": undefined,
    }


def summarize(results: dict[str, Any], leading: str = "p") -> list[dict[str, Any]]:
    """Per method x architecture (in the order of first appearance in ``results['runs']``): both ΔMTL
    conventions and every test metric as mean ± std over seeds, params, ms/step, ms/image; sorted by the
    ``leading`` convention (Δp descending, Δm ascending)."""
    runs = results["runs"]
    pairs = list(dict.fromkeys((r["arch"], r["method"]) for r in runs))
    summary = []
    for arch, method in pairs:
        rs = [r for r in runs if r["arch"] == arch and r["method"] == method]
        seeds = [r["seed"] for r in rs]
        if len(set(seeds)) != len(seeds):
            raise PolytaskError(f"results runs hold {method}/{arch} seed(s) {seeds} with a repeat: each counts once")
        first = rs[0]["test_scores"]
        summary.append(
            {
                "method": method,
                "arch": arch,
                "delta_mtl": stats([r["delta_mtl"] for r in rs]),
                "delta_m": stats([r["delta_m"] for r in rs]),
                "metrics": {t: {m: stats([r["test_scores"][t][m] for r in rs]) for m in first[t]} for t in first},
                "params": rs[0]["params"],
                "ms_per_step": statistics.fmean(r["ms_per_step"] for r in rs),
                "ms_per_image": stats([r.get("ms_per_image") for r in rs])["mean"],
                "baseline_arch": rs[0]["baseline_arch"],
            }
        )
    key, higher_is_better = CONVENTION_KEYS[leading]
    sign = 1.0 if higher_is_better else -1.0
    summary.sort(key=lambda s: -sign * s[key]["mean"] if s[key]["mean"] is not None else math.inf)
    return summary


def recompute(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` validated, with every run's ΔMTL and the summary computed again from the runs."""
    validate_results(results)
    lead = results.get("delta_mtl_convention")
    leading = lead.get("leaderboard", "p") if isinstance(lead, dict) else "p"
    runs = [{**run, **run_deltas(results, run)} for run in results["runs"]]
    out = {**results, "runs": runs}
    out["summary"] = summarize(out, leading)
    return out
