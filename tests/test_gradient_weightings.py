"""Gradient methods as functions of the Gram matrix: values worked out by hand and properties on
random, rank-deficient, zero and badly scaled Jacobians."""

import numpy as np
import pytest
import torch

from polytask.balancing import gramian_weightings as gw
from polytask.balancing import solvers
from polytask.balancing.gradient import graddrop_combine
from polytask.errors import SolverError


def gram(J):
    J = np.asarray(J, dtype=np.float64)
    return J @ J.T


# ------------------------------------------------------------------------------ values by hand
def test_mgda_two_tasks_closed_form_and_frank_wolfe_agree():
    # g1 = (2, 0), g2 = (0, 1): γ = (G22 − G12)/(G11 + G22 − 2G12) = 1/5 -> w = (0.2, 0.8), d = (0.4, 0.8)
    J = np.array([[2.0, 0.0], [0.0, 1.0]])
    w = gw.mgda_weights(gram(J))
    assert w == pytest.approx([0.2, 0.8])
    d = J.T @ w
    assert d == pytest.approx([0.4, 0.8])
    assert J @ d == pytest.approx([0.8, 0.8])  # interior min-norm point: equal inner products = ‖d‖²
    # Frank–Wolfe on K = 3 (g1 repeated) reaches the same d; so does the exact active-set QP
    J3 = np.array([[2.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    for solver in ("frank_wolfe", "active_set"):
        assert J3.T @ gw.mgda_weights(gram(J3), solver=solver) == pytest.approx([0.4, 0.8], abs=1e-5)


def test_mgda_frank_wolfe_matches_exact_qp_on_random_problems():
    rng = np.random.default_rng(0)
    for _ in range(20):
        J = rng.normal(size=(4, 6))
        G = gram(J)
        fw = solvers.min_norm_frank_wolfe(G, max_iter=100_000, tol=1e-12)
        exact = gw.mgda_weights(G, solver="active_set")
        # run to a tight tolerance, Frank–Wolfe converges (sublinearly) to the exact min-norm point
        assert exact @ G @ exact <= fw @ G @ fw + 1e-12
        assert fw @ G @ fw == pytest.approx(exact @ G @ exact, rel=1e-3)
        # with the reference stopping rule (Σ|Δw| < 1e-5) it stops early but never below the optimum
        assert exact @ G @ exact <= (lambda w: w @ G @ w)(gw.mgda_weights(G, solver="frank_wolfe")) + 1e-12


def test_pcgrad_two_conflicting_vectors():
    # g1 = (1, 0), g2 = (−1, 1), g1·g2 = −1 < 0:
    # g1' = g1 − (−1/2) g2 = (0.5, 0.5); g2' = g2 − (−1/1) g1 = (0, 1); d = (0.5, 1.5) = 2 g1 + 1.5 g2
    J = np.array([[1.0, 0.0], [-1.0, 1.0]])
    w = gw.pcgrad_weights(gram(J), orders=[[1], [0]])
    assert w == pytest.approx([2.0, 1.5])
    assert J.T @ w == pytest.approx([0.5, 1.5])
    # no conflict: plain sum
    assert gw.pcgrad_weights(gram([[1.0, 0.0], [1.0, 1.0]]), orders=[[1], [0]]) == pytest.approx([1.0, 1.0])


def test_cagrad_two_tasks_by_hand():
    c = 0.4
    # symmetric g1 = e1, g2 = e2: by symmetry w = (½, ½), g_w = g0, ‖g0‖ = √½;
    # d = g0 + c‖g0‖/‖g_w‖ g_w = (1 + c) g0, divided by 1 + c²
    J = np.eye(2)
    d = J.T @ gw.cagrad_weights(gram(J), c=c)
    assert d == pytest.approx(np.full(2, 0.5 * (1 + c) / (1 + c**2)), abs=1e-6)
    # g1 = (1, 0), g2 = (0, 3): with w = (a, 1−a), F(a) = (9 − 8a)/2 + c‖g0‖ √(a² + 9(1−a)²) has
    # F'(a) = −4 + c‖g0‖ (10a − 9)/√(...) < 0 on [0, 1] (c‖g0‖ = 0.632 and the ratio is ≤ 1), so w = (1, 0),
    # g_w = g1 and d = (g0 + c‖g0‖ g1)/(1 + c²) with g0 = (0.5, 1.5), ‖g0‖ = √2.5
    J = np.array([[1.0, 0.0], [0.0, 3.0]])
    d = J.T @ gw.cagrad_weights(gram(J), c=c)
    expected = (np.array([0.5, 1.5]) + c * np.sqrt(2.5) * np.array([1.0, 0.0])) / (1 + c**2)
    assert d == pytest.approx(expected, abs=1e-5)
    # c = 0 is the mean gradient
    assert J.T @ gw.cagrad_weights(gram(J), c=0.0) == pytest.approx([0.5, 1.5], abs=1e-6)


def test_gradvac_one_update_by_hand():
    # g1 ⟂ g2 (φ = 0), targets φ̂ = 0.5: correction ‖g_i‖(0.5·1 − 0)/(‖g_j‖ √0.75) = 1/√3, which makes
    # cos(g1', g2) exactly 0.5; then φ̂ ← 0.99·0.5 + 0.01·0 = 0.495
    J = np.eye(2)
    w, targets = gw.gradvac_weights(gram(J), np.full((2, 2), 0.5), orders=[[1], [0]], beta=0.01)
    assert w == pytest.approx([1 + 1 / np.sqrt(3)] * 2)
    g1 = J[0] + J[1] / np.sqrt(3)
    assert g1 @ J[1] / np.linalg.norm(g1) == pytest.approx(0.5)
    assert targets[0, 1] == pytest.approx(0.495) and targets[1, 0] == pytest.approx(0.495)
    # target 0 and orthogonal gradients: nothing to do, targets stay 0
    w, targets = gw.gradvac_weights(gram(J), np.zeros((2, 2)), orders=[[1], [0]])
    assert w == pytest.approx([1.0, 1.0]) and np.all(targets == 0)


def test_graddrop_with_a_fixed_draw():
    # P = ½(1 + Σ∇/Σ|∇|) = (1, 0.5, 0.75); U = (0.3, 0.6, 0.8)
    # unit 1: P > U keeps positives (1 + 1); unit 2: P < U keeps negatives (−2); unit 3: P < U keeps −1
    grads = torch.tensor([[[1.0, -2.0, 3.0]], [[1.0, 2.0, -1.0]]])
    U = torch.tensor([[0.3, 0.6, 0.8]])
    assert graddrop_combine(grads, U).tolist() == [[2.0, -2.0, -1.0]]
    assert graddrop_combine(grads, U, leak=1.0).tolist() == [[2.0, 0.0, 2.0]]  # full leak: the plain sum
    # leak 0.5: ½ plain + ½ masked
    assert graddrop_combine(grads, U, leak=0.5).tolist() == [[2.0, -1.0, 0.5]]


def test_upgrad_matches_torchjd_published_value():
    J = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    # TorchJD's published d uses its regularisation (G/tr G + 1e-4 I)
    d = J.T @ gw.upgrad_weights(gram(J), norm_eps=1e-4, reg_eps=1e-4)
    assert d == pytest.approx([0.2929, 1.9004, 1.9004], abs=1e-4)
    # the exact definition by hand: G = [[18, −22], [−22, 38]]; w^(1) = (1, 22/38), w^(2) = (22/18, 1),
    # w = mean = (10/9, 30/38); d = Jᵀw = (−40/9 + 180/38, 10/9 + 30/38, same)
    w = gw.upgrad_weights(gram(J))
    assert w == pytest.approx([10 / 9, 30 / 38])
    assert J.T @ w == pytest.approx([-40 / 9 + 180 / 38, 10 / 9 + 30 / 38, 10 / 9 + 30 / 38])


def test_imtl_g_two_tasks_by_hand():
    # g1 = (1, 0), g2 = (0, 2): equal projections on u1 = e1, u2 = e2 with w1 + w2 = 1:
    # w1·1 = w2·2 -> w = (2/3, 1/3), d = (2/3, 2/3)
    J = np.array([[1.0, 0.0], [0.0, 2.0]])
    w = gw.imtl_g_weights(gram(J))
    assert w == pytest.approx([2 / 3, 1 / 3])


def test_nash_two_orthogonal_tasks_by_hand():
    # G = diag(a, b): G w = 1/w -> w_k = 1/√G_kk
    w = gw.nash_mtl_weights(np.diag([4.0, 0.25]))
    assert w == pytest.approx([0.5, 2.0])


def test_nash_raises_when_no_bargaining_solution():
    with pytest.raises(SolverError, match="no w > 0"):
        gw.nash_mtl_weights(gram([[1.0, 0.0], [-1.0, 0.0]]))  # opposite gradients


# ------------------------------------------------------------------------------ properties
def jacobians():
    rng = np.random.default_rng(1)
    out = []
    for K, P in [(2, 5), (3, 10), (5, 20)]:
        out.append(("random", rng.normal(size=(K, P))))
    out.append(("rank_deficient", rng.normal(size=(4, 2)) @ rng.normal(size=(2, 8))))
    out.append(("duplicate_rows", np.repeat(rng.normal(size=(1, 6)), 3, axis=0)))
    out.append(("zero", np.zeros((3, 7))))
    scales = np.array([1e-8, 1.0, 1e8])[:, None]
    out.append(("badly_scaled", scales * rng.normal(size=(3, 9))))
    return out


DETERMINISTIC = {
    "mgda": lambda G: gw.mgda_weights(G, solver="active_set"),
    "upgrad": lambda G: gw.upgrad_weights(G),
    "imtl_g": gw.imtl_g_weights,
    "aligned_mtl": gw.aligned_mtl_weights,
    "cagrad": lambda G: gw.cagrad_weights(G, 0.4),
    "nash_mtl": gw.nash_mtl_weights,
}


@pytest.mark.parametrize("kind,J", jacobians(), ids=[k for k, _ in jacobians()])
def test_every_weighting_gives_finite_weights(kind, J):
    G = gram(J)
    K = len(G)
    orders = [[j for j in range(K) if j != i] for i in range(K)]
    results = {
        "mgda_fw": gw.mgda_weights(G),
        "pcgrad": gw.pcgrad_weights(G, orders),
        "gradvac": gw.gradvac_weights(G, np.zeros((K, K)), orders)[0],
        **{name: None for name in DETERMINISTIC},
    }
    for name, fn in DETERMINISTIC.items():
        try:
            results[name] = fn(G)
        except SolverError:
            # only Nash may refuse, and only when the bargaining problem has no solution
            assert name == "nash_mtl" and kind in ("rank_deficient", "badly_scaled")
            results.pop(name)
    for name, w in results.items():
        assert np.all(np.isfinite(w)), (name, w)
        assert np.all(np.isfinite(J.T @ w)), name


@pytest.mark.parametrize("kind,J", jacobians(), ids=[k for k, _ in jacobians()])
def test_mgda_and_upgrad_never_conflict(kind, J):
    G = gram(J)
    scale = float(np.diag(G).max())
    candidates = {"mgda": gw.mgda_weights(G), "upgrad": gw.upgrad_weights(G)}
    if kind in ("random", "duplicate_rows"):
        # Frank–Wolfe converges sublinearly: when the min-norm point is 0 (rank deficient) or the scales
        # differ by 1e16 its stopping rule leaves small conflicts; the exact default solver has none
        candidates["mgda_frank_wolfe"] = gw.mgda_weights(G, solver="frank_wolfe")
    for name, w in candidates.items():
        d = J.T @ w
        # J d ≥ 0 up to round-off, measured against each task's own scale ‖g_k‖‖d‖ (and ‖J‖² for d ≈ 0)
        tol = 1e-9 * (np.sqrt(np.diag(G)) * np.linalg.norm(d) + 1e-6 * scale)
        assert np.all(J @ d >= -tol), (name, kind, J @ d)


@pytest.mark.parametrize("kind,J", [j for j in jacobians() if j[0] in ("random", "badly_scaled")])
def test_imtl_g_equal_projections(kind, J):
    if J.shape[0] > J.shape[1]:
        return
    w = gw.imtl_g_weights(gram(J))
    d = J.T @ w
    u = J / np.linalg.norm(J, axis=1, keepdims=True)
    proj = u @ d
    assert w.sum() == pytest.approx(1.0)
    assert np.abs(proj - proj[0]).max() <= 1e-6 * np.linalg.norm(d)


@pytest.mark.parametrize("kind,J", jacobians(), ids=[k for k, _ in jacobians()])
def test_aligned_mtl_equal_singular_values(kind, J):
    G = gram(J)
    B = gw.aligned_mtl_transform(G)
    s = np.linalg.svd(B @ J, compute_uv=False)
    s = s[s > 1e-9 * max(s.max(), 1e-300)]
    if kind == "zero":
        assert s.size == 0
        return
    lam = np.linalg.eigvalsh(G)
    lam_min = lam[lam > lam.max() * len(G) * np.finfo(float).eps].min()
    assert s == pytest.approx(np.full(len(s), np.sqrt(lam_min)), rel=1e-6)


@pytest.mark.parametrize("kind,J", jacobians(), ids=[k for k, _ in jacobians()])
def test_nash_solution_satisfies_g_w_equals_one_over_w(kind, J):
    G = gram(J)
    try:
        w = gw.nash_mtl_weights(G)
    except SolverError:
        # allowed only when no solution exists: then some non-negative combination of gradients is 0
        assert kind in ("rank_deficient", "badly_scaled")
        return
    assert np.all(w > 0)
    active = np.diag(G) > 0  # tasks with a zero gradient do not bargain
    if not active.any():
        return
    Ga = G[np.ix_(active, active)]
    assert Ga @ w[active] == pytest.approx(1 / w[active], rel=1e-6)


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_weightings_are_permutation_invariant(name):
    rng = np.random.default_rng(3)
    J = rng.normal(size=(4, 9))
    perm = np.array([2, 0, 3, 1])
    w = DETERMINISTIC[name](gram(J))
    w_perm = DETERMINISTIC[name](gram(J[perm]))
    assert w_perm == pytest.approx(w[perm], rel=1e-5, abs=1e-8)


def test_box_qp_matches_brute_force_on_the_simplex():
    rng = np.random.default_rng(5)
    grid = [
        (a, b, 1 - a - b) for a in np.linspace(0, 1, 201) for b in np.linspace(0, 1 - a, max(2, int(200 * (1 - a)) + 1))
    ]
    grid = np.array(grid)
    for _ in range(3):
        G = gram(rng.normal(size=(3, 4)))
        w = solvers.box_qp(G, np.zeros(3), simplex=True)
        best = np.einsum("ni,ij,nj->n", grid, G, grid).min()
        assert w @ G @ w <= best + 1e-12
        assert w.sum() == pytest.approx(1.0) and np.all(w >= 0)
