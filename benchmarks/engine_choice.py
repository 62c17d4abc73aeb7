"""Which per-task gradient engine is faster for the library's architectures: each gradient method's
training step with ``engine='direct'`` (where it applies: linear/elementwise shared layers),
``engine='batched'`` and ``engine='loop'`` as a ratio to EW's step, measured in the same run (methods and
engines interleaved within each round). It shows the evidence for ``engine='auto'`` choosing the loop on
the CPU when convolution kernels are among the parameters, and where the direct engine pays.

    python benchmarks/engine_choice.py [--archs hps_mlp,hps_cnn,hps_resnet,padnet,mtinet]
                                       [--methods mgda,pcgrad,mgda_ub] [--batch 32] [--steps 3] [--rounds 5]

A step is forward, losses, zero_grad, the balancer's backward and an SGD step on a fixed batch:
multidigits for hps_mlp / hps_cnn, scenes (32x32) for the dense designs.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable

import torch
from timing import measure

import polytask as pt


def dataset_for(arch: str) -> pt.data.MultiTaskData:
    if arch in ("hps_mlp", "hps_cnn"):
        return pt.data.create("multidigits", n_train=256, n_val=32, n_test=32)
    return pt.data.create("scenes", n_train=64, n_val=8, n_test=8)


def make_step(arch: str, data, method: str, engine: str, batch: int) -> Callable[[], None]:
    torch.manual_seed(0)
    model = pt.models.create(arch, tasks=data.tasks, input_shape=data.input_shape)
    options = {} if method == "ew" else {"engine": engine}
    balancer = pt.balancing.create(method, tasks=[t.name for t in data.tasks], **options)
    opt = torch.optim.SGD(list(model.parameters()) + list(balancer.parameters()), lr=1e-4)
    x = data.train.inputs[:batch]
    y = {k: v[:batch] for k, v in data.train.targets.items()}
    shared, heads = list(model.shared_parameters()), model.task_parameter_groups()

    def step():
        losses = pt.tasks.compute_losses(data.tasks, model(x), y)
        opt.zero_grad(set_to_none=True)
        balancer.backward(losses, shared, heads, representation=model.representation)
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="hps_mlp,hps_cnn,hps_resnet,padnet,mtinet")
    parser.add_argument("--methods", default="mgda,pcgrad,mgda_ub")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    methods = args.methods.split(",")
    print(f"threads {torch.get_num_threads()}, batch {args.batch}; step time / EW's step time (same run)")
    print(f"{'arch':12s} {'method':10s} {'direct':>8s} {'batched':>8s} {'loop':>8s} {'auto picks':>11s}")
    for arch in args.archs.split(","):
        data = dataset_for(arch)
        steps = {("ew", "-"): make_step(arch, data, "ew", "auto", args.batch)}
        picked = {}
        for method in methods:
            try:
                picked[method] = _engine_used(arch, data, method, args.batch)
            except pt.PolytaskError as exc:  # e.g. rep-grad on a model without one shared representation
                print(f"{arch:12s} {method:10s} n/a: {str(exc).split(';')[0][:70]}")
                continue
            for engine in ("direct", "batched", "loop"):
                step = make_step(arch, data, method, engine, args.batch)
                try:
                    step()
                except pt.PolytaskError:  # the direct engine does not handle this graph
                    continue
                steps[(method, engine)] = step
        timing = measure(steps, args.steps, args.rounds)
        base = timing[("ew", "-")]
        for method in picked:
            d, b, lo = (timing.get((method, e), float("nan")) / base for e in ("direct", "batched", "loop"))
            print(f"{arch:12s} {method:10s} {d:8.2f} {b:8.2f} {lo:8.2f} {picked[method]:>11s}")


def _engine_used(arch: str, data, method: str, batch: int) -> str:
    """The engine ``engine='auto'`` chooses for one step of ``method`` on ``arch``."""
    torch.manual_seed(0)
    model = pt.models.create(arch, tasks=data.tasks, input_shape=data.input_shape)
    balancer = pt.balancing.create(method, tasks=[t.name for t in data.tasks])
    x = data.train.inputs[:batch]
    y = {k: v[:batch] for k, v in data.train.targets.items()}
    losses = pt.tasks.compute_losses(data.tasks, model(x), y)
    balancer.backward(
        losses, list(model.shared_parameters()), model.task_parameter_groups(), representation=model.representation
    )
    return balancer.engine_used


if __name__ == "__main__":
    main()
