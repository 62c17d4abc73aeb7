"""The direct per-task gradient engine (polytask.balancing.direct) against autograd's vmapped backward."""

import itertools

import pytest
import torch
from torch import nn

import polytask as pt
from polytask.balancing import direct
from polytask.balancing import jacobian as jac
from polytask.errors import PolytaskError


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _both(losses, inputs, must_use=0):
    """Per-task gradients from the direct engine and from the vmapped backward, on the same graph."""
    d, used = jac.task_gradients(losses, inputs, "direct", retain_graph=True, must_use=must_use)
    b, _ = jac.task_gradients(losses, inputs, "batched", retain_graph=True, must_use=must_use)
    assert used == "direct"
    return d, b


def _assert_same(d, b):
    for x, y in zip(d, b):
        assert x.shape == y.shape
        assert torch.allclose(x, y, atol=1e-12, rtol=1e-10), (x - y).abs().max()


def _assert_direct_equals_vmap_under_linear_heads(z, shared_params, n_tasks=3):
    """``n_tasks`` linear heads on the shared output z with squared-error losses: the direct engine's
    per-task gradients of the shared parameters and the heads equal the vmapped backward's."""
    heads = nn.ModuleList(nn.Linear(z.shape[-1], 1) for _ in range(n_tasks))
    losses = torch.stack([(hd(z)[..., 0] - k).pow(2).mean() for k, hd in enumerate(heads)])
    _assert_same(*_both(losses, [*shared_params, *heads.parameters()]))


def _mlp(activation, bias=True, dropout=0.0):
    layers = [nn.Linear(6, 9, bias=bias), activation(), nn.Linear(9, 7, bias=bias), activation()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh, nn.Sigmoid])
@pytest.mark.parametrize("bias", [True, False])
def test_direct_equals_vmap_on_mlps(activation, bias):
    torch.manual_seed(0)
    trunk = _mlp(activation, bias)
    heads = nn.ModuleList(nn.Sequential(nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, 1)) for _ in range(3))
    z = trunk(torch.randn(8, 6))
    losses = torch.stack([(h(z)[:, 0] - k).pow(2).mean() for k, h in enumerate(heads)])
    _assert_same(*_both(losses, [*trunk.parameters(), *heads.parameters()]))


def test_direct_handles_dropout_matmul_and_scaled_addmm():
    torch.manual_seed(1)
    trunk = _mlp(nn.ReLU, dropout=0.3).train()
    W = nn.Parameter(torch.randn(7, 4))  # used as x @ W (no transpose)
    b = nn.Parameter(torch.randn(4))
    z = trunk(torch.randn(8, 6))
    h = torch.relu(torch.addmm(b, z @ torch.eye(7), W, beta=0.5, alpha=2.0))
    losses = torch.stack([h[:, k].pow(2).mean() for k in range(3)])
    _assert_same(*_both(losses, [*trunk.parameters(), W, b]))


def test_direct_rows_of_parameters_one_task_reaches_and_a_head_two_tasks_share():
    torch.manual_seed(2)
    trunk = _mlp(nn.ReLU)
    shared_head = nn.Linear(7, 1)  # both tasks read the same head: it belongs to the shared part
    only_first = nn.Parameter(torch.randn(1))  # a parameter only task 0 uses
    out = shared_head(trunk(torch.randn(8, 6)))
    losses = torch.stack([(out * only_first - 1).pow(2).mean(), (out + 2).abs().mean()])
    inputs = [*trunk.parameters(), *shared_head.parameters(), only_first]
    d, b = _both(losses, inputs)
    _assert_same(d, b)
    assert d[-1][1].abs().max() == 0 and d[-1][0].abs().max() > 0  # task 1's row of only_first is zero


