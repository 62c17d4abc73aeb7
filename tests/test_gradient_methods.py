"""Gradient balancers end to end: engines, rep-grad mode, task-specific parameters, GradNorm by hand,
solver failures and bad input."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import polytask as pt
from polytask.balancing import jacobian as jac
from polytask.errors import PolytaskError, SolverError

TASKS = ["a", "b", "c"]
GRADIENT_METHODS = [
    m for m in pt.balancing.available() if m not in ("ew", "uw", "gls", "dwa", "dtp", "lbtw", "rlw", "famo", "imtl_l")
]


class TinyHPS(nn.Module):
    """A 2-layer shared encoder and one linear head per task (3 regression tasks)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6), nn.Tanh())
        self.heads = nn.ModuleDict({t: nn.Linear(6, 1) for t in TASKS})

    def forward(self, x):
        self.representation = self.encoder(x)
        return {t: h(self.representation)[:, 0] for t, h in self.heads.items()}

    def task_groups(self):
        return {t: list(h.parameters()) for t, h in self.heads.items()}


def batch(seed=0, n=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = {t: torch.randn(n, generator=g) * (k + 1) for k, t in enumerate(TASKS)}
    return x, y


def losses_of(model, x, y):
    out = model(x)
    return torch.stack([((out[t] - y[t]) ** 2).mean() for t in TASKS])


def step_grads(method, engine, rep_grad=False, seed=0, **kw):
    torch.manual_seed(seed)
    model = TinyHPS()
    options = dict(kw)
    if method not in ("gradnorm", "graddrop"):
        options["rep_grad"] = rep_grad
    balancer = pt.balancing.create(method, tasks=TASKS, engine=engine, **options)
    x, y = batch()
    torch.manual_seed(123)  # same random draws (PCGrad orders, GradDrop masks) for both engines
    w = balancer.backward(
        losses_of(model, x, y),
        shared_params=list(model.encoder.parameters()),
        task_params=model.task_groups(),
        representation=model.representation,
    )
    return model, w, [p.grad.clone() for p in model.parameters()]


def test_registry_has_every_gradient_method():
    expected = {"gradnorm", "mgda", "mgda_ub", "pcgrad", "cagrad", "nash_mtl", "imtl_g", "imtl", "graddrop"}
    expected |= {"gradvac", "aligned_mtl", "upgrad"}
    assert expected <= set(pt.balancing.available())


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_batched_and_loop_engines_agree(method):
    _, w1, g1 = step_grads(method, "batched")
    _, w2, g2 = step_grads(method, "loop")
    assert torch.allclose(w1, w2, atol=1e-6)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-6)


REP_METHODS = [m for m in GRADIENT_METHODS if m != "gradnorm"]


@pytest.mark.parametrize("method", REP_METHODS)
def test_rep_grad_mode_trains_the_encoder(method):
    model, _, _ = step_grads(method, "auto", rep_grad=True)
    for p in model.encoder.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, method
    before = [p.detach().clone() for p in model.encoder.parameters()]
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.encoder.parameters()))


def test_rep_grad_engines_agree_and_encoder_gets_the_backward_of_z():
    # MGDA-UB: encoder gradient = (∂z/∂θ)ᵀ Σ_k w_k ∂L_k/∂z = ∇θ Σ_k w_k L_k with the same w
    _model, w, grads = step_grads("mgda_ub", "batched")
    torch.manual_seed(0)
    ref = TinyHPS()
    x, y = batch()
    (w.detach() * losses_of(ref, x, y)).sum().backward()
    for p, g in zip(ref.parameters(), grads):
        assert torch.allclose(p.grad, g, atol=1e-6)


