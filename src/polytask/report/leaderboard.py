"""The leaderboard: one row per method x architecture (plus the single-task baseline), as Markdown."""

from __future__ import annotations

from typing import Any

_SHORT = {"accuracy": "acc", "macro_f1": "F1", "rounded_accuracy": "r-acc", "log_loss": "logloss"}


def fmt(stats: dict[str, Any], digits: int = 3) -> str:
    if stats.get("mean") is None:
        return "n/a"
    text = f"{stats['mean']:.{digits}f}"
    return text + (f" ± {stats['std']:.{digits}f}" if stats.get("std") is not None else "")


def _ms(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


_DELTA_COLUMNS = {"p": ("delta_mtl", "Δp % ↑", "0 (ref.)"), "m": ("delta_m", "Δm % ↓", "0 (ref.)")}


def leading_delta(results: dict[str, Any]) -> str:
    """The ΔMTL convention that sorts and heads the leaderboard: 'p' or 'm' (results written before both
    were stored: 'p')."""
    convention = results.get("delta_mtl_convention")
    return convention.get("leaderboard", "p") if isinstance(convention, dict) else "p"


def delta_order(results: dict[str, Any]) -> list[str]:
    """The conventions in the leaderboard's column order (the leading one first)."""
    lead = leading_delta(results)
    return [lead, "m" if lead == "p" else "p"]


def convention_text(results: dict[str, Any]) -> str:
    """One sentence per stored convention, the leading one first."""
    convention = results.get("delta_mtl_convention")
    if not isinstance(convention, dict):  # results written before both were stored
        return f"ΔMTL (Δp): {convention}"
    return " ".join(f"{convention[_DELTA_COLUMNS[c][0]]}." for c in delta_order(results))


def leaderboard_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    tasks = results["tasks"]
    deltas = [_DELTA_COLUMNS[c] for c in delta_order(results)]
    columns = [(t["name"], m) for t in tasks for m in t["metrics"]]
    arrow = {True: "↑", False: "↓"}
    role = {t["name"]: t.get("role", "primary") for t in tasks}
    header = (
        ["method", "arch", *(title for _, title, _ in deltas)]
        + [
            f"{task}{' (aux)' if role[task] == 'auxiliary' else ''} {_SHORT.get(m, m)} "
            f"{arrow[next(t for t in tasks if t['name'] == task)['metrics'][m]]}"
            for task, m in columns
        ]
        + ["params", "ms/step", "ms/image"]
    )
    rows = []
    for s in results["summary"]:
        rows.append(
            [s["method"], s["arch"], *(fmt(s.get(key, {"mean": None}), 2) for key, _, _ in deltas)]
            + [fmt(s["metrics"][t][m]) for t, m in columns]
            + [f"{s['params']:,}", f"{s['ms_per_step']:.2f}", _ms(s.get("ms_per_image"))]
        )
    for arch, base in results["baselines"].items():
        rows.append(
            ["single-task", arch, *(ref for _, _, ref in deltas)]
            + [f"{base['test'][t][m]:.3f}" for t, m in columns]
            + [f"{base['params']:,}", f"{base['ms_per_step']:.2f}", _ms(base.get("ms_per_image"))]
        )
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def leaderboard_markdown(results: dict[str, Any]) -> str:
    """The leaderboard with a one-paragraph legend stating conventions."""
    header, rows = leaderboard_rows(results)
    seeds = results["config"]["seeds"]
    legend = (
        f"Dataset `{results['dataset']}`, {len(seeds)} seed(s) {seeds}, {results['config']['epochs']} epochs. "
        "Test metrics of the epoch selected on validation, mean ± std over seeds. "
        "ΔMTL in two conventions, against the single-task baseline (the `single-task` row of the "
        f"architecture's baseline network, mean over seeds), sorted by the first: {convention_text(results)} "
        "ms/step: training step; ms/image: inference (eval mode, batch 64). Single-task params, ms/step and "
        "ms/image are the sums over the one-task networks."
    )
    if any(t.get("role") == "auxiliary" for t in results["tasks"]):
        legend += (
            " ΔMTL and model selection use the primary tasks only; (aux) columns are auxiliary tasks, reported only."
        )
    text = f"# polytask leaderboard\n\n{legend}\n\n{markdown_table(header, rows)}\n"
    if results.get("not_run"):
        text += "\nNot run (the method cannot train the architecture):\n\n" + "".join(
            f"- {line}\n" for line in not_run_lines(results)
        )
    return text


def not_run_lines(results: dict[str, Any]) -> list[str]:
    """The (method, architecture) pairs of a comparison that were not run, with the reason."""
    return group_not_run(results.get("not_run", []))


def group_not_run(not_run: list[dict[str, str]]) -> list[str]:
    """``{method, arch, reason}`` records as lines ``methods on archs: the method <reason>``, one per
    reason and set of architectures."""
    by_reason: dict[str, dict[str, list[str]]] = {}
    for s in not_run:
        by_reason.setdefault(s["reason"], {}).setdefault(s["method"], []).append(s["arch"])
    lines = []
    for reason, archs_of in by_reason.items():
        methods_of: dict[tuple[str, ...], list[str]] = {}
        for method, archs in archs_of.items():
            methods_of.setdefault(tuple(archs), []).append(method)
        lines += [f"{', '.join(ms)} on {', '.join(archs)}: the method {reason}" for archs, ms in methods_of.items()]
    return lines
