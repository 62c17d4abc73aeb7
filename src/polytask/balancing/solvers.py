"""Small convex sub-problems of the gradient methods, on K x K Gram matrices (K = number of tasks).

All routines work in float64 NumPy (K is small; the cost is Python overhead, not arithmetic) and raise
:class:`~polytask.errors.SolverError` instead of returning a silently wrong answer.

- :func:`min_norm_2` — exact min-norm point of the segment [g_1, g_2] (MGDA, K = 2).
- :func:`min_norm_frank_wolfe` — Sener & Koltun's Frank–Wolfe min-norm solver (their Algorithm 2).
- :func:`box_qp` — exact active-set solver (Lawson–Hanson style) for min ½xᵀQx + qᵀx, x ≥ 0, optionally
  with Σx = 1; used for exact MGDA and for UPGrad's dual-cone projections.
- :func:`nash_bargaining` — w > 0 with G w = 1/w (Nash-MTL) by damped Newton on ½wᵀGw − Σ log w.
- :func:`cagrad_dual` — CAGrad's dual min_{w ∈ Δ} wᵀG1/K + √φ √(wᵀGw): active-set Newton, SLSQP (the reference
  code's solver) near the kink.
"""

from __future__ import annotations

import numpy as np

from polytask.balancing import small
from polytask.errors import SolverError


def min_norm_2(g11: float, g12: float, g22: float) -> tuple[float, float]:
    """argmin_{γ ∈ [0, 1]} ‖γ g_1 + (1 − γ) g_2‖² from the Gram entries; returns (γ, squared norm).

    γ = (g22 − g12) / (g11 + g22 − 2 g12), clipped to [0, 1] (Sener & Koltun 2018, Algorithm 1)."""
    denom = g11 + g22 - 2.0 * g12
    if denom <= 1e-300:  # g_1 == g_2: any γ; take ½
        return 0.5, 0.25 * (g11 + g22 + 2 * g12)
    gamma = min(1.0, max(0.0, (g22 - g12) / denom))
    return gamma, gamma * gamma * g11 + 2 * gamma * (1 - gamma) * g12 + (1 - gamma) ** 2 * g22


def min_norm_frank_wolfe(G: np.ndarray, max_iter: int = 250, tol: float = 1e-5) -> np.ndarray:
    """Min-norm point of the convex hull of the rows of J given G = J Jᵀ: Frank–Wolfe with exact line
    search, started from the best pair (Sener & Koltun 2018, Algorithm 2 and their reference defaults
    ``max_iter`` = 250, stop when Σ|Δw| < ``tol`` = 1e-5). K = 2 is solved exactly in one step."""
    K = G.shape[0]
    if K == 1:
        return np.ones(1)
    best, w = np.inf, None
    for i in range(K):  # initial point: the best two-task solution
        for j in range(i + 1, K):
            gamma, value = min_norm_2(G[i, i], G[i, j], G[j, j])
            if value < best:
                best, w = value, np.zeros(K)
                w[i], w[j] = gamma, 1 - gamma
    if K == 2:
        return w
    for _ in range(max_iter):
        Gw = G @ w
        t = int(np.argmin(Gw))
        # line search between the current point (Gram wᵀGw) and vertex t
        gamma, _ = min_norm_2(float(w @ Gw), float(Gw[t]), float(G[t, t]))
        new = gamma * w
        new[t] += 1 - gamma
        change = np.abs(new - w).sum()
        w = new
        if change < tol:
            break
    return w


def box_qp(
    Q: np.ndarray,
    q: np.ndarray,
    simplex: bool = False,
    tol: float = 1e-10,
    max_iter: int = 200,
    a: np.ndarray | None = None,
) -> np.ndarray:
    """Exact solution of min ½xᵀQx + qᵀx subject to x ≥ 0 (and aᵀx = 1 when ``simplex``; a > 0, default
    1: Σx = 1), Q symmetric PSD.

    Primal active-set method (Lawson & Hanson 1974 generalised to a quadratic objective): grow the free
    set by the most violated KKT condition, solve the equality-constrained problem on it, and step back
    to feasibility when a free variable would turn negative. Finite termination; singular Q is handled by
    least squares on the free set. For K ≤ 8 the same steps run on Python floats
    (:func:`polytask.balancing.small.box_qp`) unless a singular system needs the least-squares path."""
    a = np.ones(Q.shape[0]) if a is None else np.asarray(a, dtype=np.float64)
    if Q.shape[0] <= small.MAX_K:
        fast = small.box_qp(Q.tolist(), q.tolist(), simplex, tol, max_iter, a.tolist())
        if fast is not None:
            return np.array(fast)
    return _box_qp_numpy(Q, q, simplex, tol, max_iter, a)