def test_heads_get_their_own_gradient_times_the_weight():
    model, w, _grads = step_grads("mgda", "auto")
    torch.manual_seed(0)
    ref = TinyHPS()
    x, y = batch()
    losses = losses_of(ref, x, y)
    for k, t in enumerate(TASKS):
        own = torch.autograd.grad(losses[k], list(ref.heads[t].parameters()), retain_graph=True)
        for p, g in zip(model.heads[t].parameters(), own):
            assert torch.allclose(p.grad, w[k] * g, atol=1e-6)
    # PCGrad defines no task weights: heads get the plain gradient
    model, _, _ = step_grads("pcgrad", "auto")
    for k, t in enumerate(TASKS):
        own = torch.autograd.grad(losses[k], list(ref.heads[t].parameters()), retain_graph=True)
        for p, g in zip(model.heads[t].parameters(), own):
            assert torch.allclose(p.grad, g, atol=1e-6)


def test_shared_update_is_j_transpose_w():
    _model, w, grads = step_grads("upgrad", "auto")
    torch.manual_seed(0)
    ref = TinyHPS()
    x, y = batch()
    losses = losses_of(ref, x, y)
    shared = list(ref.encoder.parameters())
    J, _ = jac.task_gradients(losses, shared, retain_graph=True)
    for k, _p in enumerate(shared):
        assert torch.allclose(grads[k], torch.tensordot(w, J[k], dims=1), atol=1e-6)
    # and the non-conflict property on the real Jacobian
    d = torch.cat([grads[k].reshape(-1) for k in range(len(shared))])
    assert torch.all(jac.flatten(J) @ d >= -1e-7)


def test_task_params_found_from_the_graph_when_omitted():
    torch.manual_seed(0)
    model = TinyHPS()
    x, y = batch()
    balancer = pt.balancing.create("cagrad", tasks=TASKS)
    balancer.backward(losses_of(model, x, y), shared_params=list(model.encoder.parameters()))
    assert all(p.grad is not None for p in model.parameters())


def test_gradients_accumulate_like_backward():
    torch.manual_seed(0)
    model = TinyHPS()
    x, y = batch()
    balancer = pt.balancing.create("mgda", tasks=TASKS)
    for _ in range(2):
        balancer.backward(losses_of(model, x, y), shared_params=list(model.encoder.parameters()))
    twice = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    balancer.backward(losses_of(model, x, y), shared_params=list(model.encoder.parameters()))
    for a, p in zip(twice, model.parameters()):
        assert torch.allclose(a, 2 * p.grad, atol=1e-6)


def test_bad_input_errors_name_the_problem():
    torch.manual_seed(0)
    model = TinyHPS()
    x, y = batch()
    balancer = pt.balancing.create("mgda", tasks=TASKS)
    with pytest.raises(PolytaskError, match="shared_params"):
        balancer.backward(losses_of(model, x, y))
    ub = pt.balancing.create("mgda_ub", tasks=TASKS)
    with pytest.raises(PolytaskError, match="representation"):
        ub.backward(losses_of(model, x, y), shared_params=list(model.encoder.parameters()))
    stale = model.representation
    fresh_losses = losses_of(model, x, y)  # a new forward: the old z is not in this graph
    with pytest.raises(PolytaskError, match="representation"):
        ub.backward(fresh_losses, shared_params=list(model.encoder.parameters()), representation=stale)
    partial = {"a": list(model.heads["a"].parameters())}
    with pytest.raises(PolytaskError, match="neither shared_params nor task_params"):
        balancer.backward(losses_of(model, x, y), shared_params=list(model.encoder.parameters()), task_params=partial)
    with pytest.raises(PolytaskError, match="engine"):
        pt.balancing.create("pcgrad", tasks=TASKS, engine="fast")
    with pytest.raises(PolytaskError, match="leak"):
        pt.balancing.create("graddrop", tasks=TASKS, leak=2.0)
    with pytest.raises(PolytaskError, match="rep_grad"):  # GradNorm works on a weight matrix, not on z
        pt.balancing.create("gradnorm", tasks=TASKS, rep_grad=True)
    bad = losses_of(model, x, y) * torch.tensor([1.0, float("nan"), 1.0])
    with pytest.raises(pt.errors.NonFiniteLossError, match="b"):
        balancer.backward(bad, shared_params=list(model.encoder.parameters()))


