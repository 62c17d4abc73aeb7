"""Per-epoch time of polytask's Trainer against a plain hand-written PyTorch loop, same model, data,
batches and optimizer, measured in one run (interleaved repeats, median).

The plain loop does what a user would write: forward, summed losses, backward, Adam step, and a
validation pass computing accuracy/MAE each epoch. The Trainer additionally validates every task's
full metric set, logs JSONL/CSV, selects the best epoch and writes an atomic checkpoint every epoch.

    python benchmarks/trainer_overhead.py [--epochs 3] [--repeats 10] [--arch hps_cnn] [--threads N]

Each repeat runs the plain loop and the Trainer back to back (alternating which goes first) and records
the ratio of that pair, so slow drifts of a shared machine cancel; the headline is the median of those
paired ratios, with the ratio of medians and of minima beside it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

import polytask as pt


def build(data, arch, seed=0):
    pt.seed_everything(seed)
    model = pt.models.create(arch, tasks=data.tasks, input_shape=data.input_shape)
    return model, torch.optim.Adam(model.parameters(), lr=2e-3)


def plain_loop(data, arch, epochs, batch_size):
    model, opt = build(data, arch)
    loader = pt.data.BatchLoader(data.train, batch_size, shuffle=True)
    start = time.perf_counter()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        model.train()
        for x, y in loader:
            out = model(x)
            loss = (
                F.cross_entropy(out["left"], y["left"])
                + F.cross_entropy(out["right"], y["right"])
                + F.mse_loss(out["sum"][:, 0], y["sum"])
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            correct = err = 0.0
            for x, y in pt.data.BatchLoader(data.val, 1024):
                out = model(x)
                correct += float((out["left"].argmax(1) == y["left"]).sum())
                err += float((out["sum"][:, 0] - y["sum"]).abs().sum())
    return (time.perf_counter() - start) / epochs


def trainer(data, arch, epochs, batch_size):
    model, opt = build(data, arch)
    balancer = pt.balancing.create("ew", tasks=[t.name for t in data.tasks])
    with tempfile.TemporaryDirectory() as out:
        t = pt.Trainer(
            model,
            data.tasks,
            balancer,
            data.train,
            data.val,
            epochs=epochs,
            batch_size=batch_size,
            optimizer=opt,
            device="cpu",
            out_dir=out,
            progress=True,
            seed=0,
        )
        start = time.perf_counter()
        t.fit()
        return (time.perf_counter() - start) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--arch", default="hps_cnn")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = pt.data.create("multidigits")
    plain_loop(data, args.arch, 1, args.batch_size)  # warm-up (allocator, kernels)
    trainer(data, args.arch, 1, args.batch_size)
    plain, ours = [], []
    for r in range(args.repeats):  # interleave, alternating order, so drift hits both alike
        pair = [("plain", plain_loop), ("trainer", trainer)]
        for name, fn in pair if r % 2 == 0 else pair[::-1]:
            (plain if name == "plain" else ours).append(fn(data, args.arch, args.epochs, args.batch_size))
    p, t = statistics.median(plain), statistics.median(ours)
    paired = statistics.median(b / a for a, b in zip(plain, ours))
    print(
        f"model {args.arch}, {len(data.train)} training samples, batch {args.batch_size}, "
        f"{args.epochs} epochs x {args.repeats} repeats, torch threads {torch.get_num_threads()}"
    )
    print(f"plain loop : {p * 1000:8.1f} ms/epoch (median; runs: {', '.join(f'{v * 1000:.0f}' for v in plain)})")
    print(f"Trainer    : {t * 1000:8.1f} ms/epoch (median; runs: {', '.join(f'{v * 1000:.0f}' for v in ours)})")
    print(
        f"ratio Trainer / plain: median of paired ratios {paired:.3f} (target <= 1.05); "
        f"ratio of medians {t / p:.3f}; ratio of minima {min(ours) / min(plain):.3f}"
    )


if __name__ == "__main__":
    main()
