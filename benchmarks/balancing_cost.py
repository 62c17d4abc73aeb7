"""Cost of every balancing method per training step, as a ratio to equal weighting (EW) measured in the
same run, on an HPS MLP (64 -> 512 -> 512 -> 256 shared, K = 3, batch 128) and on a small CNN; with
TorchJD installed (``pip install -e .[bench]``) its implementations of the same method are timed in the
same run too: ``autojac`` (``mtl_backward`` + ``jac_to_grad``) and, for methods TorchJD defines as
functions of the Gramian, ``autogram`` (its Gramian engine on the encoder, then one weighted backward).

    python benchmarks/balancing_cost.py [--steps 20] [--rounds 5] [--models mlp,cnn] [--engine auto]

A step is forward, losses, zero_grad, the method's backward and an SGD step. Time: median over rounds of
the mean of ``steps`` steps (methods interleaved within each round, so machine drift hits all alike).
Memory: peak bytes of tensors allocated during one step above what existed before it (from the PyTorch
profiler's allocation events; the CPU allocator has no peak counter).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable

import timing
import torch
from torch import nn

import polytask as pt

TASKS = ["t0", "t1", "t2"]
GRAMIAN = ["mgda", "cagrad", "nash_mtl", "imtl_g", "aligned_mtl", "upgrad"]
# polytask name -> TorchJD aggregator factory (same method, TorchJD's defaults where they match the paper)
TORCHJD = {
    "mgda": lambda a: a.MGDA(),
    "cagrad": lambda a: a.CAGrad(c=0.4),
    "nash_mtl": lambda a: a.NashMTL(n_tasks=len(TASKS)),
    "imtl_g": lambda a: a.IMTLG(),
    "aligned_mtl": lambda a: a.AlignedMTL(),
    "upgrad": lambda a: a.UPGrad(),
    "pcgrad": lambda a: a.PCGrad(),
    "gradvac": lambda a: a.GradVac(beta=0.01),
    "ew": lambda a: a.Mean(),
}


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU()
        )
        self.heads = nn.ModuleList(nn.Linear(256, 1) for _ in TASKS)

    def forward(self, x):
        z = self.encoder(x)
        return z, [h(z)[:, 0] for h in self.heads]


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = pt.models.backbones.SmallCNN((1, 16, 16), channels=(16, 32), hidden=64)
        self.heads = nn.ModuleList(nn.Linear(64, 1) for _ in TASKS)

    def forward(self, x):
        z = self.encoder(x)
        return z, [h(z)[:, 0] for h in self.heads]


def make(model_name: str, batch: int = 128):
    torch.manual_seed(0)
    model = MLP() if model_name == "mlp" else CNN()
    shape = (batch, 64) if model_name == "mlp" else (batch, 1, 16, 16)
    x = torch.randn(shape)
    ys = [torch.randn(batch) * s for s in (1.0, 3.0, 0.3)]
    return model, x, ys


def polytask_step(method: str, model_name: str, engine: str, factored: str) -> Callable[[], None]:
    model, x, ys = make(model_name)
    balancer_class = type(pt.balancing.create(method, tasks=TASKS))
    options = {}
    if issubclass(balancer_class, pt.balancing.gradient.GradientBalancer):
        options = {"engine": engine} if method == "graddrop" else {"engine": engine, "factored": factored}
    elif method == "gradnorm":
        options = {"engine": engine}
    balancer = pt.balancing.create(method, tasks=TASKS, **options)
    opt = torch.optim.SGD(list(model.parameters()) + list(balancer.parameters()), lr=1e-4)
    shared = list(model.encoder.parameters())
    heads = {t: list(h.parameters()) for t, h in zip(TASKS, model.heads)}

    def step():
        z, outs = model(x)
        losses = torch.stack([((o - y) ** 2).mean() for o, y in zip(outs, ys)])
        opt.zero_grad(set_to_none=True)
        balancer.backward(losses, shared_params=shared, task_params=heads, representation=z)
        opt.step()
        if balancer.needs_post_step_losses:
            with torch.no_grad():
                _, outs = model(x)
                balancer.post_step(torch.stack([((o - y) ** 2).mean() for o, y in zip(outs, ys)]))

    return step


def exact_jacobian_floor(model: nn.Module, batch: int, n_tasks: int) -> float:
    """Multiply-adds of the cheapest exact route to G and d = Jᵀw over EW's (forward + one backward), for
    the linear layers of ``model.encoder`` (heads are negligible). A layer costs F = B·in·out in the
    forward, F for its weight gradient and F for its input gradient (none for the first layer). Exact
    per-task gradients need the K input-gradient products; on the weight side a layer either forms its K
    weight gradients (K·F, d is then free) or its Gram contribution from S = X Xᵀ and the K products S δ_l
    (B²·in + K·B²·out + K²·B·out) plus one weight-gradient product for d (F), whichever is cheaper (the
    choice ``factored='auto'`` makes). No exact Gramian method built from these products costs less."""
    layers = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)]
    forward = weight = inputs = per_task = 0.0
    for i, layer in enumerate(layers):
        n_in, n_out = layer.in_features, layer.out_features
        f = batch * n_in * n_out
        input_grad = 0.0 if i == 0 else f
        factored = batch**2 * n_in + n_tasks * batch**2 * n_out + n_tasks**2 * batch * n_out
        forward, weight, inputs = forward + f, weight + f, inputs + input_grad
        per_task += n_tasks * input_grad + min(n_tasks * f, factored + f)
    return (forward + per_task) / (forward + weight + inputs)


def gramian_only_step(model_name: str, engine: str, factored: str) -> Callable[[], None]:
    """Forward, losses and the Gramian of the per-task gradients alone: what every Gramian method pays
    before its weighting and update."""
    model, x, ys = make(model_name)
    shared, heads = list(model.encoder.parameters()), list(model.heads.parameters())

    def step():
        _, outs = model(x)
        losses = torch.stack([((o - y) ** 2).mean() for o, y in zip(outs, ys)])
        jacobian, _, _ = pt.balancing.jacobian.task_jacobian(losses, shared, heads, engine, factored)
        jacobian.gramian()

    return step


def handwritten_mgda_step(autograd_heads: bool = False) -> Callable[[], None]:
    """MGDA on the MLP written out by hand for this model and loss, as a reference for the 2.0x target:
    the K backward chains through the encoder as stacked matrix products, each layer's Gram contribution
    by the cheaper of the two exact routes (as ``factored='auto'``), the K x K solve, d = Jᵀw; no graph
    walks, no vmap, no checks. ``autograd_heads=False``: the encoder's forward without autograd and the
    heads' and losses' gradients in closed form (what the arithmetic alone costs). ``True``: the forward
    with autograd and ∂L_k/∂z and the heads' gradients from autograd (K calls), as any library that takes
    arbitrary heads and losses must get them; the rest still by hand. Its first update is compared with
    polytask's MGDA on the same model and batch (a mismatch stops the benchmark)."""
    model, x, ys = make("mlp")
    layers = [m for m in model.encoder if isinstance(m, nn.Linear)]
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    K, B = len(TASKS), x.shape[0]
    head_params = [[h.weight, h.bias] for h in model.heads]

    def closed_form_heads():
        """Inputs of the linear layers, ∂L_k/∂z (K, B, 256) and each head's [∂L_k/∂W, ∂L_k/∂b]."""
        with torch.no_grad():
            acts = [x]
            for layer in layers:
                acts.append(torch.addmm(layer.bias, acts[-1], layer.weight.T).clamp_min(0))
            z = acts[-1]
            head_w = torch.stack([h.weight[0] for h in model.heads])  # (K, 256)
            outs = torch.addmm(torch.stack([h.bias[0] for h in model.heads]), z, head_w.T).T  # (K, B)
            g = 2 * (outs - torch.stack(ys)) / B  # ∂L_k/∂out_k of the mean squared errors
            heads = [[(g[k] @ z)[None], g[k].sum()[None]] for k in range(K)]
            return acts, g[:, :, None] * head_w[:, None, :], heads

    def heads_by_autograd():
        acts = [x]
        for layer in layers:
            acts.append(torch.relu(layer(acts[-1])))
        z = acts[-1]
        losses = [((h(z)[:, 0] - y) ** 2).mean() for h, y in zip(model.heads, ys)]
        grads = [
            torch.autograd.grad(loss, [z, *head_params[k]], retain_graph=k < K - 1) for k, loss in enumerate(losses)
        ]
        return [a.detach() for a in acts], torch.stack([g[0] for g in grads]), [list(g[1:]) for g in grads]

    def gradients():
        acts, delta, heads = (heads_by_autograd if autograd_heads else closed_form_heads)()
        with torch.no_grad():  # saved activations require no grad; the update is computed by hand
            G = torch.zeros(K, K, dtype=torch.float64)
            blocks = []
            for i in reversed(range(len(layers))):
                delta = torch.ops.aten.threshold_backward(delta, acts[i + 1], 0)  # through the ReLU
                X, (n_out, n_in) = acts[i], layers[i].weight.shape
                if B * B * n_in + K * B * B * n_out + K * K * B * n_out + B * n_in * n_out < K * B * n_in * n_out:
                    S = X @ X.T + 1.0  # factored: G += <δ_k, (X Xᵀ + 1 1ᵀ) δ_l>
                    G += (delta.reshape(K, -1) @ torch.matmul(S, delta).reshape(K, -1).T).double()
                    blocks.append((layers[i], delta, X, None))
                else:  # the K weight (and bias) gradients themselves
                    J = torch.cat([torch.matmul(delta.transpose(1, 2), X).reshape(K, -1), delta.sum(1)], dim=1)
                    G += (J @ J.T).double()
                    blocks.append((layers[i], None, None, J))
                if i:
                    delta = (delta.reshape(K * B, -1) @ layers[i].weight).reshape(K, B, -1)
            w = torch.from_numpy(pt.balancing.gramian_weightings.mgda_weights(G.numpy())).float()
            for layer, delta, X, J in blocks:
                if J is None:
                    c = torch.tensordot(w, delta, dims=1)
                    layer.weight.grad, layer.bias.grad = c.T @ X, c.sum(0)
                else:
                    d = w @ J
                    layer.weight.grad = d[: layer.weight.numel()].view_as(layer.weight)
                    layer.bias.grad = d[layer.weight.numel() :]
            for k, h in enumerate(model.heads):  # heads: w_k times their own task's gradient
                h.weight.grad, h.bias.grad = w[k] * heads[k][0], w[k] * heads[k][1]

    def step():
        opt.zero_grad(set_to_none=True)
        gradients()
        opt.step()

    gradients()
    mine = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    _, outs = model(x)
    losses = torch.stack([((o - y) ** 2).mean() for o, y in zip(outs, ys)])
    pt.balancing.create("mgda", tasks=TASKS).backward(
        losses, list(model.encoder.parameters()), {t: list(h.parameters()) for t, h in zip(TASKS, model.heads)}
    )
    for a, p in zip(mine, model.parameters()):
        if not torch.allclose(a, p.grad, rtol=1e-4, atol=1e-8):
            raise RuntimeError("the hand-written MGDA step does not give polytask's MGDA update")
    return step