def test_nash_failure_raises_or_is_reported_never_silent():
    class Opposite(nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = nn.Parameter(torch.tensor([[1.0]]))

    m = Opposite()
    balancer = pt.balancing.create("nash_mtl", tasks=["a", "b"])
    with pytest.raises(SolverError):
        balancer.backward(torch.stack([m.theta.sum(), -m.theta.sum()]), shared_params=[m.theta])
    keep = pt.balancing.create("nash_mtl", tasks=["a", "b"], on_failure="keep")
    m2 = Opposite()
    keep.backward(torch.stack([m2.theta.sum() * 2, m2.theta.sum() ** 2]), shared_params=[m2.theta])
    with pytest.warns(RuntimeWarning, match="using the previous weights"):
        keep.backward(torch.stack([m2.theta.sum(), -m2.theta.sum()]), shared_params=[m2.theta])
    assert keep.failures == 1


def test_gradnorm_one_update_by_hand():
    # W = [[1, 1]]; L_a = 2 W00 (∇_W = (2, 0)), L_b = 4 W01 + 10 (∇_W = (0, 4)); w = (1, 1)
    # G = (2, 4), Ḡ = 3; first step: r = 1 -> target (3, 3); ∂L_grad/∂w = sign(G − 3)·‖∇L‖ = (−2, 4)
    W = nn.Parameter(torch.tensor([[1.0, 1.0]]))
    balancer = pt.balancing.create("gradnorm", tasks=["a", "b"], alpha=1.5)
    losses = lambda: torch.stack([2 * W[0, 0], 4 * W[0, 1] + 10])  # noqa: E731
    w = balancer.backward(losses(), shared_params=[W])
    assert w.tolist() == [1.0, 1.0]
    assert balancer.loss_weights.grad.tolist() == [-2.0, 4.0]
    assert W.grad.tolist() == [[2.0, 4.0]]  # Σ w_k ∇L_k
    # SGD(lr 0.1) on w: (1.2, 0.6); renormalised to Σ w = 2 before the next step: (4/3, 2/3)
    torch.optim.SGD([balancer.loss_weights], lr=0.1).step()
    W.grad = None
    w = balancer.backward(losses(), shared_params=[W])
    assert w.tolist() == pytest.approx([4 / 3, 2 / 3])
    # second step: L = L(0) -> r = 1 again; G = (4/3·2, 2/3·4) = (8/3, 8/3) = Ḡ -> sign 0: no change
    assert balancer.loss_weights.grad.tolist() == pytest.approx([-2.0 + 0.0, 4.0 + 0.0])


def test_gradnorm_target_uses_relative_inverse_training_rates():
    # L(0) = (2, 10); now L = (1, 10): ratios (0.5, 1), r = (2/3, 4/3), α = 1 -> target = Ḡ r
    W = nn.Parameter(torch.tensor([[1.0, 1.0]]))
    balancer = pt.balancing.create("gradnorm", tasks=["a", "b"], alpha=1.0)
    balancer.backward(torch.stack([2 * W[0, 0], 0 * W[0, 1] + 10]), shared_params=[W])
    balancer.loss_weights.grad = None
    balancer.backward(torch.stack([1 * W[0, 0], 3 * W[0, 1] + 7]), shared_params=[W])
    # norms (1, 3), G = (1, 3), Ḡ = 2, target = (4/3, 8/3): G_a < target, G_b > target -> (−1, +3)
    assert balancer.loss_weights.grad.tolist() == [-1.0, 3.0]


def test_gradnorm_initial_loss_is_the_first_positive_one():
    # step 1: task b has no labelled sample (loss 0): L_b(0) is not set and b's ratio is 0, not 0/0
    W = nn.Parameter(torch.tensor([[1.0, 1.0]]))
    balancer = pt.balancing.create("gradnorm", tasks=["a", "b"], alpha=1.0)
    balancer.backward(torch.stack([2 * W[0, 0], 0 * W[0, 1]]), shared_params=[W])
    assert balancer.initial == [2.0, None]
    # norms (2, 0), G = (2, 0), Ḡ = 1, ratios (1, 0) -> r = (2, 0), target (2, 0): sign 0 both
    assert balancer.loss_weights.grad.tolist() == [0.0, 0.0]
    balancer.loss_weights.grad = None
    # step 2: L_b(0) = 10 from this batch; L = (1, 10): ratios (0.5, 1) as in the test above
    balancer.backward(torch.stack([1 * W[0, 0], 3 * W[0, 1] + 7]), shared_params=[W])
    assert balancer.initial == [2.0, 10.0]
    # norms (1, 3), G = (1, 3), Ḡ = 2, r = (2/3, 4/3), target = (4/3, 8/3) -> (−1, +3)
    assert balancer.loss_weights.grad.tolist() == [-1.0, 3.0]


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_every_gradient_method_trains_with_the_trainer(method, tiny_data, tmp_path):
    pt.seed_everything(0)
    model = pt.models.create("hps_mlp", tasks=tiny_data.tasks, input_shape=tiny_data.input_shape)
    balancer = pt.balancing.create(method, tasks=[t.name for t in tiny_data.tasks])
    trainer = pt.Trainer(
        model, tiny_data.tasks, balancer, tiny_data.train, tiny_data.val, epochs=1, progress=False, out_dir=tmp_path
    )
    result = trainer.fit()
    assert np.isfinite(result.history[0]["selection_score"]) or result.best_epoch == 1
    assert all(np.isfinite(v) for v in result.history[0]["weights"].values())


@pytest.mark.parametrize("scale", [1.0, 1e22])
def test_nash_mtl_clips_the_shared_update_to_max_norm(scale):
    """‖d‖ over all shared parameters is clipped to max_norm (1.0, the reference's), direction kept, however
    the losses are scaled (d = Jᵀw has ‖d‖² = K at the Nash solution)."""
    torch.manual_seed(0)
    shared = [torch.nn.Parameter(torch.randn(5, 4)), torch.nn.Parameter(torch.randn(4))]
    x = torch.randn(6, 5)
    z = torch.relu(x @ shared[0] + shared[1])
    losses = torch.stack([scale * z[:, 0].sum(), scale * z[:, 1].sum() + scale * z[:, 2].sum()])
    free = pt.balancing.create("nash_mtl", tasks=2, max_norm=0.0)
    free.backward(losses, shared)
    d = [p.grad.double().clone() for p in shared]
    for p in shared:
        p.grad = None
    z = torch.relu(x @ shared[0] + shared[1])
    losses = torch.stack([scale * z[:, 0].sum(), scale * z[:, 1].sum() + scale * z[:, 2].sum()])
    pt.balancing.create("nash_mtl", tasks=2).backward(losses, shared)
    clipped = [p.grad.double() for p in shared]
    norm = torch.sqrt(sum((g**2).sum() for g in d))
    assert norm == pytest.approx(2**0.5, rel=1e-6)  # ‖d‖² = wᵀGw = Σ_k w_k (1/w_k) = K
    assert torch.sqrt(sum((g**2).sum() for g in clipped)) == pytest.approx(1.0, rel=1e-5)
    for a, b in zip(clipped, d):
        assert torch.allclose(a, b / norm, rtol=1e-4, atol=1e-12)


def test_non_finite_per_task_gradients_raise_a_clear_error():
    """Finite losses whose gradients are NaN (√(h²) at h = 0: the loss is 0, its derivative 0/0) give an
    error naming the problem, not weights silently computed from a NaN Gram matrix."""
    layer = torch.nn.Linear(4, 3)
    h = layer(torch.randn(6, 4)) * 0.0
    z = torch.sqrt(h * h)
    losses = torch.stack([z[:, k].sum() for k in range(3)])
    assert torch.isfinite(losses).all()
    with pytest.raises(pt.NonFiniteGradientError, match="NaN or inf"):
        pt.balancing.create("mgda", tasks=3).backward(losses, list(layer.parameters()))


class _NumpyTanh(torch.autograd.Function):
    """tanh whose backward goes through NumPy: vmap cannot run it (no batching rule), the loop can."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return torch.from_numpy(g.numpy() * (1 - y.numpy() ** 2))


def _numpy_trunk_losses(seed=0):
    """A trunk whose middle layer vmap cannot run, so a vmapped backward fails part-way (after the top
    layers freed their buffers), and three squared-error task losses."""
    torch.manual_seed(seed)
    first, second = nn.Linear(6, 8), nn.Linear(8, 8)
    heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(3))
    x = torch.randn(16, 6)

    def losses():
        z = torch.relu(second(_NumpyTanh.apply(first(x))))
        return torch.stack([((h(z)[:, 0] - k) ** 2).mean() for k, h in enumerate(heads)])

    return [*first.parameters(), *second.parameters()], list(heads.parameters()), losses


@pytest.mark.parametrize("method", ["mgda", "upgrad", "gradnorm"])
def test_auto_falls_back_to_the_loop_when_vmap_fails_part_way(method):
    """The first step keeps the graph through the vmapped attempt, so the loop still runs on it (one
    warning); later steps go to the loop directly. The updates equal engine='loop''s."""
    grads = {}
    for engine in ("auto", "loop"):
        shared, heads, losses = _numpy_trunk_losses()
        options = {"layer": 0} if method == "gradnorm" else {}  # GradNorm's W: below the NumPy layer
        balancer = pt.balancing.create(method, tasks=3, engine=engine, **options)
        for step in range(2):
            for p in [*shared, *heads]:
                p.grad = None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                balancer.backward(losses(), shared)
            fell_back = [w for w in caught if "batched backward unavailable" in str(w.message)]
            assert len(fell_back) == (engine == "auto" and step == 0)
            if method != "gradnorm":
                assert balancer.engine_used == "loop"
        grads[engine] = [p.grad.clone() for p in [*shared, *heads]]
    for a, b in zip(grads["auto"], grads["loop"]):
        assert torch.allclose(a, b, atol=1e-7)


def test_a_part_way_vmap_failure_without_the_kept_graph_is_a_clear_error():
    shared, _, losses = _numpy_trunk_losses()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(PolytaskError, match=r"failed part-way.*pass engine='loop'"):
            jac.task_gradients(losses(), shared, "auto")
        grads, used = jac.task_gradients(losses(), shared, "auto", keep_for_fallback=True)
    assert used == "loop" and all(torch.isfinite(g).all() for g in grads)


def _compiled_encoder_losses(backend="aot_eager"):
    """An encoder compiled with ``backend``, three linear heads, and a function giving the stacked
    squared-error losses and z of a forward pass through the compiled or the plain encoder."""
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU())
    heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(3))
    x = torch.randn(32, 6)
    torch._dynamo.reset()
    compiled = torch.compile(encoder, backend=backend)

    def losses(compiled_encoder=True):
        z = (compiled if compiled_encoder else encoder)(x)
        return torch.stack([((h(z)[:, 0] - k) ** 2).mean() for k, h in enumerate(heads)]), z

    return encoder, heads, losses


