"""A self-contained HTML report (figures embedded as base64 PNG) rebuilt from results.json alone."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from polytask.report.leaderboard import convention_text, leaderboard_rows, not_run_lines

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}img{max-width:100%}
pre{background:#f6f6f6;padding:1em;font-size:12px;overflow:auto}.note{color:#555;font-size:14px}"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def render_html(results: dict[str, Any], figures: dict[str, Path]) -> str:
    header, rows = leaderboard_rows(results)
    table = (
        "<table><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in header)
        + "</tr>"
        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        + "</table>"
    )
    cfg = results["config"]
    dataset = html.escape(results["dataset"])
    stamp = f"polytask {html.escape(results['polytask_version'])}, {html.escape(results['created'])}"
    not_run = not_run_lines(results)
    if not_run:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in not_run)
        table += f'<p class="note">Not run (the method cannot train the architecture):</p><ul>{items}</ul>'
    sections = "".join(f"<h2>{html.escape(title)}</h2>{_img(path)}" for title, path in figures.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>polytask report: {dataset}</title>
<style>{_CSS}</style></head><body>
<h1>polytask comparison on <code>{dataset}</code></h1>
<p class="note">{len(cfg["seeds"])} seed(s), {cfg["epochs"]} epochs, batch {cfg["batch_size"]}, lr {cfg["lr"]};
wall time {results["wall_seconds"]:.0f} s; {stamp}.
Test metrics at the epoch selected on validation, mean ± std over seeds.
{html.escape(convention_text(results))}</p>
<h2>Leaderboard</h2>{table}
{sections}
<h2>Configuration</h2><pre>{html.escape(json.dumps(cfg, indent=2))}</pre>
</body></html>"""
