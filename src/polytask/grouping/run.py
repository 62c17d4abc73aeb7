"""``polytask group``: which tasks to train together under an inference budget.

Per seed:

- **pairs** (Standley et al. 2020): train every single-task and every pair network, estimate larger
  groups from the pairs (higher-order approximation), search the best set of networks within the budget
  on validation losses, then train the chosen networks and measure their test loss;
- **tag** (Fifty et al. 2021): one multi-task run recording lookahead affinities, the same budgeted search
  over the affinity scores, then the chosen networks trained and measured alike.

Network cost: 1 per network (every candidate has the architecture's full size). The measured loss of a
set of networks is Σ_t min over the networks serving t of t's test loss (as the search scores it). The
grouping a set implies (``groups``) puts each task with the network that serves it best; ``networks``
lists the chosen networks themselves (they may overlap).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from polytask import balancing, models
from polytask.config import GroupConfig, resolve_training
from polytask.data import MultiTaskData
from polytask.data import create as create_dataset
from polytask.data.base import BatchLoader
from polytask.data.task_groups import pair_margin
from polytask.grouping.search import (
    Candidate,
    affinity_candidates,
    best_networks,
    higher_order_estimates,
    served_partition,
)
from polytask.grouping.tag import adam_scales, lookahead_affinity
from polytask.tasks import compute_losses
from polytask.training import Trainer
from polytask.training.evaluation import evaluate, move_batch
from polytask.utils import seed_everything, write_json


def train_group(
    data: MultiTaskData, group: Sequence[str], config: GroupConfig, seed: int
) -> dict[str, dict[str, float]]:
    """Train a network on ``group`` (``config.repeats`` initialisations); its per-task validation and test
    losses at the selected epoch, averaged over the initialisations."""
    runs = [_train_once(data, group, config, seed + 7919 * r) for r in range(config.repeats)]
    return {split: {t: sum(run[split][t] for run in runs) / len(runs) for t in group} for split in ("val", "test")}


def _train_once(data: MultiTaskData, group: Sequence[str], config: GroupConfig, seed: int) -> dict:
    sub = data.select(list(group))
    seed_everything(seed)
    model = models.create(config.arch, tasks=sub.tasks, input_shape=sub.input_shape, **config.arch_options)
    balancer = balancing.create("ew", tasks=list(group))
    trainer = Trainer(
        model,
        sub.tasks,
        balancer,
        sub.train,
        sub.val,
        sub.test,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        device=config.device,
        progress=False,
        seed=seed,
    )
    trainer.fit()
    val = evaluate(model, sub.tasks, BatchLoader(sub.val, 1024), trainer.device).losses
    test = evaluate(model, sub.tasks, BatchLoader(sub.test, 1024), trainer.device).losses
    return {"val": val, "test": test}


def tag_affinities(data: MultiTaskData, config: GroupConfig, seed: int) -> torch.Tensor:
    """One equal-weighting run on all tasks; (K, K) lookahead affinities averaged over the measured steps."""
    seed_everything(seed)
    tasks = data.tasks
    model = models.create(config.arch, tasks=tasks, input_shape=data.input_shape, **config.arch_options)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    shared = list(model.shared_parameters())
    total = torch.zeros(len(tasks), len(tasks), dtype=torch.float64)
    count, step = 0, 0
    device = torch.device("cpu") if config.device in ("auto", "cpu") else torch.device(config.device)
    model.to(device).train()
    for epoch in range(config.epochs):
        for x, targets in BatchLoader(data.train, config.batch_size, shuffle=True, seed=seed + epoch):
            x, targets = move_batch(x, targets, device)
            if step % config.tag_every == 0:
                scale = adam_scales(optimizer) if config.tag_lookahead == "adam" else None
                total += lookahead_affinity(model, tasks, x, targets, config.lr, shared, scale)
                count += 1
            losses = compute_losses(tasks, model(x), targets)
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
            step += 1
    return total / max(count, 1)


def _measure(data, chosen: list[Candidate], config, seed, cache: dict) -> float:
    """Train (or reuse) each chosen network; Σ_t min over the networks serving t of t's test loss."""
    best: dict[str, float] = {}
    for c in chosen:
        key = frozenset(c.tasks)
        if key not in cache:
            cache[key] = train_group(data, sorted(c.tasks, key=[t.name for t in data.tasks].index), config, seed)
        for t in c.tasks:
            best[t] = min(best.get(t, float("inf")), cache[key]["test"][t])
    return sum(best.values())


def _groups(chosen: list[Candidate], order: list[str]) -> list[list[str]]:
    return sorted([sorted(c.tasks, key=order.index) for c in chosen], key=lambda g: order.index(g[0]))