def test_gradient_methods_refuse_compiled_code_that_several_tasks_cross():
    """Per-task gradients would run a compiled backward once per task; PyTorch does not support that
    reliably, so the step stops with an error that says what to do, for every method and engine."""
    encoder, heads, losses = _compiled_encoder_losses()
    shared = list(encoder.parameters())
    for method, options in [("mgda", {}), ("upgrad", {"engine": "loop"}), ("pcgrad", {}), ("gradnorm", {})]:
        stacked, _ = losses()
        with pytest.raises(PolytaskError, match=r"cross 1 torch.compile'd part.*rep_grad=True"):
            pt.balancing.create(method, tasks=3, **options).backward(stacked, shared)
    # rep-grad mode crosses the compiled encoder once (the combined backward of z): it runs, as in eager mode
    steps = []
    for compiled_encoder in (True, False):
        for p in [*shared, *heads.parameters()]:
            p.grad = None
        stacked, z = losses(compiled_encoder)
        pt.balancing.create("mgda", tasks=3, rep_grad=True).backward(stacked, shared, representation=z)
        steps.append([p.grad.clone() for p in [*shared, *heads.parameters()]])
    for a, b in zip(*steps):
        assert torch.allclose(a, b, atol=1e-6)
    stacked, _ = losses()
    pt.balancing.create("ew", tasks=3).backward(stacked)  # one backward: no per-task passes