def test_direct_carries_a_head_that_reads_a_tensor_shared_layers_read_too():
    """Task 0's head and a head shared by tasks 1, 2 both read z: phase 1 cannot stop at z without running
    the shared head, so task 0's head joins the shared part (its K rows carried, tasks 1 and 2 zero)."""
    torch.manual_seed(2)
    trunk, head0, shared_head = _mlp(nn.ReLU), nn.Linear(7, 1), nn.Linear(7, 1)
    z = trunk(torch.randn(8, 6))
    out = shared_head(z)
    losses = torch.stack([head0(z).pow(2).mean(), (out - 1).pow(2).mean(), (out + 2).abs().mean()])
    inputs = [*trunk.parameters(), *head0.parameters(), *shared_head.parameters()]
    d, b = _both(losses, inputs)
    _assert_same(d, b)
    assert d[4][1:].abs().max() == 0 and d[4][0].abs().max() > 0  # head 0's weight: task 0's row only
    # head 0's parameters come from the carried rows, not from a second pass through head 0 in phase 1
    graph = direct._Graph(jac._task_outputs(losses), [direct._slot(p) for p in inputs])
    assert not graph.head_slots and not graph.unsupported


def test_direct_gradient_of_the_representation_and_a_constant_loss():
    torch.manual_seed(3)
    trunk = _mlp(nn.ReLU)
    heads = nn.ModuleList(nn.Linear(7, 1) for _ in range(2))
    z = trunk(torch.randn(8, 6))
    losses = torch.stack([heads[0](z).pow(2).mean(), heads[1](z).abs().mean(), torch.tensor(0.5)])
    d, b = _both(losses, [z, *heads.parameters()], must_use=1)
    _assert_same(d, b)
    assert d[0][2].abs().max() == 0