def _box_qp_numpy(
    Q: np.ndarray, q: np.ndarray, simplex: bool, tol: float, max_iter: int, a: np.ndarray | None = None
) -> np.ndarray:
    K = Q.shape[0]
    a = np.ones(K) if a is None else a
    scale = max(float(np.trace(Q)) / K, 1e-300)
    Qs, qs = Q / scale, q / scale  # scale-free tolerances
    if simplex:
        start = int(np.argmin(np.diag(Qs) / (2 * a**2) + qs / a))
        x = np.zeros(K)
        x[start] = 1.0 / a[start]
        free = [start]
    else:
        x = np.zeros(K)
        free = []

    def objective(v: np.ndarray) -> float:
        return 0.5 * float(v @ Qs @ v) + float(qs @ v)

    value = objective(x)
    for _ in range(max_iter):
        grad = Qs @ x + qs
        if simplex:  # multiplier of aᵀx = 1 from the free set (least squares)
            mu = float(grad[free] @ a[free] / (a[free] @ a[free])) if free else 0.0
            reduced = grad - mu * a
        else:
            reduced = grad
        candidates = [i for i in range(K) if i not in free and reduced[i] < -tol * (1 + abs(reduced).max())]
        if not candidates:
            return np.maximum(x, 0.0)
        free.append(min(candidates, key=lambda i: reduced[i]))
        while True:
            z = _solve_on_free(Qs, qs, free, simplex, a)
            zf = z[free]
            if np.all(zf > 0):
                x = z
                break
            # move from x towards z until the first free variable hits zero, then drop it
            xf = x[free]
            blocking = [(xf[k] / (xf[k] - zf[k]), k) for k in range(len(free)) if zf[k] <= 0 and xf[k] - zf[k] > 0]
            alpha = min(blocking)[0] if blocking else 0.0
            x = x + alpha * (z - x)
            dropped = [free[k] for k in range(len(free)) if x[free[k]] <= 1e-15 and zf[k] <= 0]
            if not dropped:  # degenerate: drop the most negative
                dropped = [free[int(np.argmin(zf))]]
            for i in dropped:
                x[i] = 0.0
                free.remove(i)
            if not free:
                break
        new_value = objective(x)
        if new_value >= value - 1e-14 * (1.0 + abs(value)):
            # no progress: the KKT violation is round-off (singular Q); x is feasible and optimal
            return np.maximum(x, 0.0)
        value = new_value
    raise SolverError(f"box_qp did not converge in {max_iter} iterations (K = {K})")


def _solve_on_free(Q: np.ndarray, q: np.ndarray, free: list[int], simplex: bool, a: np.ndarray) -> np.ndarray:
    K = Q.shape[0]
    z = np.zeros(K)
    Qf = Q[np.ix_(free, free)]
    if simplex:
        n = len(free)
        kkt = np.zeros((n + 1, n + 1))
        kkt[:n, :n], kkt[:n, n], kkt[n, :n] = Qf, a[free], a[free]
        rhs = np.concatenate([-q[free], [1.0]])
        sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
        z[free] = sol[:n]
    else:
        z[free] = np.linalg.lstsq(Qf, -q[free], rcond=None)[0]
    return z


def nash_bargaining(G: np.ndarray, max_iter: int = 100, tol: float = 1e-9) -> np.ndarray:
    """w > 0 with G w = 1/w (Navon et al. 2022, Nash-MTL) as the minimiser of the strictly convex
    f(w) = ½ wᵀGw − Σ_k log w_k (its stationarity condition is exactly G w = 1/w).

    Solved on G/s (s = mean diagonal) and rescaled by 1/√s, which is exact: if (G/s) u = 1/u then
    G (u/√s) = 1/(u/√s). Damped Newton with a positivity-preserving backtracking line search. Raises
    :class:`SolverError` when no solution exists (f unbounded: some non-negative combination of the task
    gradients is zero, e.g. two opposite gradients) or Newton does not converge."""
    K = G.shape[0]
    s = float(np.trace(G)) / K
    if not np.isfinite(s) or s <= 0:
        raise SolverError("nash_bargaining: the Gram matrix is zero or not finite")
    A = G / s
    if K <= small.MAX_K:  # the same Newton steps on Python floats
        fast = small.nash_bargaining(A.tolist(), max_iter, tol)
        if fast is not None:
            return np.array(fast) / np.sqrt(s)
    return _nash_numpy(A, max_iter, tol) / np.sqrt(s)


