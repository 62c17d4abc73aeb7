"""Gradient methods as pure functions of the Gram matrix G = J Jᵀ (K x K, rows of J are the per-task
gradients g_k): each returns the weights w with update d = Jᵀw = Σ_k w_k g_k.

Methods defined by operations on the g_k themselves (PCGrad's projections, GradVac's corrections,
CAGrad's conflict-averse direction) still produce a linear combination of the g_k whose coefficients
depend only on inner products, so they too are functions of G; they never need J itself. Inputs and
outputs are float64 NumPy arrays.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from polytask.balancing import small, solvers
from polytask.errors import PolytaskError, SolverError

MGDA_NORMALIZATIONS = ("none", "l2", "loss", "loss+")

#: relative rounding level of a Gram matrix formed in float64 from short rows (see
#: :func:`polytask.balancing.jacobian.noise_level`); the balancers pass the level of the step's own G
FLOAT64_NOISE = 8 * float(np.finfo(np.float64).eps)


def mgda_normalizers(G: np.ndarray, losses: np.ndarray, normalization: str = "none") -> np.ndarray:
    """Sener & Koltun's gradient normalisers n_k: 1 (none), ‖g_k‖ (l2), L_k (loss), L_k ‖g_k‖ (loss+)."""
    if normalization not in MGDA_NORMALIZATIONS:
        raise PolytaskError(f"mgda: normalization must be one of {MGDA_NORMALIZATIONS}, got {normalization!r}")
    if normalization == "none":
        return np.ones(G.shape[0])
    norms = np.sqrt(np.clip(np.diag(G), 0.0, None))
    n = np.asarray({"l2": norms, "loss": losses, "loss+": losses * norms}[normalization], dtype=np.float64)
    return np.where(n > 0, n, 1.0)


def mgda_weights(G: np.ndarray, normalizers: np.ndarray | None = None, solver: str = "active_set") -> np.ndarray:
    """MGDA (Sener & Koltun 2018): w = argmin_{w ∈ Δ} ‖Σ_k w_k g_k/n_k‖², solved exactly (``active_set``)
    or by the paper's Frank–Wolfe algorithm (``frank_wolfe``, with its reference stopping rule); K = 2 in
    closed form either way. As in the reference code, the weights found on the
    normalised gradients g_k/n_k are applied to the raw losses: d = Σ_k w_k g_k (with n = 1, d is the
    min-norm element of the convex hull and J d ≥ ‖d‖² ≥ 0)."""
    n = None if normalizers is None else np.asarray(normalizers, dtype=np.float64)
    Gn = G if n is None or (n == 1).all() else G / np.outer(n, n)
    if solver == "frank_wolfe":
        return solvers.min_norm_frank_wolfe(Gn)
    if solver == "active_set":
        return min_norm_weights(Gn)
    raise PolytaskError(f"mgda: solver must be 'frank_wolfe' or 'active_set', got {solver!r}")


def min_norm_weights(G: np.ndarray) -> np.ndarray:
    """w = argmin_{w ∈ Δ} wᵀGw exactly, whatever the spread of the task gradients' norms.

    Solved on the equilibrated problem: with w_k = y_k n_min/‖g_k‖ it is min yᵀCy over y ≥ 0,
    Σ_k (n_min/‖g_k‖) y_k = 1 (C the cosine matrix), whose entries and optimality tolerances are all of
    order one: the KKT conditions g_kᵀd ≥ ‖d‖² then hold relative to each task's own norm, so a task
    1e7 times smaller than another is not in conflict with d. A task with a zero gradient makes d = 0."""
    K = G.shape[0]
    norms = np.sqrt(np.clip(np.diag(G), 0.0, None))
    if K == 1:
        return np.ones(1)
    if not (norms > 0).all():
        w = np.zeros(K)
        w[int(np.argmin(norms))] = 1.0
        return w
    C = G / np.outer(norms, norms)
    a = norms.min() / norms
    w = solvers.box_qp(C, np.zeros(K), simplex=True, a=a) * a
    return w / w.sum()