def run_seed(
    config: GroupConfig, seed: int, log: Callable[[str], None] = print, progress: bool = True
) -> dict[str, Any]:
    """Both methods on one seed's dataset instance; a JSON-able record."""
    options = dict(config.dataset_options)
    if "seed" not in options and "seed" in _dataset_options(config.dataset):
        options["seed"] = seed  # a new instance of a generated dataset per seed
    data = create_dataset(config.dataset, **options)
    if config.tasks:
        data = data.select(config.tasks)
    names = [t.name for t in data.tasks]
    record: dict[str, Any] = {"seed": seed, "tasks": names, "truth": data.info.get("groups")}
    cache: dict[frozenset, dict] = {}
    if "pairs" in config.methods:
        start = time.perf_counter()
        groups = [(t,) for t in names] + list(itertools.combinations(names, 2))
        for g in tqdm(groups, desc=f"seed {seed}: singles and pairs", disable=not progress, leave=False):
            cache[frozenset(g)] = train_group(data, list(g), config, seed)
        seconds = time.perf_counter() - start
        singles = {t: cache[frozenset([t])]["val"][t] for t in names}
        pairs = {frozenset(p): cache[frozenset(p)]["val"] for p in itertools.combinations(names, 2)}
        chosen, predicted = best_networks(higher_order_estimates(singles, pairs, names), names, config.budget)
        record["pairs"] = {
            "networks": _groups(chosen, names),
            "groups": served_partition(chosen, names),
            "predicted_val_loss": predicted,
            "measured_test_loss": _measure(data, chosen, config, seed, cache),
            "seconds": seconds,
            "single_val": singles,
            "pair_val": {"+".join(sorted(p, key=names.index)): v for p, v in pairs.items()},
        }
    if "tag" in config.methods:
        start = time.perf_counter()
        z = tag_affinities(data, config, seed)
        seconds = time.perf_counter() - start
        affinity = {(a, b): float(z[i, j]) for i, a in enumerate(names) for j, b in enumerate(names)}
        candidates = affinity_candidates(affinity, names, allow_singletons=config.tag_singletons)
        chosen, predicted = best_networks(candidates, names, config.budget)
        record["tag"] = {
            "networks": _groups(chosen, names),
            "groups": served_partition(chosen, names),
            "predicted_affinity": -predicted,
            "measured_test_loss": _measure(data, chosen, config, seed, cache),
            "seconds": seconds,
            "affinity": z.tolist(),
        }
    if record["truth"] is not None:
        truth = sorted(sorted(g, key=names.index) for g in record["truth"])
        if "pairs" in record:  # the instance counts as ground truth only if its pair table shows the groups
            test_single = {t: cache[frozenset([t])]["test"][t] for t in names}
            test_pairs = {frozenset(p): cache[frozenset(p)]["test"] for p in itertools.combinations(names, 2)}
            record["truth_margin_ok"] = pair_margin(test_single, test_pairs, record["truth"], config.margin)
            record["pairs"]["pair_to_single_test"] = {
                "+".join(sorted(p, key=names.index)): {t: v[t] / test_single[t] for t in p}
                for p, v in test_pairs.items()
            }
        for method in ("pairs", "tag"):
            if method in record:
                record[method]["recovered"] = sorted(record[method]["groups"]) == truth
    return record


def _dataset_options(name: str) -> list[str]:
    from polytask.data import DATASETS

    return DATASETS.options(name)


def run_grouping(config: GroupConfig, log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """Every seed; writes ``grouping.json`` and the affinity heat-maps into ``config.out``."""
    from polytask.runs import check_config_options
    from polytask.utils import check_writable

    config = check_config_options(config)  # bad options fail before any data is built
    out = check_writable(Path(config.out or "runs/group"), "the output directory (--out)")
    data = create_dataset(config.dataset, **config.dataset_options)
    config = _with_recommendations(config, data)
    records = []
    for seed in tqdm(config.seeds, desc="seeds", disable=not progress):
        records.append(run_seed(config, seed, log, progress))
        write_json(out / "grouping.json", {"config": config.__dict__, "seeds": records})
    from polytask.grouping.report import grouping_summary, heatmaps

    heatmaps(records[0], out)
    summary = grouping_summary(records)
    (out / "grouping.md").write_text(summary)
    return {"config": config.__dict__, "seeds": records, "summary": summary, "out": str(out)}


def _with_recommendations(config: GroupConfig, data: MultiTaskData) -> GroupConfig:
    """Fill unset training settings and the architecture from the dataset's recommendations."""
    import dataclasses

    config = resolve_training(config, data.info.get("train_defaults"))
    if config.arch is None:
        arch, options = next(iter(data.info.get("recommended_arch", {"hps_mlp": {}}).items()))
        config = dataclasses.replace(config, arch=arch, arch_options={**options, **config.arch_options})
    return config
