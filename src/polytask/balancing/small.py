"""Pure-Python versions of the K x K solvers, for a handful of tasks.

With K ≤ :data:`MAX_K` the sub-problems of the gradient methods are a few dozen floating-point
operations; in NumPy each call costs tens of microseconds of dispatch (more right after the large
matrix products of a training step, when NumPy's code is out of the caches), so a step's weighting
took 0.2-0.4 ms against 0.05 ms for the same algorithm on Python floats. These functions mirror the
NumPy ones in :mod:`polytask.balancing.solvers` step for step (the tests compare them) and return None
wherever that version would need a least-squares or error path (a singular system, no convergence):
the caller then runs the NumPy version, which handles those cases.
"""

from __future__ import annotations

import math

MAX_K = 8

Matrix = list[list[float]]


def solve(A: Matrix, b: list[float]) -> list[float] | None:
    """x with A x = b by Gaussian elimination with partial pivoting; None when A is (numerically)
    singular (a pivot below 1e-12 times the largest entry)."""
    n = len(b)
    M = [[*row, b[i]] for i, row in enumerate(A)]
    scale = max((abs(v) for row in A for v in row), default=0.0)
    if not scale > 0.0 or not math.isfinite(scale):
        return None
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(M[r][c]))
        if abs(M[p][c]) <= 1e-12 * scale:
            return None
        M[c], M[p] = M[p], M[c]
        pivot_row, pivot = M[c], M[c][c]
        for r in range(c + 1, n):
            f = M[r][c] / pivot
            if f:
                row = M[r]
                for j in range(c, n + 1):
                    row[j] -= f * pivot_row[j]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        row = M[r]
        x[r] = (row[n] - sum(row[j] * x[j] for j in range(r + 1, n))) / row[r]
    return x


def matvec(A: Matrix, x: list[float]) -> list[float]:
    return [sum(a * v for a, v in zip(row, x)) for row in A]


def dot(x: list[float], y: list[float]) -> float:
    return sum(a * b for a, b in zip(x, y))


def box_qp(
    Q: Matrix, q: list[float], simplex: bool, tol: float, max_iter: int, a: list[float] | None = None
) -> list[float] | None:
    """:func:`polytask.balancing.solvers.box_qp` (min ½xᵀQx + qᵀx, x ≥ 0, optionally aᵀx = 1 with a > 0,
    default a = 1) on lists; None where that one would solve a singular system by least squares, or not
    converge."""
    K = len(q)
    a = [1.0] * K if a is None else a
    scale = max(sum(Q[i][i] for i in range(K)) / K, 1e-300)
    Qs = [[v / scale for v in row] for row in Q]
    qs = [v / scale for v in q]

    def objective(v: list[float]) -> float:
        return 0.5 * dot(v, matvec(Qs, v)) + dot(qs, v)

    x, free = [0.0] * K, []
    if simplex:
        start = min(range(K), key=lambda i: Qs[i][i] / (2 * a[i] ** 2) + qs[i] / a[i])
        x[start] = 1.0 / a[start]
        free = [start]
    value = objective(x)
    for _ in range(max_iter):
        grad = [g + c for g, c in zip(matvec(Qs, x), qs)]
        if simplex and free:  # multiplier of aᵀx = 1 from the free set (least squares)
            mu = sum(grad[i] * a[i] for i in free) / sum(a[i] ** 2 for i in free)
            grad = [g - mu * ai for g, ai in zip(grad, a)]
        threshold = -tol * (1 + max(abs(g) for g in grad))
        candidates = [i for i in range(K) if i not in free and grad[i] < threshold]
        if not candidates:
            return [max(v, 0.0) for v in x]
        free.append(min(candidates, key=lambda i: grad[i]))
        while True:
            z = _solve_on_free(Qs, qs, free, simplex, K, a)
            if z is None:
                return None
            zf = [z[i] for i in free]
            if all(v > 0 for v in zf):
                x = z
                break
            xf = [x[i] for i in free]
            blocking = [(xf[k] / (xf[k] - zf[k]), k) for k in range(len(free)) if zf[k] <= 0 and xf[k] - zf[k] > 0]
            alpha = min(blocking)[0] if blocking else 0.0
            x = [a + alpha * (b - a) for a, b in zip(x, z)]
            dropped = [free[k] for k in range(len(free)) if x[free[k]] <= 1e-15 and zf[k] <= 0]
            if not dropped:
                dropped = [free[min(range(len(free)), key=lambda k: zf[k])]]
            for i in dropped:
                x[i] = 0.0
                free.remove(i)
            if not free:
                break
        new_value = objective(x)
        if new_value >= value - 1e-14 * (1.0 + abs(value)):
            return [max(v, 0.0) for v in x]
        value = new_value
    return None


def _solve_on_free(
    Q: Matrix, q: list[float], free: list[int], simplex: bool, K: int, a: list[float]
) -> list[float] | None:
    A = [[Q[i][j] for j in free] for i in free]
    b = [-q[i] for i in free]
    if simplex:
        A = [[*row, a[i]] for row, i in zip(A, free)] + [[*(a[i] for i in free), 0.0]]
        b.append(1.0)
    sol = solve(A, b)
    if sol is None:
        return None
    z = [0.0] * K
    for k, i in enumerate(free):
        z[i] = sol[k]
    return z