def test_direct_factored_gramian_and_update_equal_the_per_parameter_route():
    torch.manual_seed(4)
    trunk = nn.Sequential(nn.Linear(6, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU())
    heads = nn.ModuleList(nn.Linear(40, 1) for _ in range(3))
    x, w = torch.randn(8, 6), torch.tensor([0.2, 0.5, 0.3])

    def jacobian(engine, factored):
        z = trunk(x)
        losses = torch.stack([(h(z)[:, 0] - k).pow(2).mean() for k, h in enumerate(heads)])
        return jac.task_jacobian(losses, list(trunk.parameters()), list(heads.parameters()), engine, factored)

    J0, h0, _ = jacobian("batched", "never")
    J1, h1, used = jacobian("direct", "always")
    assert used == "direct" and J1.factored
    assert torch.allclose(J0.gramian(), J1.gramian(), rtol=1e-10)
    _assert_same(J1.combine(w), J0.combine(w))
    _assert_same(h1, h0)


class _Cumsum(nn.Module):
    """A layer the direct engine has no rule for (a cumulative sum along the features)."""

    def forward(self, x):
        return x.cumsum(-1)


def test_direct_declines_graphs_it_does_not_handle():
    torch.manual_seed(5)
    odd_trunk = nn.Sequential(nn.Linear(6, 7), _Cumsum())
    z = odd_trunk(torch.randn(8, 6))
    losses = torch.stack([z[:, k].pow(2).mean() for k in range(3)])
    params = list(odd_trunk.parameters())
    assert "no rule for: CumsumBackward0" in direct.per_task_gradients(jac._task_outputs(losses), params, True)
    with pytest.raises(PolytaskError, match="direct gradient engine does not handle"):
        jac.task_gradients(losses, params, "direct", retain_graph=True)
    grads, _ = jac.task_gradients(losses, params, "batched", retain_graph=True)
    _assert_same(grads, jac.task_gradients(losses, params, "loop")[0])
    # z feeds the heads and a shared layer: the heads' selections join the shared part, whose cumulative
    # sum has no rule
    trunk, mix = _mlp(nn.ReLU), nn.Linear(7, 7)
    z = trunk(torch.randn(8, 6))
    m = mix(z).cumsum(-1)
    losses = torch.stack([(z[:, 0] + m[:, 1]).pow(2).mean(), (z[:, 2] * m[:, 3]).mean()])
    inputs = [*trunk.parameters(), *mix.parameters()]
    assert "no rule for: CumsumBackward0" in direct.per_task_gradients(jac._task_outputs(losses), inputs, True)
    # losses that are not a stack of scalars
    z = trunk(torch.randn(8, 6))
    reason = jac._direct(z[:, :3].pow(2).mean(0), list(trunk.parameters()), True)
    assert reason == "the losses are not a stack of scalars"


def test_direct_traverses_each_head_once():
    torch.manual_seed(6)
    trunk = _mlp(nn.ReLU)
    heads = nn.ModuleList(nn.Linear(7, 1) for _ in range(4))
    z = trunk(torch.randn(8, 6))
    outs = [h(z) for h in heads]
    calls = []
    for o in outs:
        o.grad_fn.register_hook(lambda gi, go: calls.append(1))
    losses = torch.stack([o.pow(2).mean() for o in outs])
    jac.task_gradients(losses, list(trunk.parameters()) + list(heads.parameters()), "direct")
    assert len(calls) == 4  # one backward per head; the vmapped engine runs every head for all 4 rows


def test_balancers_take_the_same_step_with_the_direct_engine():
    torch.manual_seed(7)
    for method in ("mgda", "upgrad", "pcgrad", "imtl", "graddrop", "mgda_ub"):
        steps = []
        for engine in ("direct", "batched"):
            torch.manual_seed(8)
            trunk = _mlp(nn.ReLU)
            heads = nn.ModuleList(nn.Linear(7, 1) for _ in range(3))
            z = trunk(torch.randn(8, 6))
            losses = torch.stack([(h(z)[:, 0] - k).pow(2).mean() for k, h in enumerate(heads)])
            balancer = pt.balancing.create(method, tasks=3, engine=engine)
            torch.manual_seed(9)
            balancer.backward(losses, list(trunk.parameters()), representation=z)
            assert balancer.engine_used == engine
            steps.append([p.grad.clone() for p in [*trunk.parameters(), *heads.parameters()]])
        _assert_same(*steps)


def _many_task_step(method, engine, trunk_factory, n_tasks, steps=1):
    """``steps`` backward calls of one balancer on an MLP trunk with ``n_tasks`` linear heads: the
    gradients of the last step, and the balancer."""
    torch.manual_seed(10)
    trunk = trunk_factory()
    heads = nn.ModuleList(nn.Linear(7, 1) for _ in range(n_tasks))
    balancer = pt.balancing.create(method, tasks=n_tasks, engine=engine)
    x = torch.randn(8, 6)
    for _ in range(steps):
        for p in [*trunk.parameters(), *heads.parameters(), *balancer.parameters()]:
            p.grad = None
        z = trunk(x)
        losses = torch.stack([(h(z)[:, 0] - k).pow(2).mean() for k, h in enumerate(heads)])
        balancer.backward(losses, list(trunk.parameters()), representation=z)
    return [p.grad.clone() for p in [*trunk.parameters(), *heads.parameters()]], balancer


@pytest.mark.parametrize("method", ["mgda", "upgrad", "gradnorm"])
def test_auto_uses_the_direct_engine_from_five_tasks_with_the_same_step(method):
    auto, balancer = _many_task_step(method, "auto", lambda: _mlp(nn.ReLU), 5)
    batched, _ = _many_task_step(method, "batched", lambda: _mlp(nn.ReLU), 5)
    if method != "gradnorm":
        assert balancer.engine_used == "direct"
    _assert_same(auto, batched)
    _, fewer = _many_task_step(method, "auto", lambda: _mlp(nn.ReLU), 4)
    if method != "gradnorm":
        assert fewer.engine_used == "batched"


@pytest.mark.parametrize("method", ["mgda", "gradnorm"])
def test_auto_stops_trying_the_direct_engine_once_it_declines_a_model(method, monkeypatch):
    attempts = []
    original = direct.per_task_gradients

    def counted(*args, **kwargs):
        attempts.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(direct, "per_task_gradients", counted)
    unsupported = lambda: nn.Sequential(nn.Linear(6, 7), _Cumsum(), nn.ReLU())  # noqa: E731
    grads, balancer = _many_task_step(method, "auto", unsupported, 5, steps=3)
    assert len(attempts) == 1  # declined on the first step, not tried again
    if method != "gradnorm":
        assert balancer.engine_used == "batched"
    _assert_same(grads, _many_task_step(method, "batched", unsupported, 5, steps=3)[0])


def _random_case(seed):
    """A random MLP trunk (1-3 layers, ReLU / in-place ReLU / tanh / sigmoid / GELU / SiLU / leaky ReLU,
    with or without bias, LayerNorm or BatchNorm, and dropout), 5-6 heads of depth 0-2, and per-task MSE,
    L1 or cross-entropy losses."""
    g = torch.Generator().manual_seed(seed)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    def activation():
        return pick(
            [nn.ReLU, lambda: nn.ReLU(inplace=True), nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, lambda: nn.LeakyReLU(0.1)]
        )()

    torch.manual_seed(seed)
    widths = [6] + [int(torch.randint(3, 9, (1,), generator=g)) for _ in range(pick([1, 2, 3]))]
    layers = []
    for a, b in itertools.pairwise(widths):
        norm = pick([None, None, nn.LayerNorm, nn.BatchNorm1d])
        layers += [nn.Linear(a, b, bias=pick([True, False])), norm(b) if norm else nn.Identity(), activation()]
    if pick([True, False]):
        layers.append(nn.Dropout(0.2))
    trunk = nn.Sequential(*layers).train()
    n_tasks, heads, losses = pick([5, 6]), nn.ModuleList(), []
    for _ in range(n_tasks):
        depth, width, outputs = pick([0, 1, 2]), widths[-1], pick([1, 3])
        head = []
        for _ in range(depth):
            head += [nn.Linear(width, 4), activation()]
            width = 4
        heads.append(nn.Sequential(*head, nn.Linear(width, outputs)))
        losses.append(pick(["mse", "l1"]) if outputs == 1 else "ce")
    x, labels, y = torch.randn(10, 6), torch.randint(3, (10,)), torch.randn(10, 1)
    z = trunk(x)
    terms = {
        "mse": lambda o: (o - y).pow(2).mean(),
        "l1": lambda o: (o - y).abs().mean(),
        "ce": lambda o: nn.functional.cross_entropy(o, labels),
    }
    stacked = torch.stack([terms[kind](h(z)) for kind, h in zip(losses, heads)])
    return stacked, [*trunk.parameters(), *heads.parameters()]


@pytest.mark.parametrize("seed", range(16))
def test_auto_with_many_tasks_equals_the_loop_on_random_mlps(seed):
    """Where auto takes the direct engine (5+ tasks, a supported graph) it gives the loop's numbers."""
    losses, params = _random_case(seed)
    auto, used = jac.task_gradients(losses, params, "auto", retain_graph=True)
    loop, _ = jac.task_gradients(losses, params, "loop")
    assert used == "direct"
    _assert_same(auto, loop)


@pytest.mark.parametrize(
    "activation",
    [
        lambda: nn.LeakyReLU(0.1),
        lambda: nn.LeakyReLU(0.1, inplace=True),
        nn.GELU,
        lambda: nn.GELU("tanh"),
        nn.SiLU,
        lambda: nn.ELU(0.7),
        lambda: nn.ELU(0.7, inplace=True),
        lambda: nn.Softplus(beta=2.0, threshold=1.0),
    ],
)
def test_direct_equals_vmap_on_more_activations(activation):
    torch.manual_seed(11)
    trunk = _mlp(activation)
    heads = nn.ModuleList(nn.Linear(7, 1) for _ in range(3))
    z = trunk(torch.randn(8, 6) * 2)
    losses = torch.stack([(h(z)[:, 0] - k).pow(2).mean() for k, h in enumerate(heads)])
    _assert_same(*_both(losses, [*trunk.parameters(), *heads.parameters()]))


def test_direct_equals_vmap_on_residual_blocks_and_broadcast_sums():
    torch.manual_seed(12)
    first, block, skip = nn.Linear(6, 7), nn.Sequential(nn.Linear(7, 7), nn.ReLU(), nn.Linear(7, 7)), nn.Linear(7, 7)
    shift = nn.Parameter(torch.randn(7))  # a shared vector added to every row: broadcast in the sum
    h = torch.relu(first(torch.randn(8, 6)))
    h = torch.relu(h + block(h))  # residual connection
    z = torch.tanh(torch.sub(h, skip(h), alpha=0.5) + shift)
    _assert_direct_equals_vmap_under_linear_heads(
        z, [*first.parameters(), *block.parameters(), *skip.parameters(), shift]
    )


def test_the_direct_engine_error_names_the_operation_it_has_no_rule_for():
    torch.manual_seed(5)
    trunk = nn.Sequential(nn.Linear(6, 7), _Cumsum())
    z = trunk(torch.randn(8, 6))
    losses = torch.stack([z[:, k].pow(2).mean() for k in range(3)])
    with pytest.raises(PolytaskError, match="no rule for: CumsumBackward0"):
        jac.task_gradients(losses, list(trunk.parameters()), "direct", retain_graph=True)
    with pytest.raises(PolytaskError, match="not a stack of scalars"):
        jac.task_gradients(z[:, :3].pow(2).mean(0), list(trunk.parameters()), "direct")


def test_direct_equals_vmap_through_shape_and_mixing_operations():
    """Shared layers that stack, concatenate, reshape, permute, transpose, sum, softmax-gate and batch-
    multiply (the pieces of mixture-of-experts models), with negative dimensions where PyTorch allows."""
    torch.manual_seed(13)
    experts = nn.ModuleList(nn.Linear(6, 4) for _ in range(3))
    gate, mix = nn.Linear(6, 3, bias=False), nn.Parameter(torch.randn(2, 4, 4))
    x = torch.randn(8, 6)
    stacked = torch.stack([torch.relu(e(x)) for e in experts], dim=-2)  # (8, 3, 4)
    weights = torch.softmax(gate(x), dim=-1).unsqueeze(-1)  # one gate shared by every task
    pooled = (stacked * weights).sum(dim=-2)  # (8, 4)
    wide = torch.cat([pooled, stacked.reshape(8, 12)], dim=-1)  # (8, 16)
    paired = wide.view(8, 2, 2, 4).permute(1, 2, 0, 3).reshape(2, 16, 4)  # a 3-cycle: not its own inverse
    mixed = torch.bmm(paired, mix).transpose(0, 1).flatten(1)  # (16, 8)
    column = pooled.sum(dim=1, keepdim=True).unsqueeze(0).sum(0)  # (8, 1) -> (1, 8, 1) -> (8, 1)
    z = torch.tanh(mixed + mixed.sum() * 1e-3 + column.sum() * 1e-2).squeeze()
    heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(3))
    losses = torch.stack([(h(z)[:, 0] - k).pow(2).mean() for k, h in enumerate(heads)])
    params = [*experts.parameters(), *gate.parameters(), mix, *heads.parameters()]
    _assert_same(*_both(losses, params))