def pcgrad_weights(G: np.ndarray, orders: Sequence[Sequence[int]]) -> np.ndarray:
    """PCGrad (Yu et al. 2020). For each task i and j in ``orders[i]`` (a random order of the other
    tasks): if g_i^PC · g_j < 0, g_i^PC ← g_i^PC − (g_i^PC · g_j / ‖g_j‖²) g_j, projecting against the
    original g_j. d = Σ_i g_i^PC. Tracked as coefficients C (g_i^PC = Σ_m C_im g_m); w = Σ_i C_i."""
    K = G.shape[0]
    C = np.eye(K)
    for i in range(K):
        for j in orders[i]:
            if j == i:
                continue
            dot = float(C[i] @ G[:, j])
            if dot < 0 and G[j, j] > 0:
                C[i, j] -= dot / G[j, j]
    return C.sum(axis=0)


def cagrad_weights(G: np.ndarray, c: float = 0.4, rescale: int = 1, noise: float = FLOAT64_NOISE) -> np.ndarray:
    """CAGrad (Liu et al. 2021): d = argmax_d min_k g_kᵀd subject to ‖d − g_0‖ ≤ c‖g_0‖ (g_0 the mean
    gradient), divided by 1 + c² (``rescale`` = 1, the paper's), 1 + c (2) or not (0). Returned as the
    effective weights on the g_k (d = Jᵀw).

    Through the dual w = argmin_{w ∈ Δ} g_wᵀg_0 + c‖g_0‖ ‖g_w‖: d = g_0 + (c‖g_0‖/‖g_w‖) g_w. Where the
    dual's minimiser has g_w = 0 (0 in the convex hull of the task gradients and no direction of the hull
    within angle arccos(−c) of −g_0; always so for c ≥ 1 when 0 is in the hull) that formula divides by
    zero, and the primal's maximum min_k g_kᵀd = 0 is reached by a set of d: the one returned is the
    closest to g_0, its projection onto the cone {d : J d ≥ 0}, d = g_0 + Jᵀv with
    v = argmin_{v ≥ 0} ‖g_0 + Jᵀv‖². ``noise`` (G's relative rounding level) says where ‖g_w‖ is zero."""
    K = G.shape[0]
    if rescale not in (0, 1, 2):
        raise PolytaskError(f"cagrad: rescale must be 0, 1 or 2, got {rescale}")
    divisor = {0: 1.0, 1: 1.0 + c**2, 2: 1.0 + c}[rescale]
    uniform = np.full(K, 1.0 / K)
    scale = float(np.trace(G)) / K
    if not scale > 0:  # every gradient is zero
        return uniform / divisor
    A = G / scale  # the weights are invariant to scaling G
    norms = np.sqrt(np.clip(np.diag(A), 0.0, None))
    g0_sq = float(A.mean())
    if g0_sq <= _rounding(A, uniform, noise, norms) or c == 0:  # g_0 = 0 to rounding, or c = 0: d = g_0
        return uniform / divisor
    w = solvers.cagrad_dual(A, c, smoothing=_rounding(A, uniform, noise, norms))
    gw_sq = float(w @ A @ w)
    if not _cagrad_at_kink(A, w, gw_sq, c * np.sqrt(g0_sq), noise, norms):
        return (uniform + c * np.sqrt(g0_sq / gw_sq) * w) / divisor
    return (uniform + dual_cone_offsets(A, A.mean(axis=1))) / divisor


def _rounding(A: np.ndarray, w: np.ndarray, noise: float, norms: np.ndarray) -> float:
    """The rounding level of ‖Σ w_k g_k‖² = wᵀAw when A's entries err by noise · ‖g_k‖ ‖g_l‖: noise ·
    (Σ |w_k| ‖g_k‖)²; below it, the combination is 0 as far as G can tell."""
    return noise * float(np.abs(w) @ norms) ** 2