def torchjd_step(method: str, model_name: str) -> Callable[[], None] | None:
    try:
        import torchjd.aggregation as agg
        from torchjd.autojac import jac_to_grad, mtl_backward
    except ImportError:
        return None
    try:
        aggregator = TORCHJD[method](agg)
    except Exception:  # missing optional TorchJD extra (e.g. cvxpy for NashMTL)
        return None
    model, x, ys = make(model_name)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    shared = list(model.encoder.parameters())
    heads = [list(h.parameters()) for h in model.heads]

    def step():
        z, outs = model(x)
        losses = [((o - y) ** 2).mean() for o, y in zip(outs, ys)]
        opt.zero_grad(set_to_none=True)
        mtl_backward(losses, features=z, tasks_params=heads, shared_params=shared)
        jac_to_grad(shared, aggregator)
        opt.step()

    return _if_it_runs(step)


def torchjd_autogram_step(method: str, model_name: str) -> Callable[[], None] | None:
    """TorchJD's Gramian route (``torchjd.autogram.Engine`` on the encoder, the aggregator's Gramian
    weighting, one backward of Σ w_k L_k), for the methods TorchJD defines as functions of G."""
    try:
        import torchjd.aggregation as agg
        from torchjd.autogram import Engine
    except ImportError:
        return None
    try:
        weighting = TORCHJD[method](agg).gramian_weighting
    except Exception:  # not a Gramian-weighted aggregator in TorchJD (or a missing extra)
        return None
    model, x, ys = make(model_name)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    engine = Engine(model.encoder, batch_dim=None)

    def step():
        _, outs = model(x)
        losses = torch.stack([((o - y) ** 2).mean() for o, y in zip(outs, ys)])
        opt.zero_grad(set_to_none=True)
        weights = weighting(engine.compute_gramian(losses))
        losses.backward(weights)
        opt.step()

    return _if_it_runs(step)


