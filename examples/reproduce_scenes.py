"""Architectures on ``scenes`` with budgets stated and paired verdicts on the papers' claims against hard
parameter sharing: PAD-Net (Xu et al. 2018), Sluice networks (Ruder et al. 2019) and fully-adaptive
feature sharing (Lu et al. 2017) each better than HPS on the same backbone.

    python examples/reproduce_scenes.py [--seeds 5] [--epochs 40] [--archs padnet,sluice,fully_adaptive] [--workers N]

Every model (and the four single-task networks of the baseline, ``hps_resnet`` with one task) trains
``--epochs`` epochs with equal weighting (``polytask compare``'s defaults: Adam 2e-3, batch 64), and
the epoch with the best validation score is tested; the budget lines show how often that was the last
epoch (a model still improving at its last epoch got too few). Fully-adaptive grows its tree with
training rounds whose weights it keeps: the default protocol (the paper's) trains it
``--epochs`` more after them, so a second row, ``fully_adaptive (budget-matched)``, counts those rounds
in ``--epochs`` (``search_budget: included``). ΔMTL (Δp, %) is against the single-task networks' test
scores, mean over seeds; differences of ΔMTL are paired by seed (same data, same initialisation seed).
"""

from __future__ import annotations

import argparse
import statistics

import polytask as pt
from polytask.config import TrainSettings
from polytask.metrics.delta import delta_mtl
from polytask.reproduction import Stopwatch, budget_line, check_seeds, mean_std, run_jobs, save_records, verdict
from polytask.runs import train_run

BASE = "hps_resnet"
MARGIN = 1.0  # ΔMTL differences under one point are too small to matter
MATCHED = "fully_adaptive (budget-matched)"


def train_one(arch: str, task: str | None, seed: int, epochs: int, search_budget: str) -> dict:
    """One run: ``arch`` on every task (``task`` None) or on ``task`` alone; test scores and budget."""
    data = pt.data.create("scenes")
    if task is not None:
        data = data.select([task])
    settings = TrainSettings(epochs=epochs, device="cpu", search_budget=search_budget)  # batch, lr: the defaults
    result = train_run(data, arch, "ew", seed, settings, progress=False)
    return {
        "test": result.test_scores,
        "best_epoch": result.best_epoch,
        "epochs_trained": result.extra["epochs_trained"],
        "steps": result.extra["steps"],
        "search_passes": result.extra.get("search_passes", 0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--archs", default="padnet,sluice,fully_adaptive")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: every local core)")
    parser.add_argument("--out", default="runs/scenes", help="where records.json (every run's numbers) goes")
    args = parser.parse_args()
    check_seeds(parser, args.seeds)
    clock = Stopwatch()
    data = pt.data.create("scenes")
    tasks = [t.name for t in data.tasks]
    directions = {t.name: t.directions for t in data.tasks}
    archs = [BASE, *args.archs.split(",")]
    rows = {a: (a, None, "extra") for a in archs}
    if "fully_adaptive" in archs:
        rows[MATCHED] = ("fully_adaptive", None, "included")
    rows.update({f"single-task {t}": (BASE, t, "extra") for t in tasks})
    jobs = [
        (arch, task, seed, args.epochs, budget) for seed in range(args.seeds) for arch, task, budget in rows.values()
    ]
    records = run_jobs(train_one, jobs, args.workers, desc="scenes")
    print(f"every run's numbers: {save_records(args.out, jobs, records)}")
    runs = {name: [] for name in rows}
    for (arch, task, _seed, _, budget), record in zip(jobs, records):
        name = next(n for n, spec in rows.items() if spec == (arch, task, budget))
        runs[name].append(record)

    baseline = {t: {} for t in tasks}  # mean over seeds of each single-task network's test metrics
    for t in tasks:
        for metric in runs[f"single-task {t}"][0]["test"][t]:
            baseline[t][metric] = statistics.fmean(r["test"][t][metric] for r in runs[f"single-task {t}"])
    multi = [n for n in rows if not n.startswith("single-task")]
    delta = {n: [delta_mtl(r["test"], baseline, directions) for r in runs[n]] for n in multi}

    print(f"\nscenes, {args.seeds} seeds, {args.epochs} epochs, equal weighting. ΔMTL (Δp, %, positive = better):\n")
    print("| architecture | ΔMTL % | seg mIoU | depth abs_err | normals mean_angle | edges odsF |")
    print("|---|---|---|---|---|---|")
    for n in multi:
        cells = [mean_std(delta[n])] + [
            mean_std(r["test"][t][m] for r in runs[n])
            for t, m in (("seg", "miou"), ("depth", "abs_err"), ("normals", "mean_angle"), ("edges", "odsF"))
        ]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print("\nBudgets (the epoch selected on validation):")
    for n in rows:
        line = budget_line(n, runs[n])
        passes = [r["search_passes"] for r in runs[n]]
        if max(passes) > 0:
            line += f"; before that, search rounds worth {mean_std(passes)} passes over the training set"
        print("  " + line)
    print(f"\nPaired verdicts on ΔMTL (differences per seed, 95% t intervals; {args.seeds} seeds):")
    for n in multi[1:]:
        verdict(f"{n} better than HPS", n, delta[n], BASE, delta[BASE], True, MARGIN, digits=2)
    print(f"\nwall time {clock}")


if __name__ == "__main__":
    main()
