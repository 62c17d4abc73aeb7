"""The MMoE paper's correlation sweep (Ma et al. 2018, §5.1, Figs. 4-5) on ``mmoe_synthetic``, with paired
verdicts on each of the paper's claims.

    python examples/reproduce_mmoe.py [--seeds 20] [--max-epochs 150] [--patience 10] [--workers N]

Setup, as the paper's §5.1: d = 100; 8 experts of one 16-unit layer; towers of one 8-unit layer;
Shared-Bottom one 113-unit layer (the paper's parameter match); correlations p ∈ {1, 0.9, 0.5}; Adam.
The paper searched the learning rate over {1e-4, 1e-3, 1e-2} and averages 200 runs; we use 1e-3 for
every model (fixed before looking at the results) and ``--seeds`` seeds (``--seeds 200`` for the
paper's count: about 10 CPU-hours). The paper gives no sample counts: 10k training / 2k validation / 2k
test rows per seed, batch 128. Every model is trained to convergence: until ``--patience`` epochs bring
no better validation MSE (at most ``--max-epochs``), and the best validation epoch is tested; the budget
lines show the epochs and steps each model took. Seed s means the same data (x, u_1, u_2) and the same
initialisation seed for every model and every p, so differences are paired by seed. A difference under
``MARGIN`` test MSE (about 7% of the MoE models' error) counts as too small to matter.

Claims (Figs. 4-5): every model worse at p = 0.5 than at p = 1; OMoE about as good as MMoE at p = 1;
MMoE better than OMoE at lower p; OMoE degrades more than MMoE; both MoE models better than
Shared-Bottom. The mechanism, printed beside them: MMoE's two gates drift apart as p falls (mean total
variation between the tasks' gate distributions on the test inputs).
"""

from __future__ import annotations

import argparse
import statistics

import torch

import polytask as pt
from polytask.reproduction import Stopwatch, budget_line, check_seeds, mean_std, run_jobs, save_records, verdict

ARCHS = ["shared_bottom", "omoe", "mmoe"]
PAPER_PS = [1.0, 0.9, 0.5]
BATCH = 128
MARGIN = 0.002  # test MSE differences below this are too small to matter (labels have variance 1; MoE MSE ~0.03)


def gate_separation(model: torch.nn.Module, inputs: torch.Tensor) -> float:
    """Mean over inputs of the total variation ½ Σ_i |g_1(x)_i − g_2(x)_i| between two tasks' gates."""
    model.eval()
    with torch.no_grad():
        model(inputs)
    g1, g2 = (model.gates[t] for t in model.tasks[:2])
    return float(0.5 * (g1 - g2).abs().sum(dim=1).mean())


def train_one(
    arch: str, p: float, seed: int, max_epochs: int, patience: int, lr: float, experts: int, units: int
) -> dict:
    """Train one model; its test MSE (mean of the two tasks), budget and gate separation."""
    data = pt.data.create("mmoe_synthetic", p=p, seed=seed)
    pt.seed_everything(seed)
    options = {"n_experts": experts, "experts": (units,)} if arch in ("omoe", "mmoe") else {}
    model = pt.models.create(arch, tasks=data.tasks, input_shape=data.input_shape, **options)
    balancer = pt.balancing.create("ew", tasks=[t.name for t in data.tasks])
    trainer = pt.Trainer(
        model, data.tasks, balancer, data.train, data.val, data.test,
        epochs=max_epochs, patience=patience, batch_size=BATCH, lr=lr, device="cpu", progress=False, seed=seed,
    )  # fmt: skip
    result = trainer.fit()
    record = {
        "mse": statistics.fmean(result.test_scores[t.name]["mse"] for t in data.tasks),
        "best_epoch": result.best_epoch,
        "epochs_trained": result.extra["epochs_trained"],
        "steps": result.extra["steps"],
        "stopped_early": result.extra["stopped_early"],
    }
    if arch in ("omoe", "mmoe"):
        record["gate_separation"] = gate_separation(model, data.test.inputs)
    return record


def sweep(
    ps, seeds, archs, max_epochs: int = 150, patience: int = 10, lr=1e-3, experts=8, units=16, workers=None, out=None
) -> dict[tuple[str, float], list[dict]]:
    """{(arch, p): [record per seed]} for every arch, p and seed."""
    jobs = [(a, p, s, max_epochs, patience, lr, experts, units) for p in ps for a in archs for s in seeds]
    records = run_jobs(train_one, jobs, workers, desc="mmoe sweep")
    if out is not None:
        print(f"every run's numbers: {save_records(out, jobs, records)}")
    results: dict[tuple[str, float], list[dict]] = {}
    for (arch, p, *_), record in zip(jobs, records):
        results.setdefault((arch, p), []).append(record)
    return results


