"""``digits_aux``: a coarse primary task on the sklearn 8x8 digits, with the digit identity as the
human-defined auxiliary task laid out in the primary classes' hierarchy ψ (for MAXL and Auto-λ).

- ``primary="pairs"``: 5 classes {0,1}, {2,3}, ..., {8,9}; ψ = [2]*5 and digit d is auxiliary slot d;
- ``primary="parity"``: 2 classes (even, odd); ψ = [5, 5], even digit d is slot d/2, odd digit d is
  slot 5 + (d − 1)/2.

Tasks: ``primary`` (multiclass, primary) and ``digit`` (multiclass over Σψ = 10 slots, role auxiliary);
with ``noise_task``, also ``noise`` (10 random classes per image, auxiliary: a task that can only hurt).
``info["psi"]`` holds ψ. The 1,797 images are split at random (``seed``) into ``n_train`` / ``n_val`` and
the rest for test; a small training set leaves room for auxiliary information to help.
"""

from __future__ import annotations

import numpy as np
import torch

from polytask.data.base import MultiTaskData, Split
from polytask.data.registry import register
from polytask.errors import PolytaskError
from polytask.tasks import Task

HIERARCHIES = ("pairs", "parity")


def hierarchy(primary: str) -> tuple[list[int], np.ndarray, np.ndarray]:
    """ψ, the primary class of each digit and the auxiliary slot of each digit."""
    digits = np.arange(10)
    if primary == "pairs":
        return [2] * 5, digits // 2, digits
    if primary == "parity":
        return [5, 5], digits % 2, np.where(digits % 2 == 0, digits // 2, 5 + digits // 2)
    raise PolytaskError(f"digits_aux: primary must be one of {HIERARCHIES}, got {primary!r}")


@register("digits_aux", "sklearn digits: a coarse primary task (pairs or parity) with the digit as auxiliary")
def digits_aux(
    primary: str = "pairs", n_train: int = 300, n_val: int = 300, noise_task: bool = False, seed: int = 0
) -> MultiTaskData:
    from sklearn.datasets import load_digits

    psi, primary_of, slot_of = hierarchy(primary)
    digits = load_digits()
    if n_train < 1 or n_val < 1 or n_train + n_val >= len(digits.images):
        raise PolytaskError(f"digits_aux: need n_train, n_val >= 1 and n_train + n_val < {len(digits.images)}")
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target
    order = np.random.default_rng(seed).permutation(len(y))
    parts = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
    tasks = [
        Task("primary", "multiclass", len(psi), ("accuracy",)),
        Task("digit", "multiclass", int(sum(psi)), ("accuracy",), role="auxiliary"),
    ]

    noise = np.random.default_rng(seed + 1).integers(0, 10, len(y))
    if noise_task:
        tasks.append(Task("noise", "multiclass", 10, ("accuracy",), role="auxiliary"))

    def split(idx: np.ndarray) -> Split:
        targets = {
            "primary": torch.from_numpy(primary_of[y[idx]].astype(np.int64)),
            "digit": torch.from_numpy(slot_of[y[idx]].astype(np.int64)),
        }
        if noise_task:
            targets["noise"] = torch.from_numpy(noise[idx].astype(np.int64))
        return Split(torch.from_numpy(x[idx]), targets)

    info = {"psi": psi, "primary": primary, "digit_of_slot": [int(np.flatnonzero(slot_of == s)[0]) for s in range(10)]}
    return MultiTaskData("digits_aux", tasks, (1, 8, 8), *(split(p) for p in parts), info)