def _cagrad_at_kink(A: np.ndarray, w: np.ndarray, gw_sq: float, s: float, noise: float, norms: np.ndarray) -> bool:
    """Whether CAGrad's dual minimum lies at g_w = 0 (value 0): ‖g_w‖² is within 16x its rounding level,
    or the objective at w is 0 to the solver's accuracy (relative to the objective's magnitude; near the
    kink an iterate's small weights, and so g_w's direction, are mostly its error) and 0 is in the convex
    hull (the exact min-norm point is within 16x its rounding level). A clearly negative value means a
    direction of the hull within arccos(−c) of −g_0 (w is then far from the kink); a clearly positive one,
    that 0 is not in the hull. At value 0 with g_w ≠ 0 (c = 1, g_w ∝ −g_0) the minimiser is not unique
    and the formula's d is ill-conditioned; the kink's d is then a maximiser of the primal too."""
    if gw_sq <= 16 * _rounding(A, w, noise, norms):
        return True
    value = float(w @ A.mean(axis=1)) + s * np.sqrt(gw_sq)
    magnitude = float(A.mean()) + s * float(norms.max())  # of the objective over the simplex
    if abs(value) > 1e-6 * magnitude:  # clearly away from the kink's value 0
        return False
    m = min_norm_weights(A)
    return float(m @ A @ m) <= 16 * _rounding(A, m, noise, norms)


def dual_cone_offsets(G: np.ndarray, Jg: np.ndarray) -> np.ndarray:
    """v = argmin_{v ≥ 0} ‖g + Jᵀv‖² given G = JJᵀ and Jg: g + Jᵀv is the projection of g onto the cone
    {d : J d ≥ 0}. Solved on the cosine matrix (y = N v, N = diag ‖g_k‖), so that tasks of very different
    scales are all respected; a task with a zero gradient gets 0."""
    norms = np.sqrt(np.clip(np.diag(G), 0.0, None))
    active = norms > 0
    v = np.zeros(G.shape[0])
    if not active.any():
        return v
    n = norms[active]
    C = G[np.ix_(active, active)] / np.outer(n, n)
    v[active] = solvers.box_qp(C, Jg[active] / n) / n
    return v


def nash_mtl_weights(G: np.ndarray) -> np.ndarray:
    """Nash-MTL (Navon et al. 2022): the w > 0 with G w = 1/w (Nash bargaining).

    Solved on the cosine matrix C = N⁻¹ G N⁻¹ (N = diag ‖g_k‖), then w_k = u_k/‖g_k‖: exact, because the
    solution is equivariant to rescaling a task's gradient, and well conditioned however differently the
    tasks are scaled. Tasks whose gradient is exactly zero cannot bargain (their w_k would be infinite)
    and are left out; they get the mean weight of the others (their gradient adds nothing to d)."""
    K = G.shape[0]
    cosines = _cosines_small(G)
    if cosines is not None:  # K ≤ small.MAX_K, no zero gradient: the same Newton on Python floats
        C, norms = cosines
        u = small.nash_bargaining(C, 100, 1e-9) if _finite(C) else None
        if u is not None:
            return np.array([a / n for a, n in zip(u, norms)])
    norms = np.sqrt(np.clip(np.diag(G), 0.0, None))
    active = norms > 1e-150
    if not active.any():
        return np.ones(K)
    idx = np.flatnonzero(active)
    n = norms[idx]
    C = G[np.ix_(idx, idx)] / np.outer(n, n)
    w = np.empty(K)
    w[idx] = solvers.nash_bargaining(C) / n
    w[~active] = w[idx].mean()
    return w