@pytest.mark.slow
def test_the_loop_engine_names_donated_buffers_of_inductor_code():
    """Called directly on a graph with inductor code (donated buffers: its backward may run once), the
    engine's error says so instead of PyTorch's bare one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # with one thread inductor compiled this encoder without donated buffers
    try:
        encoder, _, losses = _compiled_encoder_losses("inductor")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(PolytaskError, match="donated buffers"):
                jac.task_gradients(losses()[0], list(encoder.parameters()), "loop")
    finally:
        torch.set_num_threads(threads)
        torch._dynamo.reset()


def test_the_first_step_frees_the_graph_it_kept_for_a_fallback():
    """The graph kept through the first vmapped attempt is freed once that attempt succeeds, as a plain
    backward would free it: this step's activations do not outlive it."""
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh())
    heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(3))
    balancer = pt.balancing.create("mgda", tasks=3, factored="never")
    z = encoder(torch.randn(16, 6))
    losses = torch.stack([((h(z)[:, 0] - k) ** 2).mean() for k, h in enumerate(heads)])
    balancer.backward(losses, list(encoder.parameters()))
    assert balancer.engine_used == "batched"
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        torch.autograd.grad(losses.sum(), list(encoder.parameters()))


@pytest.mark.parametrize("engine", ["auto", "batched", "loop", "direct"])
@pytest.mark.parametrize("method", ["mgda", "upgrad", "pcgrad", "gradnorm"])
def test_shared_parameters_the_losses_do_not_reach_are_an_error_not_a_silent_zero_update(method, engine):
    """A detached representation cuts the encoder off: the gradient methods would leave it untrained."""
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(6, 8), nn.Tanh())
    heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(3))
    z = encoder(torch.randn(16, 6)).detach()
    losses = torch.stack([((h(z)[:, 0] - k) ** 2).mean() for k, h in enumerate(heads)])
    balancer = pt.balancing.create(method, tasks=3, engine=engine)
    with pytest.raises(PolytaskError, match=r"shared parameter.* influences the losses"):
        balancer.backward(losses, list(encoder.parameters()))


