"""MAXL (Liu, Davison & Johns 2019) against single-task learning, human-defined auxiliary labels and its
own generator frozen at initialisation, on ``digits_aux``, with paired verdicts.

    python examples/reproduce_maxl.py [--primary parity] [--seeds 20] [--epochs 100] [--workers N]
        [--generator-lr-scales 1,10,100] [--out runs/maxl]

Setting. The paper's hierarchy: a coarse primary task whose classes each split into ψ auxiliary classes
(CIFAR-100: 20 superclasses x 5). Default primary ``parity`` (even/odd; ψ = [5, 5], the digit is the
human auxiliary label) on 300 training images: a primary task whose classes are unions of unlike
shapes, which is where human auxiliary labels help first (``--primary pairs``, ψ = [2]*5, is the
easier alternative). Every variant trains the same MLP (64-128-128, primary and auxiliary heads, the
reference's focal loss, γ = 2) with SGD at lr 0.05 (the reference's 0.01 is tuned for CIFAR's ~500
steps per epoch; 300 images give 10 steps per epoch at batch 30) for ``--epochs`` epochs, the epoch
selected on the primary task's validation accuracy. Equal budgets: every variant makes the same network
steps; MAXL's generator makes one meta step per batch on top, as in the paper.

- ``single``: the primary head alone; ``human``: the true digit as auxiliary target;
- ``maxl xS``: labels from the generator (second-order meta step, entropy weight 0.2), its SGD learning
  rate S times the reference's ratio (a tenth of the network's: 0.005 here) for each S in
  ``--generator-lr-scales`` (a search, every setting reported);
- ``frozen``: the generator kept at its initialisation (generator lr 0): what MAXL's labels give without
  learning them.

Printed: primary test accuracy (mean ± std over seeds), how far each generator moved against what its
weight decay alone gives, how confident its labels are (mean top probability against 1/ψ for labels
spread evenly), and paired verdicts. The generated labels of the first seed (the largest scale) are
drawn to ``OUT/maxl_generated_labels.png``. Accuracy differences under ``MARGIN`` count as too small to
matter.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polytask as pt
from polytask.auxiliary import MAXL
from polytask.auxiliary.maxl import GENERATOR_LR_RATIO, save_label_grid
from polytask.reproduction import Stopwatch, check_seeds, mean_std, run_jobs, save_records, verdict

MARGIN = 0.005  # accuracy differences under half a point (~6 of the ~1,200 test images) are too small to matter


def train_one(variant: str, scale: float, seed: int, args: dict) -> dict:
    """One variant on seed ``seed``: test accuracy and (for MAXL) the generator's report."""
    data = pt.data.create("digits_aux", primary=args["primary"], n_train=args["n_train"], seed=seed)
    pt.utils.seed_everything(seed)
    aux = {"single": "none", "human": "human"}.get(variant, "maxl")
    generator_lr = 0.0 if variant == "frozen" else scale * GENERATOR_LR_RATIO * args["lr"]
    model = MAXL(data, aux=aux, lr=args["lr"], generator_lr=generator_lr)
    result = model.fit(epochs=args["epochs"], batch_size=30, seed=seed)
    record = {"accuracy": result.test_accuracy, "best_epoch": result.best_epoch}
    if aux == "maxl":
        record["generator"] = model.generator_report()
        if seed == 0 and args.get("figure"):
            save_label_grid(model, args["figure"])
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--primary", default="parity", choices=["parity", "pairs"])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--generator-lr-scales", default="1,10,100")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: every local core)")
    parser.add_argument("--out", default="runs/maxl")
    args = parser.parse_args()
    check_seeds(parser, args.seeds)
    clock = Stopwatch()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scales = [float(s) for s in args.generator_lr_scales.split(",")]
    variants = [("single", 0.0), ("human", 0.0), ("frozen", 0.0)] + [(f"maxl x{s:g}", s) for s in scales]
    settings = {"primary": args.primary, "n_train": args.n_train, "lr": args.lr, "epochs": args.epochs}
    jobs = []
    for seed in range(args.seeds):
        for name, scale in variants:
            figure = str(out / "maxl_generated_labels.png") if scale == max(scales) else None
            jobs.append((name, scale, seed, {**settings, "figure": figure}))
    records = run_jobs(train_one, jobs, args.workers, desc="maxl")
    print(f"every run's numbers: {save_records(out, jobs, records)}")
    runs = {name: [r for (v, *_), r in zip(jobs, records) if v == name] for name, _ in variants}

    print(f"\n{args.primary} primary task, {args.n_train} training images, {args.seeds} seeds, {args.epochs} epochs")
    print(f"(every variant: the same {args.epochs} epochs of network steps; the epoch selected on validation)\n")
    print("| variant | primary test accuracy | generator drift | weight decay alone | top prob (even: 1/ψ) |")
    print("|---|---|---|---|---|")
    for name, _ in variants:
        cells = [mean_std(r["accuracy"] for r in runs[name])]
        if "generator" in runs[name][0]:
            reports = [r["generator"] for r in runs[name]]
            cells += [
                mean_std(g["drift"] for g in reports),
                mean_std(g["weight_decay_drift"] for g in reports),
                f"{mean_std(g['top_prob'] for g in reports)} ({reports[0]['uniform_top_prob']:.3f})",
            ]
        else:
            cells += ["", "", ""]
        print(f"| {name} | " + " | ".join(cells) + " |")

    def accuracy(name):
        return [r["accuracy"] for r in runs[name]]

    print(f"\nPaired verdicts (differences per seed, 95% t intervals; {args.seeds} seeds):")
    verdict("human auxiliary labels help", "human", accuracy("human"), "single", accuracy("single"), True, MARGIN)
    for name, _ in variants[3:]:
        verdict("MAXL above single-task", name, accuracy(name), "single", accuracy("single"), True, MARGIN)
        verdict("learning the labels matters (MAXL above its frozen generator)", name, accuracy(name), "frozen",
                accuracy("frozen"), True, MARGIN)  # fmt: skip
        verdict("MAXL competitive with human labels (within ±0.01)", name, accuracy(name), "human",
                accuracy("human"), True, margin=0.01, equivalent=True)  # fmt: skip
    print(f"\ngenerated labels (first seed, scale x{max(scales):g}): {out / 'maxl_generated_labels.png'}")
    print(f"wall time {clock}")


if __name__ == "__main__":
    main()
