"""Figures of a comparison (matplotlib, Agg): loss curves, task-weight trajectories, ΔMTL bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from polytask.report.leaderboard import leading_delta


def _curves(runs: list[dict], key: str, task: str) -> np.ndarray:
    """(seeds, epochs) array of history[key][task], NaN-padded."""
    series = [[h[key][task] if h[key].get(task) is not None else np.nan for h in r["history"]] for r in runs]
    width = max(len(s) for s in series)
    return np.array([s + [np.nan] * (width - len(s)) for s in series], dtype=float)


def _nanmean_rows(curves: np.ndarray) -> np.ndarray:
    """Mean over seeds per epoch, NaN where no seed has a value (an epoch without labels of the task)
    without NumPy's empty-slice warning."""
    counts = np.sum(~np.isnan(curves), axis=0)
    sums = np.nansum(curves, axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _groups(results: dict[str, Any]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    multi_arch = len({r["arch"] for r in results["runs"]}) > 1
    for r in results["runs"]:
        groups.setdefault(f"{r['method']}/{r['arch']}" if multi_arch else r["method"], []).append(r)
    return groups


def loss_curves(results: dict[str, Any], path: Path) -> Path:
    """Per task: training loss (solid) and validation loss (dashed) per epoch, mean over seeds, log scale."""
    tasks = [t["name"] for t in results["tasks"]]
    groups = _groups(results)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    palette = 10 if len(groups) <= 10 else 20
    colors = (plt.cm.tab10 if palette == 10 else plt.cm.tab20)(np.linspace(0, 1, palette))
    for ax, task in zip(axes[0], tasks):
        for i, (label, runs) in enumerate(groups.items()):
            for key, style in (("train_loss", "-"), ("val_loss", "--")):
                mean = _nanmean_rows(_curves(runs, key, task))
                ax.plot(
                    np.arange(1, len(mean) + 1),
                    mean,
                    style,
                    color=colors[i % palette],
                    label=label if key == "train_loss" else None,
                )
        for arch, base in results["baselines"].items():
            mean = _nanmean_rows(_curves(base["runs"][task], "val_loss", task))
            ax.plot(np.arange(1, len(mean) + 1), mean, ":", color="black", label=f"single-task val ({arch})")
        ax.set_title(task)
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("loss (solid: train, dashed: val)")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    if len(labels) <= 12:
        axes[0][-1].legend(fontsize=7, loc="upper right")
    else:  # many runs: beside the panels, in columns of up to 30
        columns = -(-len(labels) // 30)
        fig.legend(handles, labels, fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 0.98), ncol=columns)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def weight_trajectories(results: dict[str, Any], path: Path) -> Path:
    """Per method: each task's mean weight per epoch (mean over seeds)."""
    tasks = [t["name"] for t in results["tasks"]]
    groups = _groups(results)
    n = len(groups)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax, (label, runs) in zip(axes.flat, groups.items()):
        for task in tasks:
            mean = _nanmean_rows(_curves(runs, "weights", task))
            ax.plot(np.arange(1, len(mean) + 1), mean, marker=".", label=task)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes[0][0].set_ylabel("task weight (epoch mean)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def delta_bars(results: dict[str, Any], path: Path) -> Path:
    """Both ΔMTL conventions, mean with ± std error bars per method (x architecture) in leaderboard order,
    one panel each (Δp: ↑ better; Δm: ↓ better), zero line = single-task; green where better than it."""
    summary = results["summary"]
    multi_arch = len({s["arch"] for s in summary}) > 1
    labels = [f"{s['method']}/{s['arch']}" if multi_arch else s["method"] for s in summary]
    panels = [
        (key, ylabel, higher)
        for key, ylabel, higher in (
            ("delta_mtl", "Δp % vs single-task (↑ better)", True),
            ("delta_m", "Δm % vs single-task (↓ better)", False),
        )
        if any(s.get(key, {}).get("mean") is not None for s in summary)
    ]
    if leading_delta(results) == "m":
        panels.reverse()
    width = max(4.0, 0.7 * len(labels) + 1.5)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 3.6), squeeze=False)
    for ax, (key, ylabel, higher) in zip(axes[0], panels):
        means = [s.get(key, {}).get("mean") or 0.0 for s in summary]
        stds = [s.get(key, {}).get("std") or 0.0 for s in summary]
        colors = ["tab:green" if (m >= 0) == higher or m == 0 else "tab:red" for m in means]
        ax.bar(range(len(labels)), means, yerr=stds, capsize=4, color=colors, alpha=0.8)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=45, ha="right")
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def delta_vs_params(results: dict[str, Any], path: Path) -> Path:
    """ΔMTL (mean ± std over seeds) against the number of parameters, one point per method x architecture,
    the single-task baselines (sum of the one-task networks) at ΔMTL = 0: the efficiency-accuracy view."""
    summary = results["summary"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    markers = "osD^v<>phX*"
    methods = sorted({s["method"] for s in summary})
    for s in summary:
        mean = s["delta_mtl"]["mean"]
        if mean is None:
            continue
        m = markers[methods.index(s["method"]) % len(markers)]
        ax.errorbar(s["params"], mean, yerr=s["delta_mtl"]["std"] or 0.0, fmt=m, capsize=3, alpha=0.85)
        label = s["arch"] if len(methods) == 1 else f"{s['method']}/{s['arch']}"
        ax.annotate(label, (s["params"], mean), textcoords="offset points", xytext=(5, 4), fontsize=8)
    for arch, base in results["baselines"].items():
        ax.plot(base["params"], 0.0, "k*", markersize=10)
        ax.annotate(
            f"single-task ({arch})", (base["params"], 0.0), textcoords="offset points", xytext=(5, -10), fontsize=8
        )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("ΔMTL % vs single-task (↑ better)")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