def test_graddrop_with_full_leak_is_equal_weighting():
    """ℓ = 1 lets every task gradient through unmasked: the update is EW's, encoder and heads alike (and
    ℓ = 0 is not)."""
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
    heads = nn.ModuleList(nn.Linear(16, 1) for _ in range(3))
    x, ys = torch.randn(32, 8), torch.randn(3, 32)

    def grads(method, **options):
        enc.zero_grad(), heads.zero_grad()
        z = enc(x)
        losses = [((heads[k](z)[:, 0] - ys[k]) ** 2).mean() for k in range(3)]
        balancer = pt.balancing.create(method, tasks=3, **options)
        balancer.backward(losses, shared_params=list(enc.parameters()), representation=z)
        return [p.grad.clone() for p in [*enc.parameters(), *heads.parameters()]]

    ew = grads("ew")
    for a, b in zip(ew, grads("graddrop", leak=1.0)):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(ew[0], grads("graddrop", leak=0.0)[0], atol=1e-3)


@pytest.mark.parametrize("method", [*GRADIENT_METHODS, "gradnorm:layer0"])
def test_sparse_embedding_gradients_equal_dense_ones(method):
    """nn.Embedding(sparse=True), shared and task-specific: the same update as with dense gradients, and
    the tables' gradients stay sparse (what SparseAdam needs)."""
    name, _, layer = method.partition(":")
    options = {"layer": 0} if layer else {}

    def run(sparse):
        torch.manual_seed(0)
        table, lin = nn.Embedding(40, 6, sparse=sparse), nn.Linear(6, 8)
        own = nn.Embedding(40, 8, sparse=sparse)  # task a's own table
        heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(3))
        ids, ys = torch.randint(0, 40, (16,)), torch.randn(3, 16)
        z = torch.relu(lin(table(ids)))
        outs = [heads[0](z + own(ids)), heads[1](z), heads[2](z)]
        losses = {t: ((o[:, 0] - y) ** 2).mean() for t, o, y in zip(TASKS, outs, ys)}
        shared = [*table.parameters(), *lin.parameters()]
        task_params = {"a": [*own.parameters(), *heads[0].parameters()], "b": heads[1].parameters()}
        task_params["c"] = heads[2].parameters()
        torch.manual_seed(1)  # the same random draws (PCGrad's order, GradDrop's masks) in both runs
        balancer = pt.balancing.create(name, tasks=TASKS, **options)
        balancer.backward(losses, shared_params=shared, task_params=task_params, representation=z)
        return [table.weight.grad, own.weight.grad, lin.weight.grad, heads[0].weight.grad]

    dense, sparse = run(False), run(True)
    assert sparse[0].is_sparse and sparse[1].is_sparse
    for d, s in zip(dense, sparse):
        assert torch.allclose(d, s.to_dense(), atol=1e-6)


