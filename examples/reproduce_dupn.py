"""DUPN's transfer claim (Ni et al. 2018, §5.4): a user representation learned on several tasks, frozen,
serves a new task better than the same network trained from scratch on that task's few labels, and
better than a representation learned on any one of the tasks; with paired verdicts.

    python examples/reproduce_dupn.py [--seeds 8] [--held-out 300] [--held-task segment] [--workers N]

1. Encoders: DUPN trained on ``behaviour_sequences``' main tasks together (ctr, price, category; equal
   weighting) and, for the comparison the paper's claim implies, on each main task alone.
2. Held-out task (other users, ``--held-out`` labelled users): ``segment`` by default, which needs both
   the category and the price preference (see the dataset's docstring; ``--held-task shop`` is the
   older task that depends on the category alone). Each encoder is frozen and only a new head is
   trained; "scratch" trains the whole DUPN on the held-out labels.
3. Budgets: every training runs until ``--patience`` epochs bring no better validation score (encoders at
   most ``--max-epochs``, heads and scratch at most ``--max-head-epochs``), the best epoch is tested; the
   budget lines print what each got.
"""

from __future__ import annotations

import argparse

import polytask as pt
from polytask.reproduction import Stopwatch, budget_line, check_seeds, mean_std, run_jobs, save_records, verdict

ENCODERS = ("multi-task", "ctr", "price", "category")
MARGIN = 0.005  # accuracy differences under half a point are too small to matter


def trainer(model, data, tasks, max_epochs: int, patience: int, seed: int) -> pt.Trainer:
    balancer = pt.balancing.create("ew", tasks=[t.name for t in tasks])
    return pt.Trainer(
        model, tasks, balancer, data.train, data.val, data.test,
        epochs=max_epochs, patience=patience, batch_size=64, lr=2e-3, device="cpu", progress=False, seed=seed,
    )  # fmt: skip


def budget(result) -> dict:
    extra = result.extra
    return {"best_epoch": result.best_epoch, "epochs_trained": extra["epochs_trained"], "steps": extra["steps"]}


def train_one(encoder: str, seed: int, args: dict) -> dict:
    """Train an encoder on the main tasks (or none, for "scratch"), then the held-out task on top of it."""
    main = pt.data.create("behaviour_sequences", seed=seed)
    held = pt.data.create(
        "behaviour_sequences", held_out=True, n_held_out=args["held_out"], held_task=args["held_task"], seed=seed
    )
    record: dict = {}
    pt.seed_everything(seed)
    model = pt.models.create("dupn", tasks=held.tasks, input_shape=held.input_shape)
    if encoder != "scratch":
        tasks = main.tasks if encoder == "multi-task" else [main.task(encoder)]
        pt.seed_everything(seed)
        source = pt.models.create("dupn", tasks=tasks, input_shape=main.input_shape)
        result = trainer(source, main, tasks, args["max_epochs"], args["patience"], seed).fit()
        record["main_scores"] = result.test_scores
        record["encoder_budget"] = budget(result)
        model.load_shared(source.shared_state_dict(), freeze=True)
    result = trainer(model, held, held.tasks, args["max_head_epochs"], args["patience"], seed).fit()
    record["accuracy"] = result.test_scores[args["held_task"]]["accuracy"]
    record["head_budget"] = budget(result)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--held-out", type=int, default=300)
    parser.add_argument("--held-task", default="segment", choices=["segment", "shop"])
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--max-head-epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: every local core)")
    parser.add_argument("--out", default="runs/dupn", help="where records.json (every run's numbers) goes")
    args = parser.parse_args()
    check_seeds(parser, args.seeds)
    clock = Stopwatch()
    settings = {k: getattr(args, k) for k in ("held_out", "held_task", "max_epochs", "max_head_epochs", "patience")}
    variants = (*ENCODERS, "scratch")
    jobs = [(v, seed, settings) for seed in range(args.seeds) for v in variants]
    records = run_jobs(train_one, jobs, args.workers, desc="dupn")
    print(f"every run's numbers: {save_records(args.out, jobs, records)}")
    runs = {v: [r for (name, *_), r in zip(jobs, records) if name == v] for v in variants}

    print(f"\nheld-out task {args.held_task!r}, {args.held_out} labelled users, {args.seeds} seeds (chance 0.10):\n")
    print("| representation | held-out test accuracy |\n|---|---|")
    for v in variants:
        label = "trained from scratch" if v == "scratch" else f"frozen, learned on {v}"
        print(f"| {label} | {mean_std(r['accuracy'] for r in runs[v])} |")
    main_scores = [r["main_scores"] for r in runs["multi-task"]]
    print(
        "\nmulti-task encoder on its own tasks (test): "
        f"ctr AUC {mean_std(s['ctr']['auc'] for s in main_scores)}, "
        f"price acc {mean_std(s['price']['accuracy'] for s in main_scores)}, "
        f"category acc {mean_std(s['category']['accuracy'] for s in main_scores)}"
    )
    print(f"\nBudgets (until {args.patience} epochs bring no better validation score; best epoch tested):")
    for v in ENCODERS:
        print("  encoder " + budget_line(v, [r["encoder_budget"] for r in runs[v]]))
    for v in variants:
        print("  held-out head " + budget_line(v, [r["head_budget"] for r in runs[v]]))

    def accuracy(v):
        return [r["accuracy"] for r in runs[v]]

    print(f"\nPaired verdicts (differences per seed, 95% t intervals; {args.seeds} seeds):")
    verdict("a frozen multi-task representation beats training from scratch", "multi-task",
            accuracy("multi-task"), "scratch", accuracy("scratch"), True, MARGIN)  # fmt: skip
    for v in ENCODERS[1:]:
        verdict(f"the multi-task representation is more general than one learned on {v} alone", "multi-task",
                accuracy("multi-task"), v, accuracy(v), True, MARGIN)  # fmt: skip
    print(f"\nwall time {clock}")


if __name__ == "__main__":
    main()