def imtl_g_weights(G: np.ndarray, noise: float = FLOAT64_NOISE) -> np.ndarray:
    """IMTL-G (Liu et al. 2021): Σ w_k = 1 and d = Σ w_k g_k has equal projections d·u_k on every unit
    task gradient u_k = g_k/‖g_k‖.

    The paper's closed form w_{2..K} = g_1 Uᵀ (D Uᵀ)⁻¹ (D, U: differences of gradients and of unit
    gradients) is solved here in the equivalent, better conditioned form: writing d = Σ a_k u_k
    (a_k = w_k ‖g_k‖), equal projections mean C a = c 1 with C the cosine matrix, so a ∝ C⁻¹1 and
    w_k = (C⁻¹1)_k/‖g_k‖ normalised to Σ w_k = 1. Eigenvalues of C below its rounding level
    (``noise`` · λ_max: tasks whose gradients the precision of G cannot tell apart, or that are linearly
    dependent) are raised to that level instead of inverted as noise: nearly parallel tasks then get
    equal a_k (the limit of the exact solution), and opposite or dependent ones the common projection
    0, d = 0 with bounded weights. Tasks with a zero gradient have no direction and get weight 0. Where
    no such d has weights summing to a non-zero value (a set of measure zero) the weights of the
    point of the affine hull {Σ w = 1} closest to 0 are returned, with a warning."""
    K = G.shape[0]
    norms = np.sqrt(np.clip(np.diag(G), 0.0, None))
    active = norms > 0
    if active.sum() <= 1:
        return active.astype(np.float64) if active.any() else np.full(K, 1.0 / K)
    idx = np.flatnonzero(active)
    n = norms[idx]
    C = G[np.ix_(idx, idx)] / np.outer(n, n)
    lam, V = np.linalg.eigh(C)
    floor = noise * max(float(lam.max()), 1.0)
    a = V @ ((V.T @ np.ones(len(idx))) / np.maximum(lam, floor))
    raw = a / n
    total = raw.sum()
    w = np.zeros(K)
    if abs(total) > noise * np.abs(raw).sum():
        w[idx] = raw / total
        return w
    warnings.warn(
        "imtl_g: no update with equal projections has weights summing to 1 (their sum vanishes); using the "
        "weights of the affine combination of the task gradients closest to 0",
        RuntimeWarning,
        stacklevel=2,
    )
    Gi = G[np.ix_(idx, idx)]
    x = np.linalg.lstsq(Gi, np.ones(len(idx)), rcond=noise)[0]
    w[idx] = x / x.sum() if abs(x.sum()) > 0 else np.full(len(idx), 1.0 / len(idx))
    return w


