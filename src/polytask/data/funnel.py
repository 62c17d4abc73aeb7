"""``funnel``: impressions -> clicks -> conversions with known ground-truth pCTR and pCVR, for ESMM-style
models (tabular inputs with shared ID features).

Each impression pairs a user and an item (ids drawn with a Zipf-like popularity, so many ids are rare) and
has two dense features. With latent factors a_u, b_i (CTR) and c_u, d_i (CVR) of dimension 8:

    logit pCTR = β_ctr + s (a_u · b_i) + 0.5 x_1,
    logit pCVR = β_cvr + s (ρ a_u · b_i + √(1 − ρ²) c_u · d_i) + 0.5 x_2,
    click ~ Bern(pCTR), conversion* ~ Bern(pCVR), conversion = click · conversion*.

β are set for base rates ``ctr`` and ``cvr`` (defaults 3% and 10%), ρ (``shared``) couples the two
funnels through the same factors. Tasks (both over *all* impressions, as ESMM trains them): ``ctr``
(label: click) and ``ctcvr`` (label: click and conversion). Inputs are ``{"categorical": [user, item,
user_segment, item_category], "numerical": [x_1, x_2]}`` with id 0 = OOV. The true probabilities of every
split are in ``data.info["truth"][split] = {"pctr", "pcvr", "conversion_star"}`` (numpy arrays) for
calibration and for CVR metrics on clicked impressions (``click == 1`` rows, as the ESMM paper scores).
"""

from __future__ import annotations

import numpy as np
import torch

from polytask.data.base import MultiTaskData, Split
from polytask.data.registry import register
from polytask.errors import PolytaskError
from polytask.features import FeatureSpec, categorical
from polytask.tasks import Task

FACTOR_DIM = 8


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


@register("funnel", "impression -> click -> conversion with known pCTR/pCVR and shared ID features (ESMM)")
def funnel(
    n_users: int = 2000,
    n_items: int = 2000,
    n_train: int = 200_000,
    n_val: int = 50_000,
    n_test: int = 50_000,
    ctr: float = 0.03,
    cvr: float = 0.10,
    shared: float = 0.5,
    scale: float = 1.5,
    embed_dim: int = 8,
    seed: int = 0,
) -> MultiTaskData:
    if not (0 < ctr < 1 and 0 < cvr < 1 and -1 <= shared <= 1):
        raise PolytaskError("funnel: ctr and cvr must be in (0, 1), shared in [-1, 1]")
    if min(n_users, n_items, n_train, n_val, n_test) < 1:
        raise PolytaskError("funnel: sizes must be >= 1")
    rng = np.random.default_rng(seed)
    a, b, c, d = (rng.normal(size=(n, FACTOR_DIM)) / np.sqrt(FACTOR_DIM) for n in (n_users, n_items) * 2)
    n = n_train + n_val + n_test
    users = np.minimum(rng.zipf(1.3, size=n) - 1, n_users - 1) if n_users > 1 else np.zeros(n, int)
    users = rng.permutation(n_users)[users]  # popular ids spread over the id range
    items = rng.permutation(n_items)[np.minimum(rng.zipf(1.3, size=n) - 1, n_items - 1)]
    x = rng.normal(size=(n, 2))
    shared_term = (a[users] * b[items]).sum(1)
    own_term = (c[users] * d[items]).sum(1)
    pctr = 1 / (1 + np.exp(-(_logit(ctr) + scale * shared_term + 0.5 * x[:, 0])))
    cvr_logit = _logit(cvr) + scale * (shared * shared_term + np.sqrt(1 - shared**2) * own_term) + 0.5 * x[:, 1]
    pcvr = 1 / (1 + np.exp(-cvr_logit))
    click = (rng.random(n) < pctr).astype(np.float32)
    conv_star = (rng.random(n) < pcvr).astype(np.float32)
    conversion = click * conv_star
    cat = np.stack([users + 1, items + 1, users % 20 + 1, items % 50 + 1], axis=1)
    spec = FeatureSpec(
        categorical(["user", "item", "user_segment", "item_category"], [n_users + 1, n_items + 1, 21, 51], embed_dim),
        ("x1", "x2"),
    )
    tasks = [Task("ctr", "binary", 1, ("auc", "log_loss")), Task("ctcvr", "binary", 1, ("auc", "log_loss"))]
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}

    def split(lo: int, hi: int) -> Split:
        inputs = {
            "categorical": torch.tensor(cat[lo:hi], dtype=torch.long),
            "numerical": torch.tensor(x[lo:hi], dtype=torch.float32),
        }
        targets = {"ctr": torch.tensor(click[lo:hi]), "ctcvr": torch.tensor(conversion[lo:hi])}
        return Split(inputs, targets)

    truth = {
        name: {"pctr": pctr[lo:hi], "pcvr": pcvr[lo:hi], "conversion_star": conv_star[lo:hi], "click": click[lo:hi]}
        for name, (lo, hi) in bounds.items()
    }
    info = {
        "truth": truth,
        "clicks_train": int(click[:n_train].sum()),
        "conversions_train": int(conversion[:n_train].sum()),
    }
    return MultiTaskData("funnel", tasks, spec, *(split(*bounds[k]) for k in ("train", "val", "test")), info)