@pytest.mark.parametrize("arch", ["mmoe", "omoe", "cgc", "ple", "shared_bottom"])
def test_direct_equals_vmap_on_the_recommender_models(arch):
    data = pt.data.create("mmoe_synthetic", n_train=64, n_val=8, n_test=8)
    torch.manual_seed(14)
    model = pt.models.create(arch, tasks=data.tasks, input_shape=data.input_shape)
    x, y = data.train.inputs[:16].double(), {k: v[:16].double() for k, v in data.train.targets.items()}
    losses = pt.tasks.compute_losses(data.tasks, model(x), y)
    stacked = torch.stack([losses[t.name] for t in data.tasks])
    heads = [p for t in data.tasks for p in model.task_parameters(t.name)]
    _assert_same(*_both(stacked, [*model.shared_parameters(), *heads]))


@pytest.mark.parametrize("arch", ["mmoe", "ple", "shared_bottom"])
def test_direct_equals_vmap_on_recommenders_with_embedding_tables(arch):
    from polytask.features import CategoricalField, FeatureSpec

    spec = FeatureSpec((CategoricalField("user", 10, 4), CategoricalField("item", 20, 6)), ("price",))
    tasks = [pt.Task(f"t{k}", "binary") for k in range(3)]
    torch.manual_seed(15)
    model = pt.models.create(arch, tasks=tasks, input_shape=spec)
    ids = torch.stack([torch.randint(0, 12, (16,)), torch.randint(0, 20, (16,))], 1)  # some ids out of range
    out = model({"categorical": ids, "numerical": torch.randn(16, 1)})
    bce = nn.functional.binary_cross_entropy_with_logits
    losses = torch.stack([bce(out[t.name][:, 0], torch.rand(16)) for t in tasks])
    heads = [p for t in tasks for p in model.task_parameters(t.name)]
    _assert_same(*_both(losses, [*model.shared_parameters(), *heads]))


