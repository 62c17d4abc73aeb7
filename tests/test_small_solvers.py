"""The pure-Python small-K solvers (polytask.balancing.small) against their NumPy versions."""

import numpy as np
import pytest

from polytask.balancing import gramian_weightings as gw
from polytask.balancing import small, solvers


def _gram(rng, K, rank=None, scales=None):
    J = rng.normal(size=(K if rank is None else rank, 10))
    if rank is not None:  # rank-deficient: K rows from `rank` independent ones
        J = rng.normal(size=(K, rank)) @ J
    if scales is not None:
        J = J * np.asarray(scales)[:, None]
    return J @ J.T


def test_solve_matches_numpy_and_declines_singular_systems():
    rng = np.random.default_rng(0)
    for K in range(1, 9):
        A, b = rng.normal(size=(K, K)), rng.normal(size=K)
        assert np.allclose(small.solve(A.tolist(), b.tolist()), np.linalg.solve(A, b), rtol=1e-9, atol=1e-12)
    singular = np.ones((3, 3))
    assert small.solve(singular.tolist(), [1.0, 2.0, 3.0]) is None
    assert small.solve([[0.0]], [1.0]) is None


@pytest.mark.parametrize("simplex", [True, False])
def test_box_qp_on_lists_equals_the_numpy_active_set(simplex):
    rng = np.random.default_rng(1)
    checked = declined = 0
    for K in range(2, 9):
        for trial in range(40):
            rank = K - 1 if trial % 4 == 0 else None
            Q = _gram(rng, K, rank)
            q = np.zeros(K) if simplex else rng.normal(size=K) * np.sqrt(np.trace(Q))
            expected = solvers._box_qp_numpy(Q, q, simplex, 1e-10, 200)
            fast = small.box_qp(Q.tolist(), q.tolist(), simplex, 1e-10, 200)
            if fast is None:
                declined += 1
                assert np.allclose(solvers.box_qp(Q, q, simplex), expected)  # the dispatcher falls back
                continue
            checked += 1
            assert np.allclose(fast, expected, rtol=1e-8, atol=1e-10), (K, trial)
    assert checked > 200


def test_nash_bargaining_on_lists_equals_the_numpy_newton():
    rng = np.random.default_rng(2)
    for K in range(2, 9):
        for _ in range(20):
            G = _gram(rng, K, scales=10.0 ** rng.uniform(-3, 3, size=K))
            A = G / (np.trace(G) / K)
            fast = small.nash_bargaining(A.tolist(), 100, 1e-9)
            assert fast is not None
            assert np.allclose(fast, solvers._nash_numpy(A, 100, 1e-9), rtol=1e-8)
            w = solvers.nash_bargaining(G)
            assert np.allclose(G @ w, 1 / w, rtol=1e-7)


def test_upgrad_on_lists_equals_the_numpy_projections(monkeypatch):
    rng = np.random.default_rng(3)
    cases = [_gram(rng, K, scales=10.0 ** rng.uniform(-8, 8, size=K)) for K in range(2, 9) for _ in range(10)]
    fast = [gw.upgrad_weights(G) for G in cases]
    monkeypatch.setattr(gw, "_upgrad_small", lambda G, u: None)
    for G, w in zip(cases, fast):
        assert np.allclose(w, gw.upgrad_weights(G), rtol=1e-7, atol=0)
    # the value worked out by hand (test_gradient_weightings) through the fast path
    monkeypatch.undo()
    J = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    assert np.allclose(gw._upgrad_small(J @ J.T, np.full(2, 0.5)), [10 / 9, 30 / 38], rtol=1e-12)


@pytest.mark.parametrize("weighting", [gw.nash_mtl_weights, gw.imtl_g_weights])
def test_cosine_based_weightings_on_lists_equal_their_numpy_versions(monkeypatch, weighting):
    rng = np.random.default_rng(4)
    cases = [_gram(rng, K, scales=10.0 ** rng.uniform(-8, 8, size=K)) for K in range(2, 9) for _ in range(10)]
    fast = [weighting(G) for G in cases]
    monkeypatch.setattr(gw, "_cosines_small", lambda G: None)
    for G, w in zip(cases, fast):
        assert np.allclose(w, weighting(G), rtol=1e-7, atol=0)


def _slsqp(G, c):
    """CAGrad's dual by SciPy's SLSQP alone (the reference implementation's solver)."""
    from scipy.optimize import minimize

    K = G.shape[0]
    A = G / (np.trace(G) / K)
    b, s = A.mean(axis=1), c * np.sqrt(A.mean())
    res = minimize(
        lambda w: float(w @ b + s * np.sqrt(w @ A @ w)),
        np.full(K, 1.0 / K),
        method="SLSQP",
        bounds=[(0.0, 1.0)] * K,
        constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0},),
        options={"ftol": 1e-12, "maxiter": 500},
    )
    return res.x, A, b, s


def _cagrad_objective(w, A, b, s):
    return w @ b + s * np.sqrt(w @ A @ w)


def test_cagrad_dual_newton_reaches_the_slsqp_minimum_and_its_kkt_conditions():
    rng = np.random.default_rng(5)
    solved = 0
    for K in range(2, 9):
        for c in (0.1, 0.4, 0.8):
            for _ in range(15):
                G = _gram(rng, K, scales=10.0 ** rng.uniform(-2, 2, size=K))
                ref, A, b, s = _slsqp(G, c)
                w = small.cagrad_dual(A.tolist(), b.tolist(), float(s))
                if w is None:
                    continue
                solved += 1
                w = np.array(w)
                assert w.min() >= 0 and abs(w.sum() - 1) < 1e-12
                assert _cagrad_objective(w, A, b, s) <= _cagrad_objective(ref, A, b, s) + 1e-10
                grad = b + s * A @ w / np.sqrt(w @ A @ w)
                lam = grad[w > 1e-9].mean()
                assert np.all(grad >= lam - 1e-7) and np.allclose(grad[w > 1e-9], lam, atol=1e-7)
                assert np.allclose(solvers.cagrad_dual(G, c), w)
    assert solved > 300


def test_cagrad_dual_hands_singular_problems_to_slsqp():
    J = np.array([[1.0, 2.0, 0.0], [-2.0, -4.0, 0.0], [0.0, 1.0, 1.0]])  # g_2 = −2 g_1: G is singular
    G = J @ J.T
    A = G / (np.trace(G) / 3)
    assert small.cagrad_dual(A.tolist(), A.mean(axis=1).tolist(), 0.4 * np.sqrt(A.mean())) is None
    w = solvers.cagrad_dual(G, 0.4)
    assert w.min() >= 0 and abs(w.sum() - 1) < 1e-9
