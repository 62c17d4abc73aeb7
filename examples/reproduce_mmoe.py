"""The MMoE paper's correlation sweep (Ma et al. 2018, §5, Figs. 4-5) on ``mmoe_synthetic``: test MSE of
Shared-Bottom, OMoE and MMoE (and CGC/PLE) as the task correlation p falls.

    python examples/reproduce_mmoe.py [--seeds 5] [--epochs 30] [--ps 1,0.5,0] [--archs shared_bottom,omoe,mmoe]

Setup: d = 100, 10k training / 2k validation / 2k test rows per p, α and β fixed across seeds (see the
dataset's docstring); towers of 8 units, Shared-Bottom of 113; Adam lr 1e-3, batch 128, 30 epochs, equal
weighting, the epoch chosen on validation. Experts: 4 of 8 units by default. At the paper's 8 experts of
16 units (``--experts 8 --expert-units 16``) the experts have enough capacity for two unrelated targets
of this data and OMoE barely degrades as p falls (measured: 0.026 -> 0.032 MSE); with less capacity the
shared gate must trade the tasks off and the paper's trend appears. Reported: mean ± std over seeds of
the test MSE averaged over the two tasks. The paper's trend: every model gets worse as p falls, OMoE
about as good as MMoE at p = 1 but clearly worse at lower p, MMoE barely affected.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import polytask as pt

ARCHS = ["shared_bottom", "omoe", "mmoe"]
BATCH = 128


def test_mse(
    arch: str, p: float, seed: int, epochs: int, lr: float = 1e-3, batch: int = BATCH, moe: dict | None = None
) -> float:
    """Mean test MSE over the two tasks of one trained model."""
    data = pt.data.create("mmoe_synthetic", p=p, seed=seed)
    pt.seed_everything(seed)
    options = dict(moe or {}) if arch in ("omoe", "mmoe") else {}
    model = pt.models.create(arch, tasks=data.tasks, input_shape=data.input_shape, **options)
    balancer = pt.balancing.create("ew", tasks=[t.name for t in data.tasks])
    trainer = pt.Trainer(
        model,
        data.tasks,
        balancer,
        data.train,
        data.val,
        data.test,
        epochs=epochs,
        batch_size=batch,
        lr=lr,
        device="cpu",
        progress=False,
        seed=seed,
    )
    result = trainer.fit()
    return statistics.mean(result.test_scores[t.name]["mse"] for t in data.tasks)


def sweep(
    ps, seeds, archs, epochs: int, verbose: bool = True, lr: float = 1e-3, batch: int = BATCH, moe: dict | None = None
) -> dict[tuple[str, float], list[float]]:
    """{(arch, p): [test MSE per seed]}."""
    results: dict[tuple[str, float], list[float]] = {}
    for p in ps:
        for arch in archs:
            start = time.perf_counter()
            results[arch, p] = [test_mse(arch, p, s, epochs, lr, batch, moe) for s in seeds]
            if verbose:
                v = results[arch, p]
                print(
                    f"  p={p:<4} {arch:14s} {statistics.mean(v):.4f} ± {statistics.stdev(v) if len(v) > 1 else 0:.4f}"
                    f"  ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
    return results


def table(results, ps, archs) -> str:
    lines = ["| p | label corr. | " + " | ".join(archs) + " |", "|---|---|" + "---|" * len(archs)]
    for p in ps:
        corr = pt.data.create("mmoe_synthetic", p=p, seed=0).info["label_correlation"]
        cells = []
        for a in archs:
            v = results[a, p]
            cells.append(f"{statistics.mean(v):.4f} ± {statistics.stdev(v) if len(v) > 1 else 0:.4f}")
        lines.append(f"| {p} | {corr:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--ps", default="1,0.5,0")
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--experts", type=int, default=4, help="experts of OMoE/MMoE (paper: 8)")
    parser.add_argument("--expert-units", type=int, default=8, help="units of each expert's layer (paper: 16)")
    parser.add_argument("--batch-size", type=int, default=BATCH)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ps = [float(v) for v in args.ps.split(",")]
    archs = args.archs.split(",")
    seeds = list(range(args.seeds))
    moe = {"n_experts": args.experts, "experts": (args.expert_units,)}
    results = sweep(ps, seeds, archs, args.epochs, lr=args.lr, batch=args.batch_size, moe=moe)
    print("\nTest MSE (mean of the two tasks), mean ± std over", len(seeds), "seeds:\n")
    print(table(results, ps, archs))
    if "omoe" in archs and "mmoe" in archs:
        for p in ps:
            wins = sum(o > m for o, m in zip(results["omoe", p], results["mmoe", p]))
            print(f"p={p}: MMoE beats OMoE in {wins}/{len(seeds)} seeds")


if __name__ == "__main__":
    main()
