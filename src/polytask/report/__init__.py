"""Reports from a comparison's results dictionary: leaderboard.md, figures and report.html."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from polytask.errors import PolytaskError
from polytask.report.html import render_html
from polytask.report.leaderboard import leaderboard_markdown, leaderboard_rows, markdown_table
from polytask.report.plots import delta_bars, delta_vs_params, loss_curves, weight_trajectories
from polytask.utils import atomic_write


def write_report(results: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write leaderboard.md, plots/*.png and report.html into ``out``; return their paths."""
    out = Path(out)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    both = "ΔMTL vs single-task, both conventions (mean ± std over seeds)"
    figures = {both: delta_bars(results, plots / "delta_mtl.png")}
    if len({s["arch"] for s in results["summary"]}) > 1:  # the efficiency-accuracy view compares architectures
        figures["ΔMTL against parameters"] = delta_vs_params(results, plots / "delta_vs_params.png")
    figures["Loss curves per task"] = loss_curves(results, plots / "loss_curves.png")
    figures["Task-weight trajectories"] = weight_trajectories(results, plots / "task_weights.png")
    md = leaderboard_markdown(results)
    page = render_html(results, figures)
    atomic_write(out / "leaderboard.md", lambda f: f.write(md.encode()))
    atomic_write(out / "report.html", lambda f: f.write(page.encode()))
    return {
        "leaderboard": out / "leaderboard.md",
        "report": out / "report.html",
        **{p.stem: p for p in figures.values()},
    }


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a results.json (or the directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise PolytaskError(f"no results file at {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PolytaskError(f"{path} is not valid JSON: {exc}") from exc


__all__ = ["leaderboard_markdown", "leaderboard_rows", "load_results", "markdown_table", "write_report"]
