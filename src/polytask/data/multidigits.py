"""``multidigits``: a MultiMNIST-style set from the real 8x8 handwritten digits bundled with scikit-learn.

Two digits are overlaid (pixel-wise max) on a ``canvas`` x ``canvas`` image: the *left* one shifted by up
to ``max_shift`` pixels from the top-left corner, the *right* one by up to ``max_shift`` from the
bottom-right corner (as in MultiMNIST, Sabour et al. 2017, at 8x8 scale). Tasks:

- ``left``: the left digit, 10 classes (cross-entropy; accuracy, macro-F1);
- ``right``: the right digit, 10 classes;
- ``sum``: left + right as a regression (MSE, whose scale, up to ~80 at start, differs from the
  cross-entropies' ~2.3 on purpose; MAE, RMSE and the share of predictions that round to the sum).

The 1,797 source images are split first (``split_fractions``), so no source image appears in two of
train/val/test; each split's samples pair images from its own pool. Deterministic per ``seed``; built in
well under a second and cached under :func:`~polytask.data.base.cache_dir`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from polytask.data.base import MultiTaskData, Split, cached_arrays
from polytask.data.registry import register
from polytask.errors import PolytaskError
from polytask.tasks import Task

DIGIT = 8


def multidigits_tasks() -> list[Task]:
    return [
        Task("left", "multiclass", 10, ("accuracy", "macro_f1")),
        Task("right", "multiclass", 10, ("accuracy", "macro_f1")),
        Task("sum", "regression", 1, ("mae", "rmse", "rounded_accuracy"), kpi="rounded_accuracy"),
    ]


def _compose(
    images: np.ndarray,
    labels: np.ndarray,
    pool: np.ndarray,
    n: int,
    canvas: int,
    max_shift: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    left_idx = rng.choice(pool, n)
    right_idx = rng.choice(pool, n)
    lo = rng.integers(0, max_shift + 1, size=(n, 2))
    ro = canvas - DIGIT - rng.integers(0, max_shift + 1, size=(n, 2))
    x = np.zeros((n, canvas, canvas), dtype=np.float32)
    for i in range(n):
        (ly, lx), (ry, rx) = lo[i], ro[i]
        x[i, ly : ly + DIGIT, lx : lx + DIGIT] = images[left_idx[i]]
        region = x[i, ry : ry + DIGIT, rx : rx + DIGIT]
        np.maximum(region, images[right_idx[i]], out=region)
    return x, labels[left_idx], labels[right_idx]


def build_arrays(
    n_train: int, n_val: int, n_test: int, canvas: int, max_shift: int, seed: int, split_fractions: Sequence[float]
) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    cuts = np.cumsum([round(f * len(images)) for f in split_fractions[:2]])
    pools = np.split(order, cuts)
    out: dict[str, np.ndarray] = {}
    for name, pool, n in zip(("train", "val", "test"), pools, (n_train, n_val, n_test)):
        x, left, right = _compose(images, labels, pool, n, canvas, max_shift, rng)
        out.update({f"{name}_x": x, f"{name}_left": left, f"{name}_right": right, f"{name}_pool": pool})
    return out


def _load_or_build(config: dict) -> dict[str, np.ndarray]:
    return cached_arrays("multidigits", config, build_arrays)


@register("multidigits", "Two overlaid sklearn 8x8 digits: left/right class (10-way) and their sum (regression)")
def multidigits(
    n_train: int = 3000,
    n_val: int = 1000,
    n_test: int = 1000,
    canvas: int = 16,
    max_shift: int = 3,
    seed: int = 0,
    split_fractions: Sequence[float] = (0.6, 0.2, 0.2),
) -> MultiTaskData:
    if min(n_train, n_val, n_test) < 1:
        raise PolytaskError("multidigits: n_train, n_val and n_test must be >= 1")
    if not 0 <= max_shift <= canvas - DIGIT:
        raise PolytaskError(f"multidigits: need 0 <= max_shift <= canvas - {DIGIT}, got {max_shift}, canvas {canvas}")
    if len(split_fractions) != 3 or abs(sum(split_fractions) - 1) > 1e-6 or min(split_fractions) <= 0:
        raise PolytaskError(
            f"multidigits: split_fractions must be 3 positive numbers summing to 1, got {split_fractions}"
        )
    config = dict(
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
        canvas=canvas,
        max_shift=max_shift,
        seed=seed,
        split_fractions=[float(f) for f in split_fractions],
    )
    arrays = _load_or_build(config)

    def split(name: str) -> Split:
        left = torch.from_numpy(arrays[f"{name}_left"])
        right = torch.from_numpy(arrays[f"{name}_right"])
        x = torch.from_numpy(arrays[f"{name}_x"]).unsqueeze(1)
        return Split(x, {"left": left, "right": right, "sum": (left + right).float()})

    info = {"config": config, "pools": {s: arrays[f"{s}_pool"].tolist() for s in ("train", "val", "test")}}
    return MultiTaskData(
        "multidigits", multidigits_tasks(), (1, canvas, canvas), split("train"), split("val"), split("test"), info
    )
