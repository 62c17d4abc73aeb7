"""``mmoe_synthetic``: the two-task regression data of the MMoE paper (Ma et al. 2018, §3.2) with a
controllable task correlation p.

1. orthogonal unit vectors u_1, u_2 ∈ R^d; w_1 = c u_1, w_2 = c (p u_1 + √(1 − p²) u_2);
2. x ~ N(0, I_d);
3. y_k = w_kᵀx + Σ_{i=1..m} sin(α_i w_kᵀx + β_i) + ε_k, ε_k ~ N(0, 0.01).

p = cos(w_1, w_2) is the paper's "task correlation". The paper gives no c, m, α, β or sample counts; we
use c = 1, m = 10 (as PLE §5.2.1), α_i, β_i ~ N(0, 1) drawn once from ``structure_seed`` and **fixed
across seeds** (redrawing them per seed adds a spread that hides the differences between models), and
standardise each label with its training mean and std. The label correlation is far below p (the sine
terms dominate); it is stored in ``data.info["label_correlation"]``. Tasks ``y1``, ``y2`` (MSE).
"""

from __future__ import annotations

import numpy as np
import torch

from polytask.data.base import MultiTaskData, Split
from polytask.data.registry import register
from polytask.errors import PolytaskError
from polytask.tasks import Task


def mmoe_labels(x: np.ndarray, w: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """w ᵀx + Σ_i sin(α_i wᵀx + β_i) for each row of x (no noise)."""
    s = x @ w
    return s + np.sin(np.outer(s, alpha) + beta).sum(axis=1)


@register("mmoe_synthetic", "MMoE paper's synthetic regression pair with task correlation p (Ma et al. 2018)")
def mmoe_synthetic(
    p: float = 0.5,
    dim: int = 100,
    c: float = 1.0,
    m: int = 10,
    noise: float = 0.1,
    n_train: int = 10_000,
    n_val: int = 2_000,
    n_test: int = 2_000,
    seed: int = 0,
    structure_seed: int = 12345,
) -> MultiTaskData:
    if not -1.0 <= p <= 1.0:
        raise PolytaskError(f"mmoe_synthetic: correlation p must be in [-1, 1], got {p}")
    if dim < 2 or m < 0 or min(n_train, n_val, n_test) < 1:
        raise PolytaskError("mmoe_synthetic: needs dim >= 2, m >= 0 and at least one sample per split")
    structure = np.random.default_rng(structure_seed)
    alpha, beta = structure.normal(size=m), structure.normal(size=m)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, 2)))  # two orthonormal directions
    u1, u2 = q[:, 0], q[:, 1]
    w1 = c * u1
    w2 = c * (p * u1 + np.sqrt(max(0.0, 1 - p * p)) * u2)
    n = n_train + n_val + n_test
    x = rng.normal(size=(n, dim))
    y = np.stack([mmoe_labels(x, w, alpha, beta) for w in (w1, w2)], axis=1)
    y += rng.normal(scale=noise, size=y.shape)
    mean, std = y[:n_train].mean(axis=0), y[:n_train].std(axis=0)
    y = (y - mean) / std
    tasks = [Task(name, "regression", 1, ("mse", "mae")) for name in ("y1", "y2")]

    def split(lo: int, hi: int) -> Split:
        xs = torch.tensor(x[lo:hi], dtype=torch.float32)
        return Split(xs, {t.name: torch.tensor(y[lo:hi, k], dtype=torch.float32) for k, t in enumerate(tasks)})

    info = {
        "p": p,
        "label_correlation": float(np.corrcoef(y[:n_train, 0], y[:n_train, 1])[0, 1]),
        "alpha": alpha.tolist(),
        "beta": beta.tolist(),
    }
    return MultiTaskData(
        "mmoe_synthetic",
        tasks,
        (dim,),
        split(0, n_train),
        split(n_train, n_train + n_val),
        split(n_train + n_val, n),
        info,
    )
