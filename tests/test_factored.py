"""Linear layers held in factored form (inputs X, output gradients δ_k): the same Gramian and update as
the per-parameter route, and only where every use of the weight is a recognised linear node."""

import pytest
import torch
from torch import nn

import polytask as pt
from polytask.balancing import factored as fac
from polytask.balancing import jacobian as jac

K = 3


class Net(nn.Module):
    """Shared layers exercising every recognised form: Linear with and without bias, x @ W, a Linear on
    (B, T, in) inputs, and one Linear called twice; plus a tied weight used outside its Linear."""

    def __init__(self, tie: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(6, 9)
        self.b = nn.Linear(9, 7, bias=False)
        self.w = nn.Parameter(torch.randn(7, 5) * 0.3)  # used as x @ W
        self.seq = nn.Linear(5, 4)  # on a (B, T, 5) tensor
        self.twice = nn.Linear(4, 4)
        self.tie = tie
        self.heads = nn.ModuleList(nn.Linear(4, 1) for _ in range(K))

    def shared(self):
        return [p for n, p in self.named_parameters() if not n.startswith("heads")]

    def losses(self, x):
        h = torch.tanh(self.b(torch.tanh(self.a(x))))
        h = torch.tanh(h @ self.w)
        seq = torch.tanh(self.seq(h.unsqueeze(1).expand(-1, 3, -1) * torch.linspace(0.5, 1.5, 3).view(1, 3, 1)))
        z = torch.tanh(self.twice(seq.mean(1))) + torch.tanh(self.twice(h[:, :4]))
        out = []
        for k, head in enumerate(self.heads):
            loss = ((head(z)[:, 0] - (k + 1.0)) ** 2).mean()
            if self.tie and k == 0:
                loss = loss + 0.1 * (self.a.weight**2).sum()  # a's weight is used outside its Linear
            out.append(loss)
        return torch.stack(out)


def both_routes(net, x, engine="batched", weights=None):
    w = torch.tensor([0.7, -0.2, 1.3]) if weights is None else weights
    results = []
    for mode in ("never", "always"):
        losses = net.losses(x)
        J, _, _ = jac.task_jacobian(losses, net.shared(), [], engine=engine, factored=mode)
        results.append((J, J.gramian(), J.combine(w)))
    return results


def test_every_recognised_form_is_factored_and_tied_weights_are_not():
    net = Net(tie=True)
    losses = net.losses(torch.randn(8, 6))
    blocks = {id(b.weight): b for b in fac.find_linear_blocks(losses, net.shared())}
    assert id(net.b.weight) in blocks and blocks[id(net.b.weight)].bias is None
    assert blocks[id(net.w)].transposed
    assert blocks[id(net.seq.weight)].rows == 8 * 3 and blocks[id(net.seq.weight)].bias is net.seq.bias
    assert len(blocks[id(net.twice.weight)].uses) == 2
    assert id(net.a.weight) not in blocks  # tied: also used by the penalty
    untied = Net(tie=False)
    blocks = {id(b.weight): b for b in fac.find_linear_blocks(untied.losses(torch.randn(8, 6)), untied.shared())}
    assert blocks[id(untied.a.weight)].bias is untied.a.bias


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("engine", ["batched", "loop"])
def test_factored_gramian_and_update_equal_the_dense_ones(tie, engine):
    net = Net(tie=tie).double()
    (J0, G0, d0), (J1, G1, d1) = both_routes(net, torch.randn(8, 6, dtype=torch.float64), engine)
    assert not J0.factored and len(J1.factored) == (4 if tie else 5)
    assert torch.allclose(G0, G1, rtol=1e-10, atol=1e-12)
    for a, b in zip(d0, d1):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_scaled_jacobian_is_the_jacobian_of_the_scaled_losses():
    net = Net().double()
    x = torch.randn(8, 6, dtype=torch.float64)
    s = torch.tensor([2.0, 0.5, 3.0], dtype=torch.float64)
    J, _, _ = jac.task_jacobian(net.losses(x), net.shared(), factored="always")
    ref, _, _ = jac.task_jacobian(net.losses(x) * s, net.shared(), factored="never")
    assert torch.allclose(J.scaled(s).gramian(), ref.gramian(), rtol=1e-10)


def test_auto_factors_wide_layers_only():
    enc = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 256))
    z = enc(torch.randn(128, 64))
    losses = torch.stack([z[:, k].pow(2).mean() for k in range(K)])
    blocks = fac.select_blocks(fac.find_linear_blocks(losses, list(enc.parameters())), K, "auto")
    assert {tuple(b.weight.shape) for b in blocks} == {(512, 512), (256, 512)}
    assert fac.select_blocks(fac.find_linear_blocks(losses, list(enc.parameters())), K, "never") == []