def test_sparse_embedding_gradients_are_refused_under_distributed(monkeypatch):
    table, head = nn.Embedding(10, 4, sparse=True), nn.Linear(4, 2)
    out = head(table(torch.tensor([1, 2, 3])))
    losses = torch.stack([out[:, 0].mean(), out[:, 1].mean()])
    monkeypatch.setattr(pt.balancing.jacobian, "world_size", lambda: 2)
    with pytest.raises(PolytaskError, match=r"nn.Embedding\(sparse=True\)\) are not supported under torch.distributed"):
        pt.balancing.jacobian.task_jacobian(losses, [table.weight], engine="loop")


def test_shared_parameter_errors_say_what_is_wrong():
    enc, head = nn.Linear(4, 4), nn.Linear(4, 2)
    out = head(enc(torch.randn(8, 4)))
    losses = lambda: [out[:, 0].mean(), out[:, 1].mean()]  # noqa: E731
    mgda = pt.balancing.create("mgda", tasks=2)
    with pytest.raises(PolytaskError, match=r"need shared_params=.*none were given"):
        mgda.backward(losses())
    with pytest.raises(PolytaskError, match="the list is empty"):
        mgda.backward(losses(), shared_params=iter([]))
    enc.requires_grad_(False)
    frozen = r"no shared parameter requires grad \(a frozen encoder\?\).*loss weighting"
    with pytest.raises(PolytaskError, match=frozen):
        mgda.backward(losses(), shared_params=enc.parameters())


@pytest.mark.parametrize("method", sorted(pt.balancing.available()))
def test_update_scales_with_a_common_loss_scale(method):
    """Scaling every loss by s (what fp16 loss scaling does before backward) scales every method's first
    update by s, so a GradScaler's unscale restores it, except Nash-MTL's: its d (G w = 1/w) does not
    depend on the losses' scale at all, so it must be used without loss scaling (README)."""

    def update(scale):
        torch.manual_seed(0)
        enc, heads = nn.Linear(6, 8), nn.Linear(8, 3)
        z = enc(torch.randn(32, 6))
        out = heads(z)
        losses = [scale * (out[:, k] - k).pow(2).mean() for k in range(3)]
        torch.manual_seed(1)  # the same random draws (PCGrad, RLW, GradDrop)
        balancer = pt.balancing.create(method, tasks=3)
        balancer.backward(losses, shared_params=list(enc.parameters()), representation=z)
        return enc.weight.grad

    expected = update(1.0) * (1.0 if method == "nash_mtl" else 1024.0)
    assert torch.allclose(update(1024.0), expected, rtol=1e-4, atol=1e-6)