def _nash_numpy(A: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    K = A.shape[0]
    w = np.ones(K) / np.sqrt(max(float(A.sum()) / K, 1e-12))

    def f(v: np.ndarray) -> float:
        return 0.5 * float(v @ A @ v) - float(np.log(v).sum())

    value = f(w)
    for _ in range(max_iter):
        grad = A @ w - 1.0 / w
        if np.abs(grad * w).max() < tol:  # relative residual of G w = 1/w
            return w
        if w.max() > 1e8:  # diverging: f is unbounded below
            break
        try:
            step = np.linalg.solve(A + np.diag(1.0 / w**2), -grad)
        except np.linalg.LinAlgError:
            break
        t = 1.0
        neg = step < 0
        if np.any(neg):
            t = min(1.0, 0.99 * float(np.min(-w[neg] / step[neg])))
        if -float(grad @ step) < 1e-12 and t == 1.0:  # Newton decrement below round-off: take the full step
            w = w + step
            value = f(w)
            continue
        while True:
            cand = w + t * step
            new = f(cand)
            if new <= value + 1e-4 * t * float(grad @ step) or t < 1e-12:
                break
            t *= 0.5
        w, value = cand, new
    raise SolverError(
        "Nash-MTL: no w > 0 with G w = 1/w (the bargaining problem has no solution: some non-negative "
        "combination of the task gradients is zero, or Newton did not converge)"
    )


def cagrad_dual(A: np.ndarray, c: float, smoothing: float = 0.0) -> np.ndarray:
    """CAGrad's dual problem (Liu et al. 2021): w = argmin_{w ∈ Δ} wᵀA1/K + √φ √(wᵀAw) with
    φ = c² 1ᵀA1/K² (A = G, or G scaled: the minimiser does not change). For K ≤ 8 by
    :func:`polytask.balancing.small.cagrad_dual` (an exact active-set Newton method); otherwise, and where
    that one declines (a singular A, ‖Jᵀw‖ → 0 near the optimum, where the objective has its kink), by
    SciPy's SLSQP from the uniform point with ‖Jᵀw‖ smoothed to √(wᵀAw + ``smoothing``) (``smoothing``:
    A's rounding level, below which ‖Jᵀw‖ is not known anyway). Never raises on a finite A: SLSQP's last
    iterate is taken when it stops early (the caller treats a ‖Jᵀw‖ at the rounding level as zero)."""
    from scipy.optimize import minimize

    K = A.shape[0]
    scale = max(float(np.trace(A)) / K, 1e-300)
    A = A / scale  # the minimiser is invariant to scaling A; the solvers' tolerances are not
    smoothing = smoothing / scale
    b = A.mean(axis=1)
    sqrt_phi = c * np.sqrt(max(float(A.mean()), 0.0))
    if K <= small.MAX_K and sqrt_phi > 0:  # exact active-set Newton on Python floats; SLSQP where it declines
        fast = small.cagrad_dual(A.tolist(), b.tolist(), float(sqrt_phi))
        if fast is not None:
            return np.array(fast)
    floor = max(float(smoothing), 1e-300)

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        Aw = A @ w
        norm = np.sqrt(max(float(w @ Aw), 0.0) + floor)
        return float(w @ b) + sqrt_phi * norm, b + sqrt_phi * Aw / norm

    res = minimize(
        objective,
        np.full(K, 1.0 / K),
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * K,
        constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)},),
        options={"ftol": 1e-12, "maxiter": 500},
    )
    w = np.clip(np.nan_to_num(res.x, nan=0.0), 0.0, None)
    if not w.sum() > 0:
        return np.full(K, 1.0 / K)
    return w / w.sum()