GRAMIAN_METHODS = ["mgda", "pcgrad", "cagrad", "nash_mtl", "imtl_g", "imtl", "gradvac", "aligned_mtl", "upgrad"]


@pytest.mark.parametrize("method", GRAMIAN_METHODS)
def test_balancers_take_the_same_step_with_and_without_factoring(method):
    grads = []
    for mode in ("never", "always"):
        net = Net()
        balancer = pt.balancing.create(method, tasks=K, factored=mode)
        torch.manual_seed(5)  # same random orders (PCGrad, GradVac)
        balancer.backward(net.losses(torch.randn(16, 6, generator=torch.Generator().manual_seed(1))), net.shared())
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), method


def test_bad_factored_option_is_named():
    with pytest.raises(pt.errors.PolytaskError, match="factored"):
        pt.balancing.create("mgda", tasks=K, factored="yes")


def test_autocast_weight_casts_are_followed_and_agree_with_the_dense_route():
    net = Net()
    x = torch.randn(16, 6)
    out = []
    for mode in ("never", "always"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses = net.losses(x)
        J, _, _ = jac.task_jacobian(losses, net.shared(), factored=mode)
        out.append((J, J.gramian(), J.combine(torch.tensor([1.0, 0.5, 0.2]))))
    (_, G0, d0), (J1, G1, d1) = out
    assert len(J1.factored) == 5  # the cached bf16 copy of a weight used twice is one shared node
    assert torch.allclose(G0, G1, rtol=0.02, atol=1e-4 * G0.abs().max().item())  # bf16 rounding only
    for a, b in zip(d0, d1):
        assert a.dtype == b.dtype == torch.float32 and (a - b).norm() <= 0.02 * a.norm() + 1e-6


def test_a_shared_parameter_listed_twice_gets_its_update_once():
    grads = []
    for twice in (False, True):
        net = Net()
        shared = net.shared() + (net.shared() if twice else [])
        pt.balancing.create("upgrad", tasks=K).backward(net.losses(torch.randn(16, 6)), shared)
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b)


def _first_batch(split, n=16):
    x = split.inputs
    xb = {k: v[:n] for k, v in x.items()} if isinstance(x, dict) else x[:n]
    return xb, {k: v[:n] for k, v in split.targets.items()}


@pytest.mark.parametrize(
    "arch,dataset,options",
    [
        ("hps_mlp", "multidigits", {"n_train": 64, "n_val": 32, "n_test": 32}),
        ("hps_cnn", "multidigits", {"n_train": 64, "n_val": 32, "n_test": 32}),
        ("shared_bottom", "mmoe_synthetic", {}),
        ("omoe", "mmoe_synthetic", {}),
        ("mmoe", "mmoe_synthetic", {}),
        ("cgc", "mmoe_synthetic", {}),
        ("ple", "mmoe_synthetic", {}),
        ("dupn", "behaviour_sequences", {"n_train": 64, "n_val": 32, "n_test": 32}),
    ],
)
def test_the_library_architectures_take_the_same_step_with_and_without_factoring(arch, dataset, options):
    data = pt.data.create(dataset, **options)
    found, grads = 0, []
    for mode in ("never", "always"):
        torch.manual_seed(0)
        model = pt.models.create(arch, tasks=data.tasks, input_shape=data.input_shape)
        x, y = _first_batch(data.train)
        losses = pt.tasks.compute_losses(data.tasks, model(x), y)
        if mode == "always":
            stacked = torch.stack(list(losses.values()))
            found = len(fac.find_linear_blocks(stacked, list(model.shared_parameters())))
        balancer = pt.balancing.create("upgrad", tasks=[t.name for t in data.tasks], factored=mode)
        balancer.backward(losses, list(model.shared_parameters()), model.task_parameter_groups())
        grads.append([p.grad for p in model.parameters()])
    assert found >= 1  # every one of these has shared linear layers
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6 * (1 + a.abs().max().item()))


