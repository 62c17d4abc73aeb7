"""``behaviour_sequences``: users with latent tastes, their event sequences, and several tasks that depend
on the same tastes — the setting of DUPN (Ni et al. 2018), generated so that everything is known.

Items have a category (``n_categories``), a price bucket (5) and a shop group (10; shops specialise: 80% of
an item's shop group is its category mod 10). Each user has an interest distribution θ_u ~ Dirichlet(0.3)
over categories, a preferred price bucket and a favourite shop group (80%: the group of the user's top
category; else random), so the held-out task shares structure with the main ones by construction.
A sequence has ``length`` events: category ~ θ_u, then an item of that category whose price is
near the user's preference and whose shop is the favourite one with probability 0.4 (else any); the
behaviour is click / cart / buy (60/30/10%, buys more likely for items at the preferred price) and the
time gap a bucket of 1-5. Each row also carries a query category (from θ_u half of the time, uniform
otherwise).

Tasks of the main data:
- ``ctr`` (binary): does the user click a result of the query? P = σ(K θ_u[query] − 1.5);
- ``price`` (5 classes): the user's preferred price bucket;
- ``category`` (``n_categories`` classes): the user's favourite category (argmax θ_u).

``held_out=True`` returns other users (``n_held_out`` rows for training, the same val/test sizes) with
one task, for the transfer experiment: a representation learned on the main tasks, frozen, against the
same network trained from scratch on few labels. ``held_task`` picks it:

- ``shop`` (10 classes): the favourite shop group, which is mostly the top category mod 10 — related to
  one main task (``category``) only;
- ``segment`` (10 classes): 2 (top category mod 5) + [preferred price bucket >= 3] — it needs what two
  main tasks (``category`` and ``price``) learn, so a representation from several tasks can serve it
  better than one from either task alone.
"""

from __future__ import annotations

import numpy as np
import torch

from polytask.data.base import MultiTaskData, Split
from polytask.data.registry import register
from polytask.errors import PolytaskError
from polytask.features import SequenceSpec
from polytask.tasks import Task

PRICES, SHOPS, BEHAVIOURS, GAPS = 5, 10, 3, 5
HELD_TASKS = ("shop", "segment")


def _generate(rng, n_users, n_items, n_categories, length, item_cat, item_price, item_shop):
    theta = rng.dirichlet(np.full(n_categories, 0.3), size=n_users)
    price_pref = rng.integers(0, PRICES, n_users)
    # the favourite shop group is mostly that of the user's top category (shops specialise in categories)
    shop_pref = np.where(rng.random(n_users) < 0.8, theta.argmax(axis=1) % SHOPS, rng.integers(0, SHOPS, n_users))
    # log-weight of each item for each user: near the preferred price, 4x for the favourite shop group
    log_w = -np.abs(item_price[None, :] - price_pref[:, None]) + np.log(4.0) * (
        item_shop[None, :] == shop_pref[:, None]
    )
    cum = theta.cumsum(axis=1)
    items = np.zeros((n_users, length), np.int64)
    for t in range(length):  # category ~ θ_u, then an item of that category ∝ weight (Gumbel-max)
        cats = (rng.random((n_users, 1)) > cum).sum(axis=1).clip(max=n_categories - 1)
        scores = log_w + rng.gumbel(size=log_w.shape)
        scores[item_cat[None, :] != cats[:, None]] = -np.inf
        items[:, t] = scores.argmax(axis=1)
    p_buy = np.where(item_price[items] == price_pref[:, None], 0.2, 0.07)
    u = rng.random(items.shape)
    behaviours = np.where(u < p_buy, 2, np.where(u < p_buy + 0.3, 1, 0))  # buy / cart / click
    gaps = rng.integers(0, GAPS, size=(n_users, length))
    from_taste = (rng.random((n_users, 1)) > cum).sum(axis=1).clip(max=n_categories - 1)
    query = np.where(rng.random(n_users) < 0.5, from_taste, rng.integers(0, n_categories, n_users))
    p_click = 1 / (1 + np.exp(-(theta[np.arange(n_users), query] * n_categories - 1.5)))
    click = (rng.random(n_users) < p_click).astype(np.float32)
    inputs = {
        "item": items + 1,
        "category": item_cat[items] + 1,
        "behaviour": behaviours + 1,
        "gap": gaps + 1,
        "query": query + 1,
    }
    return inputs, click, price_pref, shop_pref, theta.argmax(axis=1)


@register("behaviour_sequences", "user behaviour sequences with latent tastes; ctr, price, held-out shop (DUPN)")
def behaviour_sequences(
    n_train: int = 4000,
    n_val: int = 1000,
    n_test: int = 1000,
    n_items: int = 600,
    n_categories: int = 20,
    length: int = 30,
    held_out: bool = False,
    n_held_out: int = 300,
    held_task: str = "shop",
    seed: int = 0,
) -> MultiTaskData:
    if held_task not in HELD_TASKS:
        raise PolytaskError(f"behaviour_sequences: held_task must be one of {HELD_TASKS}, got {held_task!r}")
    if min(n_train, n_val, n_test, n_items, n_categories, length, n_held_out) < 1 or n_items < n_categories:
        raise PolytaskError("behaviour_sequences: sizes must be >= 1 and n_items >= n_categories")
    world = np.random.default_rng(seed)
    item_cat = np.concatenate([np.arange(n_categories), world.integers(0, n_categories, n_items - n_categories)])
    item_price = world.integers(0, PRICES, n_items)
    item_shop = np.where(world.random(n_items) < 0.8, item_cat % SHOPS, world.integers(0, SHOPS, n_items))
    rng = np.random.default_rng([seed, 1 if held_out else 0])  # held-out users are other users
    n_rows = (n_held_out if held_out else n_train) + n_val + n_test
    inputs, click, price, shop, top = _generate(
        rng, n_rows, n_items, n_categories, length, item_cat, item_price, item_shop
    )
    if held_out:
        label = shop if held_task == "shop" else 2 * (top % 5) + (price >= 3)
        tasks = [Task(held_task, "multiclass", 10, ("accuracy", "macro_f1"))]
        targets = {held_task: torch.tensor(label)}
        n_first = n_held_out
    else:
        tasks = [
            Task("ctr", "binary", 1, ("auc", "log_loss")),
            Task("price", "multiclass", PRICES, ("accuracy",)),
            Task("category", "multiclass", n_categories, ("accuracy",)),
        ]
        targets = {"ctr": torch.tensor(click), "price": torch.tensor(price), "category": torch.tensor(top)}
        n_first = n_train
    tensors = {k: torch.tensor(v, dtype=torch.long) for k, v in inputs.items()}

    def split(lo: int, hi: int) -> Split:
        return Split({k: v[lo:hi] for k, v in tensors.items()}, {k: v[lo:hi] for k, v in targets.items()})

    spec = SequenceSpec(n_items + 1, n_categories + 1, BEHAVIOURS + 1, GAPS + 1, length)
    return MultiTaskData(
        "behaviour_sequences" + ("_held_out" if held_out else ""),
        tasks,
        spec,
        split(0, n_first),
        split(n_first, n_first + n_val),
        split(n_first + n_val, n_rows),
        {"click_rate": float(click[:n_first].mean())},
    )