def test_direct_embedding_rule_skips_the_padding_row_and_declines_frequency_scaling():
    torch.manual_seed(16)
    ids = torch.tensor([[0, 1, 1], [2, 0, 3]])
    for options, handled in (({"padding_idx": 0}, True), ({"scale_grad_by_freq": True}, False)):
        table = nn.Embedding(5, 3, **options)
        z = table(ids).sum(1)  # (2, 3)
        losses = torch.stack([z[:, 0].pow(2).sum(), (z[:, 1] * z[:, 2]).sum()])
        if handled:
            d, b = _both(losses, [table.weight])
            _assert_same(d, b)
            assert d[0][:, 0].abs().max() == 0
        else:
            assert "scale_grad_by_freq" in jac._direct(losses, [table.weight], True)


def _randomised(module: nn.Module) -> nn.Module:
    """``module`` with random affine parameters (and running statistics), so that no term is trivially 0/1."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
        if isinstance(module, nn.BatchNorm1d) and module.running_mean is not None:
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    return module


NORMS = {
    "layer": lambda: nn.LayerNorm(7),
    "layer without affine": lambda: nn.LayerNorm(7, elementwise_affine=False),
    "layer without bias": lambda: nn.LayerNorm(7, bias=False),
    "batch, training": lambda: nn.BatchNorm1d(7).train(),
    "batch, eval": lambda: nn.BatchNorm1d(7).eval(),
    "batch without affine": lambda: nn.BatchNorm1d(7, affine=False).train(),
    "batch without running statistics": lambda: nn.BatchNorm1d(7, track_running_stats=False).eval(),
}


@pytest.mark.parametrize("positions", [False, True])
@pytest.mark.parametrize("norm", list(NORMS))
def test_direct_equals_vmap_through_normalisation_layers(norm, positions):
    """LayerNorm and BatchNorm1d (in training mode each task's row is differentiated through the batch
    statistics; in eval mode through the running ones) in a residual MLP block, on (batch, features) and
    (batch, positions, features) inputs."""
    torch.manual_seed(20)
    first, second = nn.Linear(6, 7), nn.Linear(7, 7)
    norm1, norm2 = _randomised(NORMS[norm]()), _randomised(NORMS[norm]())
    batch_norm = isinstance(norm1, nn.BatchNorm1d)

    def normalise(module, h):  # BatchNorm1d wants the channels on axis 1
        return module(h.transpose(1, 2)).transpose(1, 2) if batch_norm and positions else module(h)

    x = torch.randn(8, 5, 6) if positions else torch.randn(8, 6)
    h = nn.functional.gelu(normalise(norm1, first(x)))
    z = normalise(norm2, second(h)) + h
    params = [*first.parameters(), *second.parameters(), *norm1.parameters(), *norm2.parameters()]
    _assert_direct_equals_vmap_under_linear_heads(z, params)


def test_direct_equals_vmap_through_slices_selections_means_expansions_and_divisions():
    torch.manual_seed(21)
    first, left, right = nn.Linear(6, 8), nn.Linear(4, 5), nn.Linear(3, 5)
    scale = nn.Parameter(torch.rand(5) + 0.5)
    h = torch.tanh(first(torch.randn(8, 6)))
    a = left(h[:, ::2])  # a strided slice
    b = right(h[:, -4:-1])  # negative bounds
    z = a / scale + (-b) / 3 + h[:, 5:6].expand(8, 5) * h.mean(1, keepdim=True) + h[-1, :5] + h.mean()
    z = torch.sigmoid(z + h[:, 2].mean(0))  # a selected column, averaged over the batch
    _assert_direct_equals_vmap_under_linear_heads(
        z, [*first.parameters(), *left.parameters(), *right.parameters(), scale]
    )


def test_direct_equals_vmap_when_heads_select_from_a_tensor_a_shared_layer_reads():
    torch.manual_seed(5)
    trunk, mix = _mlp(nn.ReLU), nn.Linear(7, 7)
    z = trunk(torch.randn(8, 6))
    m = mix(z)
    losses = torch.stack([(z[:, 0] + m[:, 1]).pow(2).mean(), (z[:, 2] * m[:, 3]).mean()])
    _assert_same(*_both(losses, [*trunk.parameters(), *mix.parameters()]))