def test_a_bias_shared_by_two_weights_stays_on_the_per_parameter_route():
    torch.manual_seed(0)
    w1, w2, b = (nn.Parameter(torch.randn(*shape, dtype=torch.float64)) for shape in ((5, 4), (5, 5), (5,)))
    x = torch.randn(8, 4, dtype=torch.float64)

    def losses():
        h = torch.tanh(nn.functional.linear(x, w1, b))
        z = torch.tanh(nn.functional.linear(h, w2, b))
        return torch.stack([z[:, k].pow(2).mean() for k in range(K)])

    blocks = fac.find_linear_blocks(losses(), [w1, w2, b])
    assert len(blocks) == 2 and all(block.bias is None for block in blocks)
    J0, _, _ = jac.task_jacobian(losses(), [w1, w2, b], factored="never")
    J1, _, _ = jac.task_jacobian(losses(), [w1, w2, b], factored="always")
    assert torch.allclose(J0.gramian(), J1.gramian(), rtol=1e-10)
    w = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    for a, c in zip(J0.combine(w), J1.combine(w)):
        assert torch.allclose(a, c, rtol=1e-10)


def test_an_overflowing_product_is_formed_again_in_float64():
    # inputs ~1e20 and output gradients ~1e-20: J is moderate, X Xᵀ overflows float32
    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    x = torch.randn(8, 6) * 1e20

    def losses():
        z = layer(x)
        return torch.stack([1e-20 * z[:, k].sum() * (k + 1) for k in range(K)])

    J0, _, _ = jac.task_jacobian(losses(), list(layer.parameters()), factored="never")
    J1, _, _ = jac.task_jacobian(losses(), list(layer.parameters()), factored="always")
    assert J1.factored and not torch.isfinite(J1.factored[0][0].gramian()).all()  # float32 overflows
    G0, G1 = J0.gramian(), J1.gramian()
    assert torch.isfinite(G1).all() and torch.allclose(G0, G1, rtol=1e-5)


def test_auto_engine_loops_over_tasks_for_convolutions_on_the_cpu():
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8))
    mlp = nn.Sequential(nn.Linear(64, 8), nn.ReLU())
    for encoder, x, expected in ((conv, torch.randn(4, 1, 8, 8), "loop"), (mlp, torch.randn(4, 64), "batched")):
        z = encoder(x)
        losses = torch.stack([z[:, k].pow(2).mean() for k in range(K)])
        balancer = pt.balancing.create("mgda", tasks=K)
        balancer.backward(losses, encoder.parameters())
        assert balancer.engine_used == expected
    # rep-grad: the targets are z, but convolutional heads also make the loop the faster engine
    z = mlp(torch.randn(4, 64)).view(4, 2, 2, 2)
    conv_heads = nn.ModuleList(nn.Conv2d(2, 1, 1) for _ in range(K))
    losses = torch.stack([head(z).pow(2).mean() for head in conv_heads])
    balancer = pt.balancing.create("mgda_ub", tasks=K)
    balancer.backward(losses, mlp.parameters(), representation=z)
    assert balancer.engine_used == "loop"


def test_loop_engine_runs_each_task_backward_through_its_own_head_only():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(6, 8), nn.Tanh())
    heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(K))
    x = torch.randn(16, 6)
    calls = [0] * K

    def losses_and_hooks():
        z = encoder(x)
        out = []
        for k, head in enumerate(heads):
            y = head(z)
            y.register_hook(lambda g, k=k: calls.__setitem__(k, calls[k] + 1))
            out.append(y.pow(2).mean() * (k + 1))
        return out

    stacked = torch.stack(losses_and_hooks())
    params = [*encoder.parameters(), *heads.parameters()]
    split, _ = jac.task_gradients(stacked, params, engine="loop")
    assert calls == [1] * K  # head k's backward ran once, for task k
    calls[:] = [0] * K
    merged = torch.stack(losses_and_hooks()) * 1.0  # not a plain stack: every backward crosses every head
    whole, _ = jac.task_gradients(merged, params, engine="loop")
    assert calls == [K] * K
    for a, b in zip(split, whole):
        assert torch.allclose(a, b, atol=1e-7)
