"""When the direct engine pays: an MGDA training step with each per-task gradient engine on an MLP trunk
(64 -> 512 -> 512 -> 256, batch 128) as the number of tasks K and the size of the heads grow, as a ratio
to EW's step measured in the same run, and the engine ``engine='auto'`` picks (direct from
``DIRECT_FROM_TASKS`` tasks on).

    python benchmarks/engine_heads.py [--tasks 3,4,5,10] [--hidden 0,128] [--steps 10] [--rounds 5]

A vmapped backward (``batched``) runs every head for all K rows of the identity, K - 1 of them zero, and
the ``loop`` engine runs K backwards through the whole trunk; the direct engine runs one backward
through the heads and carries the K gradients through the trunk as batched matrix products.
"""

from __future__ import annotations

import argparse
import itertools
import warnings

import torch
from timing import measure
from torch import nn

import polytask as pt

ENGINES = ("direct", "batched", "loop")


def make_step(n_tasks: int, hidden: int, method: str, engine: str):
    torch.manual_seed(0)
    widths = [64, 512, 512, 256]
    trunk = nn.Sequential(*[m for a, b in itertools.pairwise(widths) for m in (nn.Linear(a, b), nn.ReLU())])
    heads = nn.ModuleList(
        nn.Sequential(nn.Linear(256, hidden), nn.ReLU(), nn.Linear(hidden, 1)) if hidden else nn.Linear(256, 1)
        for _ in range(n_tasks)
    )
    x, y = torch.randn(128, 64), torch.randn(n_tasks, 128)
    opt = torch.optim.SGD([*trunk.parameters(), *heads.parameters()], lr=1e-4)
    shared, task_params = list(trunk.parameters()), {str(k): list(h.parameters()) for k, h in enumerate(heads)}
    options = {} if method == "ew" else {"engine": engine}
    balancer = pt.balancing.create(method, tasks=[str(k) for k in range(n_tasks)], **options)

    def step():
        z = trunk(x)
        losses = torch.stack([(h(z)[:, 0] - y[k]).pow(2).mean() for k, h in enumerate(heads)])
        opt.zero_grad(set_to_none=True)
        balancer.backward(losses, shared, task_params)
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="3,4,5,10")
    parser.add_argument("--hidden", default="0,128")
    parser.add_argument("--method", default="mgda")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(f"threads {torch.get_num_threads()}; {args.method} step time / EW's step time (same run)")
    print(f"{'K':>3s} {'head hidden':>11s} " + " ".join(f"{e:>8s}" for e in ENGINES) + f" {'auto picks':>11s}")
    for n_tasks in map(int, args.tasks.split(",")):
        for hidden in map(int, args.hidden.split(",")):
            steps = {"ew": make_step(n_tasks, hidden, "ew", "auto")}
            steps.update({e: make_step(n_tasks, hidden, args.method, e) for e in ENGINES})
            times = measure(steps, args.steps, args.rounds)
            ratios = " ".join(f"{times[e] / times['ew']:8.2f}" for e in ENGINES)
            picked = "direct" if n_tasks >= pt.balancing.jacobian.DIRECT_FROM_TASKS else "batched"
            print(f"{n_tasks:3d} {hidden or '-':>11} {ratios} {picked:>11s}")


if __name__ == "__main__":
    main()
