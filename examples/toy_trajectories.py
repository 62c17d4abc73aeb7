"""Every balancing method on the two-objective toy landscape of the CAGrad paper (Liu et al. 2021, also
used by Nash-MTL and FAMO), from the same starting points, drawn over the contours of the mean loss.

    python examples/toy_trajectories.py [--steps 3000] [--lr 0.01] [--out toy_trajectories.png]
    python examples/toy_trajectories.py --paper cagrad|famo [--out FILE.png]

``--paper`` runs the papers' own settings (read from their official code): ``cagrad`` (Liu et al. 2021,
``toy.py``): starts (−8.5, 7.5), (−8.5, −5), (9, 9); Adam lr 1e-3 for 100000 steps; CAGrad with c = 0.5
and d/(1 + c); the methods of its figure (mean gradient = ew, MGDA, PCGrad, CAGrad). ``famo`` (Liu et al.
2023, ``experiments/toy/trainer.py``, built on Nash-MTL's toy trainer): starts (−8.5, 7.5), (0, 0), (9, 9),
(−7.5, −0.5), (9, −1); Adam lr 1e-3 for 50000 steps; the first loss scaled by 0.1 (its ``--scale``
default), so that the tasks' gradients differ in scale; LS = ew, MGDA, PCGrad, CAGrad, Nash-MTL, FAMO.
Each run prints, per method, from how many starts it ends on the Pareto set and where (x1 = 0 is the
minimum of the mean loss).

The landscape (two inputs x1, x2; CAGrad paper, appendix): for x2 > 0 each objective is a log-valley,
f_1 = log max(|0.5(−x1 − 7) − tanh(−x2)|, 5e−6) + 6 and f_2 = log max(|0.5(−x1 + 3) + tanh(−x2) + 2|, 5e−6) + 6,
blended by c1 = max(tanh(x2/2), 0) with quadratic bowls f_1 = ((−x1 + 7)² + 0.1(−x2 − 8)²)/10 − 20 and
f_2 = ((−x1 − 7)² + 0.1(−x2 − 8)²)/10 − 20 weighted by c2 = max(tanh(−x2/2), 0). Both losses are shifted
by +21 here so that methods taking logs or ratios of losses (GLS, FAMO, LBTW, DWA, UW, IMTL-L) are
defined; gradients are unchanged. The Pareto set is the segment x1 ∈ [−7, 7], x2 = −8. Optimiser: Adam.
DWA/DTP are epoch-level methods: an "epoch" here is 100 steps; DTP's KPI is exp(−(L − 1)) (the toy has
no accuracy). One PNG is written: one panel per method.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

import polytask as pt

STARTS = [(-8.5, 7.5), (-8.5, 5.0), (0.0, 0.0), (9.0, 9.0), (10.0, -8.0)]
SHIFT = 21.0
TASKS = ["f1", "f2"]
EPOCH = 100
# the papers' own settings (see the module docstring)
PAPERS = {
    "cagrad": {
        "starts": [(-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0)],
        "lr": 1e-3,
        "steps": 100_000,
        "scale": 1.0,
        "methods": ["ew", "mgda", "pcgrad", "cagrad"],
        "options": {"cagrad": {"c": 0.5, "rescale": 2}},
    },
    "famo": {
        "starts": [(-8.5, 7.5), (0.0, 0.0), (9.0, 9.0), (-7.5, -0.5), (9.0, -1.0)],
        "lr": 1e-3,
        "steps": 50_000,
        "scale": 0.1,
        "methods": ["ew", "mgda", "pcgrad", "cagrad", "nash_mtl", "famo"],
        "options": {},
    },
}


def toy_losses(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """(2,) losses at x = (x1, x2), the first times ``scale``; works on (..., 2) inputs too (for the
    contour grid)."""
    x1, x2 = x[..., 0], x[..., 1]
    low = 5e-6
    f1 = torch.log(torch.clamp((0.5 * (-x1 - 7) - torch.tanh(-x2)).abs(), min=low)) + 6
    f2 = torch.log(torch.clamp((0.5 * (-x1 + 3) + torch.tanh(-x2) + 2).abs(), min=low)) + 6
    c1 = torch.clamp(torch.tanh(x2 * 0.5), min=0)
    f1_sq = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    f2_sq = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    c2 = torch.clamp(torch.tanh(-x2 * 0.5), min=0)
    losses = torch.stack([f1 * c1 + f1_sq * c2, f2 * c1 + f2_sq * c2], dim=-1) + SHIFT
    return losses * torch.tensor([scale, 1.0], dtype=losses.dtype)


def trajectory(
    method: str, start: tuple[float, float], steps: int, lr: float, scale: float = 1.0, options: dict | None = None
) -> np.ndarray:
    torch.manual_seed(0)
    x = torch.nn.Parameter(torch.tensor([start]))  # a (1, 2) "weight matrix": GradNorm needs one
    # at the Pareto set the two gradients are exactly opposite and Nash bargaining has no solution: keep
    # the previous weights there (reported as a warning) instead of stopping
    options = {**({"on_failure": "keep"} if method == "nash_mtl" else {}), **(options or {})}
    balancer = pt.balancing.create(method, tasks=TASKS, **options)
    opt = torch.optim.Adam([x, *balancer.parameters()], lr=lr)
    path = [x.detach()[0].clone()]
    epoch_losses = []
    for step in range(steps):
        z = x * 1.0  # the "representation": identity encoder, batch of one
        losses = toy_losses(z, scale)[0]
        opt.zero_grad()
        balancer.backward(losses, shared_params=[x], task_params={}, representation=z)
        opt.step()
        if balancer.needs_post_step_losses:
            with torch.no_grad():
                balancer.post_step(toy_losses(x, scale)[0])
        epoch_losses.append(losses.detach())
        if (step + 1) % EPOCH == 0:
            mean = torch.stack(epoch_losses).mean(0)
            balancer.epoch_end(
                losses=dict(zip(TASKS, mean.tolist())),
                kpis=dict(zip(TASKS, torch.exp(-(mean - 1).clamp_min(0)).tolist())),
            )
            epoch_losses = []
        path.append(x.detach()[0].clone())
        if not torch.isfinite(x).all():
            break
    return torch.stack(path).numpy()


def paths_of(
    method: str, starts: list, steps: int, lr: float, scale: float, options: dict
) -> tuple[str, list[np.ndarray]]:
    warnings.simplefilter("ignore", RuntimeWarning)
    torch.set_num_threads(1)
    return method, [trajectory(method, start, steps, lr, scale, options) for start in starts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", choices=sorted(PAPERS), help="the starts, optimiser, steps and methods of a paper")
    parser.add_argument("--steps", type=int, help="default 3000 (a paper's own with --paper)")
    parser.add_argument("--lr", type=float, help="Adam's learning rate; default 0.01 (a paper's own with --paper)")
    parser.add_argument("--methods", help="comma list or 'all' (default; a paper's own with --paper)")
    parser.add_argument("--out", default="toy_trajectories.png")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    paper = PAPERS.get(args.paper, {})
    steps = args.steps or paper.get("steps", 3000)
    lr = args.lr or paper.get("lr", 0.01)
    starts, scale, method_options = paper.get("starts", STARTS), paper.get("scale", 1.0), paper.get("options", {})
    names = args.methods or ",".join(paper.get("methods", ["all"]))
    methods = pt.balancing.available() if names == "all" else names.split(",")
    grid = torch.linspace(-10, 10, 201)
    X1, X2 = torch.meshgrid(grid, grid, indexing="xy")
    mean_loss = toy_losses(torch.stack([X1, X2], dim=-1), scale).mean(-1).numpy()
    cols = min(6, len(methods))
    rows = math.ceil(len(methods) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows), squeeze=False)
    start_time = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        jobs = [pool.submit(paths_of, m, starts, steps, lr, scale, method_options.get(m, {})) for m in methods]
        results = dict(job.result() for job in tqdm(as_completed(jobs), total=len(jobs), desc="methods"))
    for ax, method in zip(axes.flat, methods):
        ax.contour(X1.numpy(), X2.numpy(), mean_loss, levels=25, cmap="Greys", linewidths=0.6)
        ax.plot([-7, 7], [-8, -8], color="tab:green", lw=3, alpha=0.5)  # Pareto set
        for k, path in enumerate(results[method]):
            ax.plot(path[:, 0], path[:, 1], color=plt.cm.tab10(k), lw=1.2)
            ax.plot(*path[0], "o", color=plt.cm.tab10(k), ms=3)
            ax.plot(*path[-1], "*", color="black", ms=6)
        ax.set_title(method, fontsize=10)
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
        ax.set_xticks([])
        ax.set_yticks([])
        finals = [p[-1] for p in results[method]]
        on_pareto = [abs(f[1] + 8) < 0.5 and -7.5 <= f[0] <= 7.5 for f in finals]
        ends = ", ".join(f"({f[0]:.2f}, {f[1]:.2f})" for f in finals)
        print(f"{method:12s} ends on the Pareto set from {sum(on_pareto)}/{len(starts)} starts; ends: {ends}")
    for ax in list(axes.flat)[len(methods) :]:
        ax.axis("off")
    setting = f"{args.paper} paper's setting, " if args.paper else ""
    scaled = f", f1 x {scale}" if scale != 1.0 else ""
    title = f"Toy two-objective landscape (CAGrad): {setting}Adam lr {lr}, {steps} steps{scaled}; green: Pareto set"
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out} ({time.perf_counter() - start_time:.0f} s)")


if __name__ == "__main__":
    main()
