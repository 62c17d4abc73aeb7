"""Reports of a grouping run: a Markdown summary and heat-maps of the pair and TAG affinities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def pair_gains(record: dict[str, Any]) -> np.ndarray:
    """(K, K) matrix: 1 − L_t({t, j}) / L_t({t}) on validation, the gain task t (row) gets from j."""
    names = record["tasks"]
    single, pairs = record["pairs"]["single_val"], record["pairs"]["pair_val"]
    m = np.zeros((len(names), len(names)))
    for i, t in enumerate(names):
        for j, o in enumerate(names):
            if i != j:
                key = "+".join(sorted((t, o), key=names.index))
                m[i, j] = 1 - pairs[key][t] / single[t]
    return m


def heatmaps(record: dict[str, Any], out: Path) -> list[Path]:
    """``pair_gains.png`` and ``tag_affinity.png`` (whichever the record has)."""
    names = record["tasks"]
    panels = []
    if "pairs" in record:
        panels.append(("pair_gains.png", pair_gains(record), "pair gain on row task: 1 − L(pair)/L(single)"))
    if "tag" in record:
        panels.append(("tag_affinity.png", np.array(record["tag"]["affinity"]), "TAG affinity Z(row → column)"))
    paths = []
    for filename, matrix, title in panels:
        fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(names), 0.8 + 0.6 * len(names)))
        limit = float(np.abs(matrix).max()) or 1.0
        im = ax.imshow(matrix, cmap="RdBu", vmin=-limit, vmax=limit)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7)
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        fig.savefig(out / filename, dpi=110)
        plt.close(fig)
        paths.append(out / filename)
    return paths


def grouping_summary(records: list[dict[str, Any]]) -> str:
    """One row per seed and method: chosen groups, predicted and measured loss, time, recovered or not."""
    lines = [
        "| seed | method | groups (task -> best-serving network) | networks | predicted | measured test loss "
        "| seconds | true grouping |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        for method, predicted_key in (("pairs", "predicted_val_loss"), ("tag", "predicted_affinity")):
            if method not in r:
                continue
            m = r[method]
            groups = " ".join("{" + ",".join(g) + "}" for g in m["groups"])
            networks = " ".join("{" + ",".join(g) + "}" for g in m["networks"])
            recovered = {True: "yes", False: "no"}.get(m.get("recovered"), "n/a")
            lines.append(
                f"| {r['seed']} | {method} | {groups} | {networks} | {m[predicted_key]:.4f} | "
                f"{m['measured_test_loss']:.4f} | "
                f"{m['seconds']:.1f} | {recovered} |"
            )
    recovered = {method: sum(bool(r.get(method, {}).get("recovered")) for r in records) for method in ("pairs", "tag")}
    tail = ", ".join(f"{m}: {n}/{len(records)}" for m, n in recovered.items() if any(m in r for r in records))
    text = "\n".join(lines) + (f"\n\nTrue grouping recovered — {tail}." if records[0].get("truth") else "")
    checked = [r["seed"] for r in records if r.get("truth_margin_ok") is False]
    if any("truth_margin_ok" in r for r in records):
        text += (
            " Every seed's pair table passes the margin check, so its grouping counts as ground truth."
            if not checked
            else f" Seeds {checked} fail the margin check on the pair table: the data do not show their grouping."
        )
    return text + "\n"
