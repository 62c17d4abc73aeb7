"""``task_groups``: regression tasks whose grouping is known by construction, for task-grouping methods.

x ~ N(0, I_d). G groups of P tasks: unit directions u_1..u_G are orthonormal (QR of a Gaussian matrix),
and task p of group g is y = s · u_gᵀx + σ ε with its own scale s = a_g (1 + 0.1 ξ) (a_g ~ U(1, 2),
ξ, ε ~ N(0, 1)). Tasks of one group need the same feature; tasks of different groups need orthogonal
ones. Plus one ``noise`` task (pure noise, unrelated to x), whose best group is itself. Every task is
standardised with its training mean and std; MSE.

With a network that has room for one direction (``hps_mlp`` with a linear trunk of width 1, the
recommended architecture), tasks of one group share their training signal (a pair sees its feature's
noise averaged over two labels) while tasks of different groups compete for the one feature, and the
noise task only pulls the feature astray, so the best set of G + 1 networks is the true grouping.
``info["groups"]`` holds it; :func:`pair_margin` checks the margin
on a measured pair-vs-single table before a seed's instance counts as ground truth.
"""

from __future__ import annotations

import numpy as np
import torch

from polytask.data.base import MultiTaskData, Split
from polytask.data.registry import register
from polytask.errors import PolytaskError
from polytask.tasks import Task


def task_names(groups: int, per_group: int, noise_task: bool) -> list[list[str]]:
    """The true grouping: ``[["g0_0", "g0_1"], ..., ["noise"]]``."""
    names = [[f"g{g}_{p}" for p in range(per_group)] for g in range(groups)]
    return names + ([["noise"]] if noise_task else [])


@register("task_groups", "Regression tasks with a known grouping (shared feature per group) and a noise task")
def task_groups(
    groups: int = 3,
    per_group: int = 2,
    dim: int = 16,
    noise: float = 0.5,
    noise_task: bool = True,
    n_train: int = 60,
    n_val: int = 200,
    n_test: int = 2000,
    seed: int = 0,
) -> MultiTaskData:
    if groups < 1 or per_group < 1 or dim < groups:
        raise PolytaskError(
            f"task_groups: needs groups >= 1, per_group >= 1 and dim >= groups (got {groups}, {per_group}, {dim})"
        )
    if min(n_train, n_val, n_test) < 2 or noise < 0:
        raise PolytaskError("task_groups: at least 2 samples per split and noise >= 0")
    rng = np.random.default_rng(seed)
    directions, _ = np.linalg.qr(rng.normal(size=(dim, groups)))
    n = n_train + n_val + n_test
    x = rng.normal(size=(n, dim))
    grouping = task_names(groups, per_group, noise_task)
    columns = []
    for g in range(groups):
        a = rng.uniform(1.0, 2.0)
        for _ in range(per_group):
            s = a * (1 + 0.1 * rng.normal())
            columns.append(s * (x @ directions[:, g]) + noise * rng.normal(size=n))
    if noise_task:
        columns.append(rng.normal(size=n))
    y = np.stack(columns, axis=1)
    y = (y - y[:n_train].mean(0)) / y[:n_train].std(0)
    names = [t for group in grouping for t in group]
    tasks = [Task(name, "regression", 1, ("mse",)) for name in names]

    def split(lo: int, hi: int) -> Split:
        xs = torch.tensor(x[lo:hi], dtype=torch.float32)
        return Split(xs, {t: torch.tensor(y[lo:hi, k], dtype=torch.float32) for k, t in enumerate(names)})

    info = {
        "groups": grouping,
        "recommended_arch": {"hps_mlp": {"hidden": [1], "head_hidden": 0, "activation": "linear"}},
        "train_defaults": {"epochs": 300, "batch_size": n_train, "lr": 1e-2},
    }
    return MultiTaskData(
        "task_groups",
        tasks,
        (dim,),
        split(0, n_train),
        split(n_train, n_train + n_val),
        split(n_train + n_val, n),
        info,
    )


def pair_margin(
    single: dict[str, float], pairs: dict[frozenset, dict[str, float]], groups: list[list[str]], delta: float
) -> bool:
    """The ground-truth check of a measured instance: within a group every L_pair/L_single < 1 − δ, and
    every pair across two groups of several tasks has a task with L_pair/L_single > 1 + δ (sharing hurts
    it). Pairs with a singleton group (the noise task) are not checked: nothing predicts them."""
    group_of = {t: i for i, g in enumerate(groups) for t in g}
    size = {i: len(g) for i, g in enumerate(groups)}
    for pair, losses in pairs.items():
        a, b = sorted(pair)
        if size[group_of[a]] == 1 or size[group_of[b]] == 1:
            continue
        ratios = [losses[t] / single[t] for t in (a, b)]
        if group_of[a] == group_of[b]:
            if max(ratios) >= 1 - delta:
                return False
        elif max(ratios) <= 1 + delta:
            return False
    return True