def gradvac_weights(
    G: np.ndarray, targets: np.ndarray, orders: Sequence[Sequence[int]], beta: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """GradVac (Wang et al. 2021): for task i and j in ``orders[i]``: φ = cos(g_i^PC, g_j); if φ < φ̂_ij,
    g_i^PC ← g_i^PC + ‖g_i^PC‖ (φ̂_ij √(1−φ²) − φ √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²)) g_j; then (always)
    φ̂_ij ← (1 − β) φ̂_ij + β φ. d = Σ_i g_i^PC. Returns (weights, updated targets φ̂)."""
    K = G.shape[0]
    C = np.eye(K)
    targets = np.array(targets, dtype=np.float64, copy=True)
    norms = np.sqrt(np.clip(np.diag(G), 0.0, None))
    for i in range(K):
        for j in orders[i]:
            if j == i:
                continue
            pc_norm = np.sqrt(max(float(C[i] @ G @ C[i]), 0.0))
            if pc_norm <= 0 or norms[j] <= 0:
                continue
            phi = float(C[i] @ G[:, j]) / (pc_norm * norms[j])
            phi = min(1.0, max(-1.0, phi))
            target = targets[i, j]
            if phi < target:
                C[i, j] += (
                    pc_norm
                    * (target * np.sqrt(1 - phi**2) - phi * np.sqrt(1 - target**2))
                    / (norms[j] * np.sqrt(max(1 - target**2, 1e-16)))
                )
            targets[i, j] = (1 - beta) * target + beta * phi
    return C.sum(axis=0), targets


ALIGNED_SCALES = ("min", "median", "rmse")


def aligned_mtl_weights(
    G: np.ndarray, pref: np.ndarray | None = None, scale: str = "min", noise: float = FLOAT64_NOISE
) -> np.ndarray:
    """Aligned-MTL (Senushkin et al. 2023): G = V Λ Vᵀ, B = σ V Λ^{−1/2} Vᵀ over the non-zero eigenvalues,
    w = B u (u the preference vector, default 1/K). σ = √λ_min (``min``, the paper), √median λ
    (``median``) or √mean λ (``rmse``), the reference code's scale modes. The aligned Jacobian B J has
    all non-zero singular values equal to σ. A zero G gives w = u. Eigenvalues below G's rounding level
    (``noise`` · λ_max) count as zero: a rank-deficient J computed in float32 keeps its rank."""
    K = G.shape[0]
    u = np.full(K, 1.0 / K) if pref is None else np.asarray(pref, dtype=np.float64)
    return aligned_mtl_transform(G, scale, noise) @ u


def aligned_mtl_transform(G: np.ndarray, scale: str = "min", noise: float = FLOAT64_NOISE) -> np.ndarray:
    """Aligned-MTL's balance matrix B = σ V Λ^{−1/2} Vᵀ over the r largest eigenpairs of G, r its numerical
    rank; the identity when G = 0.

    The rank is read off the cosine matrix C = N⁻¹GN⁻¹ (the same rank as G), whose entries all err by
    about ``noise`` whatever the tasks' gradient norms: eigenvalues of C below K · noise are rounding. (A
    cut on G's own spectrum relative to λ_max would drop the eigenvalue of a task whose gradient is merely
    small, which is well determined.) Eigenvalues below float64's resolution of G's spectrum (K eps λ_max)
    are dropped too"""
    if scale not in ALIGNED_SCALES:
        raise PolytaskError(f"aligned_mtl: scale must be one of {ALIGNED_SCALES}, got {scale!r}")
    K = G.shape[0]
    norms = np.sqrt(np.clip(np.diag(G), 0.0, None))
    if not (norms > 0).any():
        return np.eye(K)
    active = norms > 0
    n = norms[active]
    cosine_eigs = np.linalg.eigvalsh(G[np.ix_(active, active)] / np.outer(n, n))
    rank = int((cosine_eigs > K * max(noise, float(np.finfo(np.float64).eps))).sum())
    lam, V = np.linalg.eigh(G)
    keep = np.zeros(K, dtype=bool)
    keep[K - rank :] = True  # eigh's order: ascending
    keep &= lam > float(lam.max()) * K * float(np.finfo(np.float64).eps)  # what eigh of G can resolve
    if not keep.any():
        return np.eye(K)
    lam, V = lam[keep], V[:, keep]
    sigma = {"min": lam.min(), "median": np.median(lam), "rmse": lam.mean()}[scale]
    return np.sqrt(sigma) * (V / np.sqrt(lam)) @ V.T


def upgrad_weights(
    G: np.ndarray, pref: np.ndarray | None = None, norm_eps: float = 0.0, reg_eps: float = 0.0
) -> np.ndarray:
    """UPGrad (Quinton & Rey 2024): project every g_i onto the dual cone {x : J x ≥ 0}; in weights,
    w^(i) = argmin_{v ≥ e_i} vᵀ G v (a QP per task, solved exactly), and w = Σ_i u_i w^(i) (u = 1/K: the
    mean of the projections). J d ≥ 0 for every task.

    With the default ``norm_eps = reg_eps = 0`` this is the paper's definition, solved on the cosine matrix
    C = N⁻¹GN⁻¹ (N = diag ‖g_k‖) and mapped back exactly (v ≥ e_i ⇔ Nv ≥ ‖g_i‖ e_i), so tasks whose
    gradients differ by 16 orders of magnitude are all respected. ``reg_eps > 0`` reproduces TorchJD's
    variant: G divided by its trace (zero below ``norm_eps``) plus ``reg_eps`` I."""
    K = G.shape[0]
    u = np.full(K, 1.0 / K) if pref is None else np.asarray(pref, dtype=np.float64)
    if reg_eps > 0 or norm_eps > 0:
        trace = float(np.trace(G))
        Gn = (np.zeros_like(G) if trace <= norm_eps else G / trace) + reg_eps * np.eye(K)
        return u @ _dual_cone_weights(Gn, np.ones(K))
    fast = _upgrad_small(G, u)
    if fast is not None:
        return fast
    norms = np.sqrt(np.clip(np.diag(G), 0.0, None))
    active = norms > 1e-150
    n = np.where(active, norms, 1.0)
    C = G / np.outer(n, n)
    C[~active, :] = 0.0
    C[:, ~active] = 0.0
    # w^(i) = N⁻¹ ‖g_i‖ argmin_{v ≥ e_i} vᵀCv; a zero-gradient task keeps v = e_i (nothing to project)
    W = _dual_cone_weights(C, norms) / n[None, :]
    W[:, ~active] = 0.0
    W[~active, :] = np.eye(K)[~active]
    return u @ W


def _cosines_small(G: np.ndarray) -> tuple[list[list[float]], list[float]] | None:
    """(cosine matrix C = N⁻¹GN⁻¹, norms ‖g_k‖) as Python lists when K ≤ small.MAX_K and no task's
    gradient is zero; else None (the NumPy paths handle zero gradients)."""
    K = G.shape[0]
    if K > small.MAX_K:
        return None
    g = G.tolist()
    norms = [math.sqrt(max(g[i][i], 0.0)) for i in range(K)]
    if not min(norms) > 1e-150 or not math.isfinite(max(norms)):
        return None
    return [[g[i][j] / (norms[i] * norms[j]) for j in range(K)] for i in range(K)], norms


def _finite(C: list[list[float]]) -> bool:
    return all(math.isfinite(v) for row in C for v in row)


def _upgrad_small(G: np.ndarray, u: np.ndarray) -> np.ndarray | None:
    """:func:`upgrad_weights` (paper definition) on Python floats for K ≤ small.MAX_K tasks, all with a
    non-zero gradient; None otherwise, or where a projection needs the least-squares path."""
    cosines = _cosines_small(G)
    if cosines is None:
        return None
    C, norms = cosines
    K = len(norms)
    C2 = [[2.0 * v for v in row] for row in C]
    w = [0.0] * K
    for i, ui in enumerate(u.tolist()):
        x = small.box_qp(C2, [row[i] for row in C2], False, 1e-10, 200)
        if x is None:
            return None
        x[i] += 1.0
        for j in range(K):  # w^(i) = N⁻¹ ‖g_i‖ (e_i + x)
            w[j] += ui * norms[i] * x[j] / norms[j]
    return np.array(w)


def _dual_cone_weights(C: np.ndarray, row_scale: np.ndarray) -> np.ndarray:
    """Row i: row_scale_i · argmin_{v ≥ e_i} vᵀCv (v = e_i + x, x ≥ 0: min xᵀCx + 2xᵀCe_i)."""
    K = C.shape[0]
    W = np.empty((K, K))
    for i in range(K):
        e = np.zeros(K)
        e[i] = 1.0
        W[i] = row_scale[i] * (e + solvers.box_qp(2 * C, 2 * C @ e))
    return W


__all__ = [
    "SolverError",
    "aligned_mtl_transform",
    "aligned_mtl_weights",
    "cagrad_weights",
    "dual_cone_offsets",
    "gradvac_weights",
    "imtl_g_weights",
    "mgda_normalizers",
    "mgda_weights",
    "min_norm_weights",
    "nash_mtl_weights",
    "pcgrad_weights",
    "upgrad_weights",
]
