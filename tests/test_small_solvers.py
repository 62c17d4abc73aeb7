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