def nash_bargaining(A: Matrix, max_iter: int, tol: float) -> list[float] | None:
    """:func:`polytask.balancing.solvers.nash_bargaining`'s damped Newton on f(w) = ½wᵀAw − Σ log w for
    A already divided by its mean diagonal; the unscaled solution u with A u = 1/u, or None where that
    function would stop (divergence, a singular Newton system, no convergence)."""
    try:
        return _nash_newton(A, max_iter, tol)
    except (ValueError, OverflowError, ZeroDivisionError):  # log or division at a non-positive iterate
        return None


def _nash_newton(A: Matrix, max_iter: int, tol: float) -> list[float] | None:
    K = len(A)
    total = sum(sum(row) for row in A) / K
    w = [1.0 / math.sqrt(max(total, 1e-12))] * K

    def f(v: list[float]) -> float:
        return 0.5 * dot(v, matvec(A, v)) - sum(math.log(a) for a in v)

    value = f(w)
    for _ in range(max_iter):
        Aw = matvec(A, w)
        grad = [a - 1.0 / v for a, v in zip(Aw, w)]
        if max(abs(g * v) for g, v in zip(grad, w)) < tol:
            return w
        if max(w) > 1e8:
            return None
        hessian = [[A[i][j] + (1.0 / w[i] ** 2 if i == j else 0.0) for j in range(K)] for i in range(K)]
        step = solve(hessian, [-g for g in grad])
        if step is None:
            return None
        t = 1.0
        limits = [-v / s for v, s in zip(w, step) if s < 0]
        if limits:
            t = min(1.0, 0.99 * min(limits))
        slope = dot(grad, step)
        if -slope < 1e-12 and t == 1.0:
            w = [v + s for v, s in zip(w, step)]
            value = f(w)
            continue
        while True:
            cand = [v + t * s for v, s in zip(w, step)]
            new = f(cand)
            if new <= value + 1e-4 * t * slope or t < 1e-12:
                break
            t *= 0.5
        w, value = cand, new
    return None


def cagrad_dual(A: Matrix, b: list[float], s: float, max_iter: int = 100) -> list[float] | None:
    """CAGrad's dual min_{w ∈ Δ} bᵀw + s √(wᵀAw) (A = G scaled, b = A1/K, s = √φ scaled) by an active-set
    Newton method from the uniform point: Newton steps with Armijo backtracking on the current face of
    the simplex (the equality Σw = 1 by its KKT system), a step that reaches the face's boundary drops
    that task, and a task whose gradient entry is below the face's multiplier joins. The minimiser to
    round-off, or None (singular Newton system, ‖Jᵀw‖ near 0 where the objective is not smooth, no
    convergence) so that the caller uses SLSQP."""
    K = len(b)
    w = [1.0 / K] * K
    free = list(range(K))
    floor = 1e-10 * math.sqrt(max(max(A[i][i] for i in range(K)), 1e-300))

    def value(v: list[float]) -> float | None:
        rho2 = dot(v, matvec(A, v))
        return None if rho2 <= floor * floor else dot(b, v) + s * math.sqrt(rho2)

    current = value(w)
    for _ in range(max_iter):
        if current is None:
            return None
        Aw = matvec(A, w)
        rho = math.sqrt(dot(w, Aw))
        grad = [bi + s * a / rho for bi, a in zip(b, Aw)]
        m = len(free)
        kkt = [
            [s * (A[i][j] / rho - Aw[i] * Aw[j] / rho**3) for j in free] + [1.0] for i in free
        ] + [[*([1.0] * m), 0.0]]
        sol = solve(kkt, [*(-grad[i] for i in free), 0.0])
        if sol is None:
            return None
        step = sol[:m]
        decrement = -sum(grad[i] * d for i, d in zip(free, step))
        lam = sum(grad[i] for i in free) / m
        if decrement <= 1e-15 * (1.0 + abs(current)):  # optimal on this face: does a task want in?
            if max(abs(grad[i] - lam) for i in free) > 1e-8 * (1.0 + max(abs(g) for g in grad)):
                return None  # a tiny Newton decrement away from the optimum: the kink at Jᵀw = 0 is near
            outside = [i for i in range(K) if i not in free and grad[i] < lam - 1e-12 * (1.0 + abs(lam))]
            if not outside:
                return [max(v, 0.0) for v in w]
            # the entering task: a backtracking step towards its vertex (slope grad_j − gradᵀw < 0), so that
            # it starts the next Newton steps inside the face
            j = min(outside, key=lambda i: grad[i])
            slope, t = grad[j] - dot(grad, w), 1.0
            while True:
                cand = [(1.0 - t) * v for v in w]
                cand[j] += t
                new = value(cand)
                if new is not None and new <= current + 1e-4 * t * slope:
                    break
                t *= 0.5
                if t < 1e-12:
                    return None
            free.append(j)
            w, current = cand, new
            continue
        limits = [(-w[i] / d, i) for i, d in zip(free, step) if d < 0]
        reach = min(limits)[0] if limits else math.inf
        t = min(1.0, reach)
        while True:
            cand = list(w)
            for i, d in zip(free, step):
                cand[i] += t * d
            new = value(cand)
            if new is not None and new <= current - 1e-4 * t * decrement:
                break
            t *= 0.5
            if t < 1e-12:
                return None
        if t == reach:  # the step reached the boundary: the blocking task leaves the face
            blocking = min(limits)[1]
            cand[blocking] = 0.0
            free.remove(blocking)
        w, current = cand, new
    return None