def table(results, ps, archs) -> str:
    lines = ["| p | label corr. | " + " | ".join(archs) + " |", "|---|---|" + "---|" * len(archs)]
    for p in ps:
        corr = pt.data.create("mmoe_synthetic", p=p, seed=0).info["label_correlation"]
        cells = [mean_std(r["mse"] for r in results[a, p]) for a in archs]
        lines.append(f"| {p} | {corr:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims(results, ps, archs) -> list:
    """Print and return the paired verdict on each of the paper's claims that the sweep covers."""

    def mse(arch, p):
        return [r["mse"] for r in results[arch, p]]

    top, low = max(ps), min(ps)
    out = []
    for a in archs:
        out.append(verdict(f"{a} worse at p={low} than at p={top}", f"{a}@{low}", mse(a, low), f"{a}@{top}",
                           mse(a, top), higher_is_better=True))  # fmt: skip
    if {"omoe", "mmoe"} <= set(archs):
        out.append(verdict(f"OMoE about as good as MMoE at p={top}", "mmoe", mse("mmoe", top), "omoe",
                           mse("omoe", top), higher_is_better=False, margin=MARGIN, equivalent=True))  # fmt: skip
        for p in ps:
            if p != top:
                out.append(verdict(f"MMoE better than OMoE at p={p}", "mmoe", mse("mmoe", p), "omoe", mse("omoe", p),
                                   higher_is_better=False, margin=MARGIN))  # fmt: skip
        drop = {a: [x - y for x, y in zip(mse(a, low), mse(a, top))] for a in ("omoe", "mmoe")}
        out.append(verdict(f"OMoE degrades more than MMoE from p={top} to p={low}", "mmoe drop", drop["mmoe"],
                           "omoe drop", drop["omoe"], higher_is_better=False, margin=MARGIN))  # fmt: skip
    if "mmoe" in archs:
        gates = {p: [r["gate_separation"] for r in results["mmoe", p]] for p in (low, top)}
        out.append(verdict(f"mechanism: MMoE's gates further apart at p={low} than at p={top}", f"p={low}",
                           gates[low], f"p={top}", gates[top], higher_is_better=True))  # fmt: skip
    if "shared_bottom" in archs:
        for a in ("omoe", "mmoe"):
            if a in archs:
                for p in ps:
                    out.append(verdict(f"{a} better than Shared-Bottom at p={p}", a, mse(a, p), "shared_bottom",
                                       mse("shared_bottom", p), higher_is_better=False))  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--max-epochs", type=int, default=150)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--ps", default=",".join(map(str, PAPER_PS)))
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--experts", type=int, default=8, help="experts of OMoE/MMoE (paper: 8)")
    parser.add_argument("--expert-units", type=int, default=16, help="units of each expert's layer (paper: 16)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: every local core)")
    parser.add_argument("--out", default="runs/mmoe", help="where records.json (every run's numbers) goes")
    args = parser.parse_args()
    check_seeds(parser, args.seeds)
    clock = Stopwatch()
    ps = [float(v) for v in args.ps.split(",")]
    archs = args.archs.split(",")
    seeds = list(range(args.seeds))
    results = sweep(
        ps,
        seeds,
        archs,
        args.max_epochs,
        args.patience,
        args.lr,
        args.experts,
        args.expert_units,
        args.workers,
        args.out,
    )
    print(f"\nTest MSE (mean of the two tasks), mean ± std over {len(seeds)} seeds:\n")
    print(table(results, ps, archs))
    print(
        f"\nBudgets (each model trained until {args.patience} epochs bring no better validation MSE, at most "
        f"{args.max_epochs}; the best validation epoch is tested):"
    )
    for a in archs:
        runs = [r for p in ps for r in results[a, p]]
        print("  " + budget_line(a, runs))
        if not all(r["stopped_early"] for r in runs):
            unconverged = sum(not r["stopped_early"] for r in runs)
            print(f"  WARNING: {a} reached --max-epochs without converging in {unconverged}/{len(runs)} runs")
    if "mmoe" in archs:
        print("\nMechanism: MMoE's gate separation (mean total variation between the two tasks' gates):")
        for p in ps:
            print(f"  p={p}: {mean_std(r['gate_separation'] for r in results['mmoe', p])}")
    print(f"\nPaired verdicts (differences per seed, 95% t intervals; {len(seeds)} seeds):")
    claims(results, ps, archs)
    print(f"\nwall time {clock}")


if __name__ == "__main__":
    main()
