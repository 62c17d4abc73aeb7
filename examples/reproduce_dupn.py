"""DUPN's transfer claim (Ni et al. 2018): a user representation learned on several tasks, frozen, serves
a new task better than the same network trained from scratch on that task's few labels.

    python examples/reproduce_dupn.py [--seeds 3] [--epochs 15] [--held-out 300]

1. Train DUPN on ``behaviour_sequences``' main tasks (ctr, price, category) with equal weighting.
2. On other users, the held-out task ``shop`` (favourite of 10 shop groups) with ``--held-out`` labelled
   users: (a) the trained encoder frozen, only a new head trained; (b) the whole DUPN trained from scratch.
3. Print test accuracy of both, mean ± std over seeds, and the main tasks' test scores.
"""

from __future__ import annotations

import argparse
import statistics

import polytask as pt

HEAD_EPOCHS = 40


def trainer(model, data, epochs: int, seed: int) -> pt.Trainer:
    balancer = pt.balancing.create("ew", tasks=[t.name for t in data.tasks])
    return pt.Trainer(
        model,
        data.tasks,
        balancer,
        data.train,
        data.val,
        data.test,
        epochs=epochs,
        batch_size=64,
        lr=2e-3,
        device="cpu",
        progress=False,
        seed=seed,
    )


def run_seed(seed: int, epochs: int, n_held_out: int) -> dict[str, float]:
    main = pt.data.create("behaviour_sequences", seed=seed)
    held = pt.data.create("behaviour_sequences", held_out=True, n_held_out=n_held_out, seed=seed)
    pt.seed_everything(seed)
    dupn = pt.models.create("dupn", tasks=main.tasks, input_shape=main.input_shape)
    main_result = trainer(dupn, main, epochs, seed).fit()

    pt.seed_everything(seed)
    frozen = pt.models.create("dupn", tasks=held.tasks, input_shape=held.input_shape)
    frozen.load_shared(dupn.shared_state_dict(), freeze=True)
    transfer = trainer(frozen, held, HEAD_EPOCHS, seed).fit()

    pt.seed_everything(seed)
    scratch = pt.models.create("dupn", tasks=held.tasks, input_shape=held.input_shape)
    from_scratch = trainer(scratch, held, HEAD_EPOCHS, seed).fit()
    return {
        "main_ctr_auc": main_result.test_scores["ctr"]["auc"],
        "main_price_acc": main_result.test_scores["price"]["accuracy"],
        "main_category_acc": main_result.test_scores["category"]["accuracy"],
        "frozen_shop_acc": transfer.test_scores["shop"]["accuracy"],
        "scratch_shop_acc": from_scratch.test_scores["shop"]["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--held-out", type=int, default=300)
    args = parser.parse_args()
    runs = []
    for seed in range(args.seeds):
        runs.append(run_seed(seed, args.epochs, args.held_out))
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in runs[-1].items()), flush=True)
    print(f"\nbehaviour_sequences, mean ± std over {args.seeds} seeds ({args.held_out} labelled held-out users):\n")
    print("| measure | value |\n|---|---|")
    for key in runs[0]:
        v = [r[key] for r in runs]
        print(f"| {key} | {statistics.mean(v):.4f} ± {statistics.stdev(v) if len(v) > 1 else 0:.4f} |")
    wins = sum(r["frozen_shop_acc"] > r["scratch_shop_acc"] for r in runs)
    print(
        f"\nfrozen DUPN representation beats training from scratch on the held-out task in {wins}/{len(runs)} seeds "
        f"(chance accuracy 0.10)"
    )


if __name__ == "__main__":
    main()
