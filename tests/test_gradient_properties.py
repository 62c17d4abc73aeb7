"""Property suite over every registered gradient method (issue 18): seeded Jacobians that are random,
rank-deficient, with a zero row, an opposite pair, more tasks than columns, whole-matrix scales
1e-10 … 1e15 and per-row scale spreads 1e-8 … 1e8, each in float32 and float64, run through the public
API (θ = 0, L_k = J_k·θ + 1, so the per-task gradients are the rows of J and d = θ.grad).

Checked: a finite update and no exception on finite input; J d ≥ −tol ‖g_k‖ ‖d‖ for the methods that
guarantee it; d = Jᵀw for the returned weights; permutation equivariance (deterministic methods);
homogeneity in the scale of J; float32 within a stated tolerance of float64 on well-conditioned input.
A method registered later is picked up here automatically."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import polytask as pt
from polytask.balancing.gradient import GradientBalancer

BALANCERS = pt.balancing.BALANCERS


def _parameter_mode_gradient_methods() -> list[str]:
    """Every registered gradient method that works on shared parameters (GradDrop is defined on a
    representation's activations only, and has its own tests)."""
    names = []
    for name in pt.balancing.available():
        cls = BALANCERS.get(name)
        if isinstance(cls, type) and issubclass(cls, GradientBalancer) and cls.parameter_mode is not None:
            names.append(name)
    return names


METHODS = _parameter_mode_gradient_methods()
RANDOM_ORDER = {"pcgrad", "gradvac"}  # draw random task orders: not permutation-equivariant per draw
# J d ≥ 0 guaranteed by the definition (CAGrad only with c ≥ 1)
NON_CONFLICTING = {"mgda": {}, "mgda_ub": {"rep_grad": False}, "upgrad": {}, "cagrad": {"c": 1.0}}
# degree of d in the scale s of J: d(sJ) = s^deg d(J) (Nash-MTL: ‖d‖² = wᵀGw = K whatever the scale)
DEGREE = {"nash_mtl": 0}
OPTIONS = {"nash_mtl": {"on_failure": "keep", "max_norm": 0.0}, "mgda_ub": {"rep_grad": False}}


def _matrices() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(18)
    P = 12
    random3 = rng.standard_normal((3, P))
    g = rng.standard_normal(P)
    out = {
        "random3": random3,
        "random5": rng.standard_normal((5, 30)),
        "rank_deficient": rng.standard_normal((4, 2)) @ rng.standard_normal((2, P)),
        "zero_row": np.vstack([rng.standard_normal((2, P)), np.zeros((1, P))]),
        "opposite_pair": np.vstack([g, -g, rng.standard_normal(P)]),
        "opposite_pair_alone": np.vstack([g, -g]),
        "norms_1e7_apart": np.diag([3e-4, 1.0, 3333.0]) @ rng.standard_normal((3, 4)),
        "more_tasks_than_columns": rng.standard_normal((5, 3)),
    }
    for s in (1e-10, 1e-5, 1e5, 1e10, 1e15):
        out[f"scale_{s:g}"] = s * random3
    for spread in (1e4, 1e8):
        out[f"row_spread_{spread:.0e}"] = np.diag(np.logspace(-np.log10(spread), np.log10(spread), 3)) @ random3
    return out


MATRICES = _matrices()


def step(name: str, J: np.ndarray, dtype: torch.dtype = torch.float64, **options) -> tuple[np.ndarray, np.ndarray]:
    """(d, w) of one backward of ``name`` on the per-task gradients J (rows), in ``dtype``."""
    Jt = torch.as_tensor(J, dtype=dtype)
    K, P = Jt.shape
    theta = torch.zeros(P, dtype=dtype, requires_grad=True)
    losses = Jt @ theta + 1
    balancer = pt.balancing.create(name, tasks=K, **{**OPTIONS.get(name, {}), **options})
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # Nash-MTL's reported failures in keep mode
        w = balancer.backward([losses[k] for k in range(K)], shared_params=[theta])
    grad = torch.zeros(P, dtype=dtype) if theta.grad is None else theta.grad
    return grad.double().numpy(), w.double().numpy()


def _exact(J: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """J as the method sees it (rounded to ``dtype``), in float64."""
    return torch.as_tensor(J, dtype=dtype).double().numpy()


def _tol(dtype: torch.dtype) -> float:
    return 1e-4 if dtype == torch.float32 else 1e-9


def test_the_suite_covers_every_gradient_method():
    expected = {"mgda", "cagrad", "nash_mtl", "imtl_g", "imtl", "aligned_mtl", "upgrad", "pcgrad", "gradvac"}
    assert expected <= set(METHODS)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", METHODS)
def test_finite_update_and_d_equals_J_transpose_w(name, dtype):
    for label, J in MATRICES.items():
        d, w = step(name, J, dtype)
        Je = _exact(J, dtype)
        assert np.all(np.isfinite(d)) and np.all(np.isfinite(w)), (label, d, w)
        # the returned weights are those of the update applied: d = Jᵀw
        scale = np.linalg.norm(Je, axis=1) @ np.abs(w)
        assert np.linalg.norm(d - Je.T @ w) <= _tol(dtype) * max(scale, 1e-300), (label, d, Je.T @ w)
        # bounded: no weight beyond what a bounded update needs (the audit's ±3.6e15)
        assert np.abs(w).max() < 1e6 / max(np.linalg.norm(Je, axis=1).min(), 1e-300) + 1e6, (label, w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", sorted(NON_CONFLICTING))
def test_no_conflict_where_the_method_guarantees_it(name, dtype):
    for label, J in MATRICES.items():
        d, _ = step(name, J, dtype, **NON_CONFLICTING[name])
        Je = _exact(J, dtype)
        norms = np.linalg.norm(Je, axis=1)
        # g_kᵀd ≥ −tol ‖g_k‖ ‖d‖ for every task, whatever its scale (plus the rounding of a d that is 0)
        rounding = 10 * torch.finfo(dtype).eps * np.linalg.norm(Je)
        assert np.all(Je @ d >= -_tol(dtype) * norms * np.linalg.norm(d) - norms * rounding), (label, Je @ d)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", [m for m in METHODS if m not in RANDOM_ORDER])
def test_permutation_equivariance(name, dtype):
    perm = np.array([2, 0, 1])
    for label in ("random3", "opposite_pair", "zero_row", "row_spread_1e+04"):
        J = MATRICES[label]
        d, _ = step(name, J, dtype)
        dp, _ = step(name, J[perm], dtype)
        scale = max(np.linalg.norm(d), 1e-300)
        assert np.linalg.norm(dp - d) <= 10 * _tol(dtype) * max(scale, np.linalg.norm(J)), (label, d, dp)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", METHODS)
def test_homogeneous_in_the_scale_of_J(name, dtype):
    J = MATRICES["random3"]
    d, _ = step(name, J, dtype)
    for s in (1e-10, 1e-5, 1e5, 1e10, 1e15):
        ds, _ = step(name, s * J, dtype)
        expected = s ** DEGREE.get(name, 1) * d
        assert np.linalg.norm(ds - expected) <= 10 * _tol(dtype) * np.linalg.norm(expected), (s, ds, expected)


@pytest.mark.parametrize("name", METHODS)
def test_float32_keeps_the_rank_of_a_rank_deficient_jacobian(name):
    """4 tasks spanning 2 directions: float32's rounding must not invent the 2 missing directions
    (‖d32 − d64‖ ≤ 1e-3 ‖d64‖, or both at rounding level)."""
    J = _exact(MATRICES["rank_deficient"], torch.float32)
    d32, _ = step(name, J, torch.float32)
    d64, _ = step(name, J, torch.float64)
    assert np.linalg.norm(d32 - d64) <= 1e-3 * np.linalg.norm(d64) + 1e-5 * np.linalg.norm(J), (d32, d64)


@pytest.mark.parametrize("name", METHODS)
def test_float32_within_tolerance_of_float64_on_well_conditioned_input(name):
    """Stated tolerance: ‖d32 − d64‖ ≤ 1e-4 ‖d64‖ on random J (cosines well inside (−1, 1))."""
    for label in ("random3", "random5"):
        J = _exact(MATRICES[label], torch.float32)  # the same matrix in both precisions
        d32, _ = step(name, J, torch.float32)
        d64, _ = step(name, J, torch.float64)
        assert np.linalg.norm(d32 - d64) <= 1e-4 * np.linalg.norm(d64), (label, d32, d64)


# ----------------------------------------------------------------- the audit's findings (issue 18), by hand
def _near_opposite(eps: float) -> np.ndarray:
    """g_2 = −g_1 + ε‖g_1‖ n (n ⟂ g_1, unit), g_3 = 0.3 h, P = 200."""
    rng = np.random.default_rng(0)
    g1, n, h = rng.standard_normal((3, 200))
    n -= (n @ g1) / (g1 @ g1) * g1
    n /= np.linalg.norm(n)
    return np.stack([g1, -g1 + eps * np.linalg.norm(g1) * n, 0.3 * h])


def test_cagrad_with_zero_in_the_hull_returns_the_maximiser_closest_to_g0():
    # J = [[1,0],[-1,0],[0,1]], c = 0.4: the maximum of min_k g_kᵀd over the ball is 0, reached by
    # d = (0, y), y ∈ [0.2, 0.467]; the closest to g_0 = (0, 1/3) is g_0 itself
    d, _ = step("cagrad", np.array([[1.0, 0], [-1, 0], [0, 1]]), c=0.4, rescale=0)
    assert d == pytest.approx([0.0, 1 / 3], abs=1e-12)
    # J = [[1,0],[-2,0]], c = 2: d = 0 is feasible (‖0 − g_0‖ = 0.5 ≤ 1) and the only non-conflicting d_x
    d, _ = step("cagrad", np.array([[1.0, 0], [-2, 0]]), c=2.0)
    assert d == pytest.approx([0.0, 0.0], abs=1e-12)


@pytest.mark.parametrize("eps", [1e-4, 1e-6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_cagrad_on_nearly_opposite_tasks_never_raises_and_stays_in_its_ball(eps, dtype):
    J = _near_opposite(eps)
    d, _ = step("cagrad", J, dtype, rescale=0)
    Je = _exact(J, dtype)
    g0 = Je.mean(axis=0)
    assert np.linalg.norm(d - g0) <= 0.4 * np.linalg.norm(g0) * (1 + 1e-4)  # the constraint of the primal
    if dtype == torch.float64:
        d32, _ = step("cagrad", J, torch.float32, rescale=0)
        assert np.linalg.norm(d32) <= 1.1 * np.linalg.norm(d)  # the audit's float32 ‖d‖ was 600x


def test_imtl_g_on_opposite_gradients_gives_d_zero_with_bounded_weights():
    g = np.random.default_rng(1).standard_normal(5)
    for dtype in (torch.float32, torch.float64):
        d, w = step("imtl_g", np.stack([g, -g]), dtype)
        assert w == pytest.approx([0.5, 0.5], abs=1e-6)  # equal projections: d·u = −d·u, so d ⟂ g
        assert np.linalg.norm(d) <= 1e-6 * np.linalg.norm(g)


def test_imtl_g_and_aligned_mtl_cut_the_rank_at_the_gradients_precision():
    rng = np.random.default_rng(2)
    a, b = np.linalg.qr(rng.standard_normal((200, 2)))[0].T
    for angle in (1e-4, 1e-5):  # two tasks this many radians apart, norms 1 and 3
        J = np.stack([a, 3 * (np.cos(angle) * a + np.sin(angle) * b)])
        Je = _exact(J, torch.float32)
        d32, _ = step("imtl_g", Je, torch.float32)
        d64, _ = step("imtl_g", Je, torch.float64)
        assert np.linalg.norm(d32 - d64) <= 1e-3 * np.linalg.norm(d64), angle
    J = rng.standard_normal((4, 2)) @ rng.standard_normal((2, 200))  # 4 tasks spanning 2 directions
    Je = _exact(J, torch.float32)
    d32, _ = step("aligned_mtl", Je, torch.float32)
    d64, _ = step("aligned_mtl", Je, torch.float64)
    assert np.linalg.norm(d32 - d64) <= 1e-4 * np.linalg.norm(d64)


def test_mgda_is_exact_when_gradient_norms_differ_by_1e7():
    B = np.array([[1, 2, -1, 0.5], [-0.5, 1, 2, 0], [0.3, -1, 0.2, 1.5]])
    J = np.diag([3e-4, 1, 3333]) @ B
    d, _ = step("mgda", J)
    # the exact min-norm point has equal J d on its support, here every task: 5.17e-7 (1, 1, 1)
    assert J @ d == pytest.approx([5.17e-7] * 3, rel=2e-3)
    assert np.all(J @ d >= d @ d * (1 - 1e-9))  # J d ≥ ‖d‖² (the min-norm point's optimality)


def test_nash_mtl_keep_mode_at_the_first_step_and_clipped_weights():
    J = np.array([[1.0, 0.0], [-1.0, 0.0]])  # 0 in the hull at the very first step
    with pytest.raises(pt.errors.SolverError):
        step("nash_mtl", J, on_failure="raise")
    Jt = torch.as_tensor(J)
    theta = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    losses = Jt @ theta + 1
    keep = pt.balancing.create("nash_mtl", tasks=2, on_failure="keep")
    with pytest.warns(RuntimeWarning, match="initial weights 1"):
        w = keep.backward([losses[0], losses[1]], shared_params=[theta])
    assert keep.failures == 1 and w.tolist() == [1.0, 1.0]  # the reference's α = 1; d = 0 here
    # G = 100 I: w_k = 1/10 (G w = 1/w), d = (1, 1), clipped to norm 1, so the applied weights are 1/(10√2)
    d, w = step("nash_mtl", np.array([[10.0, 0.0], [0.0, 10.0]]), max_norm=1.0)
    assert np.linalg.norm(d) == pytest.approx(1.0)
    assert w == pytest.approx([0.1 / np.sqrt(2)] * 2) and d == pytest.approx(10 * w)


def test_graddrop_raises_on_a_non_finite_task_gradient():
    z = torch.ones(4, 3, requires_grad=True)
    losses = [torch.sqrt(z - 1).sum(), z.sum()]  # finite loss 0, infinite gradient
    balancer = pt.balancing.create("graddrop", tasks=2)
    with pytest.raises(pt.errors.NonFiniteGradientError):
        balancer.backward(losses, representation=z)


def test_the_rounding_level_follows_the_gradients_precision():
    from polytask.balancing.jacobian import TaskJacobian

    theta = torch.zeros(400)
    f32 = TaskJacobian([theta], [torch.zeros(3, 400)])
    eps32, eps16 = torch.finfo(torch.float32).eps, torch.finfo(torch.bfloat16).eps
    assert f32.gram_noise() == pytest.approx(eps32 * 20)  # √400 products
    assert TaskJacobian([theta], [torch.zeros(3, 400, dtype=torch.float64)]).gram_noise() < 1e-14
    # float32 gradients of a bfloat16 forward (autocast): bfloat16's precision, not float32's
    assert f32.gram_noise(torch.bfloat16) == pytest.approx(8 * eps16)
    assert TaskJacobian([theta], [torch.zeros(3, 400, dtype=torch.bfloat16)]).gram_noise() == pytest.approx(8 * eps16)