def _if_it_runs(step: Callable[[], None]) -> Callable[[], None] | None:
    """``step`` if one call succeeds (TorchJD versions differ in what they accept), else None."""
    try:
        step()
    except Exception:
        return None
    return step


@contextlib.contextmanager
def _native_stderr_silenced():
    """Hide what the profiler's native code prints on file descriptor 2 (a start/stop line per profile in
    some PyTorch builds), which Python's ``sys.stderr`` redirection cannot catch."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_step_memory(step: Callable[[], None]) -> int:
    """Peak of the running sum of tensor allocations during one step (bytes): each op's own net
    allocation plus the profiler's stand-alone free events, in time order."""
    with (
        _native_stderr_silenced(),
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        step()
    current = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def measure(steps_by_name: dict[str, Callable[[], None]], steps: int, rounds: int) -> dict[str, float]:
    return timing.measure(steps_by_name, steps, rounds, warmup=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--engine", default="auto", choices=["auto", "batched", "loop"])
    parser.add_argument("--factored", default="auto", choices=["auto", "always", "never"])
    parser.add_argument("--methods", default="all")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    methods = pt.balancing.available() if args.methods == "all" else args.methods.split(",")
    methods = ["ew"] + [m for m in methods if m != "ew"]
    for model_name in args.models.split(","):
        ours = {m: polytask_step(m, model_name, args.engine, args.factored) for m in methods}
        theirs = {m: s for m in methods if m in TORCHJD and (s := torchjd_step(m, model_name)) is not None}
        gram = {m: s for m in methods if m in TORCHJD and (s := torchjd_autogram_step(m, model_name)) is not None}
        steps = {("polytask", m): s for m, s in ours.items()}
        steps.update({("torchjd", m): s for m, s in theirs.items()})
        steps.update({("autogram", m): s for m, s in gram.items()})
        steps[("polytask", "(G only)")] = gramian_only_step(model_name, args.engine, args.factored)
        extra = ["(G only)"]
        if model_name == "mlp":
            steps[("polytask", "(hand-written MGDA)")] = handwritten_mgda_step()
            steps[("polytask", "(hand-written, autograd heads)")] = handwritten_mgda_step(autograd_heads=True)
            extra += ["(hand-written MGDA)", "(hand-written, autograd heads)"]
        timing = measure(steps, args.steps, args.rounds)
        memory = {key: peak_step_memory(step) for key, step in steps.items()}
        base_t, base_m = timing[("polytask", "ew")], max(memory[("polytask", "ew")], 1)
        print(
            f"\n{model_name.upper()}  (EW: {base_t * 1000:.2f} ms/step, {base_m / 2**20:.1f} MiB peak step memory; "
            f"threads {torch.get_num_threads()}, engine {args.engine}, factored {args.factored})"
        )
        width = max(len(m) for m in [*methods, *extra])
        header = f"{'method':{width}s} {'ms/step':>8s} {'x EW':>6s} {'mem x EW':>9s}"
        if theirs:
            header += f" {'TorchJD autojac x EW':>21s} {'autogram x EW':>14s} {'ours/fastest TorchJD':>21s}"
        print(header)
        for m in [*methods, *extra]:
            t, mem = timing[("polytask", m)], memory[("polytask", m)]
            flag = " *" if m in GRAMIAN and t / base_t > 2.0 else ""
            line = f"{m:{width}s} {t * 1000:8.2f} {t / base_t:6.2f} {mem / base_m:9.2f}"
            if theirs:
                tj, ta = timing.get(("torchjd", m)), timing.get(("autogram", m))
                fastest = min(v for v in (tj, ta, float("inf")) if v is not None)
                line += f" {tj / base_t if tj else float('nan'):21.2f} {ta / base_t if ta else float('nan'):14.2f}"
                line += f" {t / fastest if fastest < float('inf') else float('nan'):21.2f}"
            print(line + flag)
        print("(* a Gramian method above the 2.0x EW target; (G only): forward + the Gramian, no weighting or update)")
        if model_name == "mlp":
            print(
                "((hand-written MGDA): the same update coded by hand for this MLP and loss, without autograd, "
                "graph walks or checks: what the arithmetic costs on this machine; (hand-written, autograd heads): "
                "the same, but the forward and the heads' and losses' gradients by autograd, as a library that "
                "takes arbitrary heads and losses must get them)"
            )
        reference = timing.get(("polytask", "(hand-written, autograd heads)"))
        measured = [timing[("polytask", m)] / reference for m in methods if m in GRAMIAN and reference]
        if measured:
            print(
                f"Gramian methods over (hand-written, autograd heads), same run: {min(measured):.2f}x-"
                f"{max(measured):.2f}x (what the library's generality costs over the same arithmetic)"
            )
        if model_name == "mlp":
            floor = exact_jacobian_floor(make("mlp")[0], 128, len(TASKS))
            print(
                f"arithmetic floor of exact Gramian methods on this MLP (multiply-adds of the cheapest exact "
                f"route to G and Jᵀw / EW's forward + backward): {floor:.2f}x EW"
            )


if __name__ == "__main__":
    main()
