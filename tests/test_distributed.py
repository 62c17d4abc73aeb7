"""Under torch.distributed (2 CPU processes, gloo) a balancer's step equals the single-process step on
the concatenated batch: gradient methods aggregate the global per-task gradients, loss weightings use
the global losses (and DDP averages the model's gradients)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import polytask as pt

METHODS = ["ew", "gls", "uw", "mgda", "mgda_ub", "pcgrad", "upgrad", "cagrad", "nash_mtl", "imtl", "imtl_g"]
METHODS += ["aligned_mtl", "gradvac", "graddrop", "gradnorm", "dwa", "lbtw"]
# the same Gramian methods with every linear layer in factored form (each process's rows gathered)
FACTORED = ["mgda", "pcgrad", "upgrad", "cagrad", "nash_mtl", "imtl", "imtl_g", "aligned_mtl", "gradvac"]
# with the direct engine (per-task losses stacked, one backward through the heads)
DIRECT = ["mgda", "mgda_ub", "pcgrad", "upgrad"]
TASKS = ["a", "b", "c"]
STEPS = 2


class Net(nn.Module):
    def __init__(self, deep: bool = False):
        super().__init__()
        layers = [nn.Linear(4, 8), nn.Tanh()] + ([nn.Linear(8, 8, bias=False), nn.Tanh()] if deep else [])
        self.encoder = nn.Sequential(*layers)
        self.heads = nn.ModuleList(nn.Linear(8, 1) for _ in TASKS)

    def forward(self, x):
        z = self.encoder(x)
        return z, [h(z)[:, 0] for h in self.heads]


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    y = torch.randn(16, 3, generator=g) * torch.tensor([1.0, 3.0, 0.5])
    return x, y


def run(method, x, y, ddp=False, factored=None, engine="auto"):
    """Two SGD steps of ``method``; returns the gradients of the second step."""
    torch.manual_seed(0)
    net = Net(deep=factored is not None or engine == "direct")
    model = nn.parallel.DistributedDataParallel(net) if ddp else net
    options = ({} if engine == "auto" else {"engine": engine}) | ({} if factored is None else {"factored": factored})
    balancer = pt.balancing.create(method, tasks=TASKS, **options)
    opt = torch.optim.SGD(list(net.parameters()) + list(balancer.parameters()), lr=0.05)
    for step in range(STEPS):
        torch.manual_seed(100 + step)  # same random draws (PCGrad orders) on every rank
        opt.zero_grad()
        z, out = model(x)
        if engine == "direct":  # a stack of per-task scalars
            losses = torch.stack([((o - y[:, k]) ** 2).mean() for k, o in enumerate(out)])
        else:
            losses = ((torch.stack(out, dim=1) - y) ** 2).mean(dim=0)
        balancer.backward(
            losses,
            shared_params=list(net.encoder.parameters()),
            task_params={t: list(h.parameters()) for t, h in zip(TASKS, net.heads)},
            representation=z,
        )
        grads = [p.grad.clone() for p in net.parameters()]
        opt.step()
    return grads


ABSENT = ["ew", "gls", "famo", "mgda", "upgrad", "nash_mtl", "gradvac"]


def run_with_b(method, x, y, b_loss):
    """Two SGD steps of ``method`` with task b's loss ``b_loss(prediction, target)`` (None: absent)."""
    torch.manual_seed(0)
    net = Net()
    balancer = pt.balancing.create(method, tasks=TASKS)
    opt = torch.optim.SGD(list(net.parameters()) + list(balancer.parameters()), lr=0.05)

    def losses():
        _, out = net(x)
        a, c = (((out[k] - y[:, k]) ** 2).mean() for k in (0, 2))
        return [a + 1, b_loss(out[1], y[:, 1]), c + 1]  # + 1: FAMO's and GLS's logs see no tiny loss

    for step in range(STEPS):
        torch.manual_seed(100 + step)
        opt.zero_grad()
        heads = {t: list(h.parameters()) for t, h in zip(TASKS, net.heads)}
        balancer.backward(losses(), shared_params=list(net.encoder.parameters()), task_params=heads)
        if not balancer.averages_over_processes:  # as the Trainer does: no DDP wrapper, whose reducer
            pt.balancing.jacobian.average_gradients(list(net.parameters()))  # wants every head's gradient
        opt.step()
        if balancer.needs_post_step_losses:
            with torch.no_grad():
                balancer.post_step(losses())
    return [p.detach().clone() for p in net.parameters()]


def worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x, y = data()
        half = slice(rank * 8, (rank + 1) * 8)
        results = {m: run(m, x[half], y[half], ddp=True) for m in METHODS}
        results.update({f"{m}/factored": run(m, x[half], y[half], True, "always") for m in FACTORED})
        results.update({f"{m}/direct": run(m, x[half], y[half], True, "auto", "direct") for m in DIRECT})
        # unequal batches (6 and 10 rows): the gathered rows are padded; same step as the dense route
        uneven = slice(0, 6) if rank == 0 else slice(6, 16)
        for mode in ("never", "always"):
            results[f"uneven/{mode}"] = run("upgrad", x[uneven], y[uneven], True, mode)
        for m in ABSENT:  # task b labelled on rank 0 only, then on no rank
            results[f"absent/{m}/one"] = run_with_b(m, x[half], y[half], _mse if rank == 0 else _none)
            results[f"absent/{m}/all"] = run_with_b(m, x[half], y[half], _none)
        results.update(empty_process_case(x[half], y[half], rank))
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def empty_process_case(x, y, rank):
    """Rank 1 has no task in its share: EW still steps (rank 0's gradient, averaged with rank 1's none);
    MGDA, whose per-task backward every process must join, raises the same error in both processes."""
    out = {}
    for method in ("ew", "mgda"):
        torch.manual_seed(0)
        net = Net()
        _, pred = net(x)
        losses = [((p - y[:, k]) ** 2).mean() for k, p in enumerate(pred)] if rank == 0 else [None] * 3
        heads = {t: list(h.parameters()) for t, h in zip(TASKS, net.heads)}
        try:
            pt.balancing.create(method, tasks=TASKS).backward(
                losses, shared_params=list(net.encoder.parameters()), task_params=heads
            )
            pt.balancing.jacobian.average_gradients(list(net.parameters()))
            out[f"empty/{method}"] = [p.grad.clone() for p in net.parameters()]
        except pt.PolytaskError as exc:
            out[f"empty/{method}"] = str(exc)
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mse(pred, target):
    return ((pred - target) ** 2).mean() + 1


def _none(pred, target):
    return None


def _first_half_mse(pred, target):
    """What the ranks' mean of b's losses is when only rank 0 (the first 8 rows) has b's labels."""
    return 0.5 * _mse(pred[:8], target[:8])


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_two_process_step_equals_single_process_step_on_the_global_batch(tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    x, y = data()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for method in METHODS:
            expected = run(method, x, y)
            for g, e in zip(got[method], expected):
                assert torch.allclose(g, e, atol=1e-5), (method, rank, (g - e).abs().max())
        for method in ABSENT:
            # absent on one rank: present, that rank's share of its gradient 0; absent on both: absent
            for case, b_loss in (("one", _first_half_mse), ("all", _none)):
                expected = run_with_b(method, x, y, b_loss)
                for g, e in zip(got[f"absent/{method}/{case}"], expected):
                    assert torch.allclose(g, e, atol=1e-5), (method, case, rank, (g - e).abs().max())
        assert "has no labelled sample of any task in its share" in got["empty/mgda"]
        torch.manual_seed(0)
        net = Net()
        _, pred = net(x[:8])
        sum(((p - y[:8, k]) ** 2).mean() for k, p in enumerate(pred)).backward()
        for g, p in zip(got["empty/ew"], net.parameters()):
            assert torch.allclose(g, 0.5 * p.grad, atol=1e-6), ("empty/ew", rank)
        for g, e in zip(got["uneven/always"], got["uneven/never"]):
            assert torch.allclose(g, e, atol=1e-5), ("uneven", rank, (g - e).abs().max())
        for method in FACTORED:  # against the single process's per-parameter route
            expected = run(method, x, y, factored="never")
            assert len(got[f"{method}/factored"]) == len(expected) == 9
            for g, e in zip(got[f"{method}/factored"], expected):
                assert torch.allclose(g, e, atol=1e-5), (method, "factored", rank, (g - e).abs().max())
        for method in DIRECT:  # against the single process's batched engine, per-parameter route
            expected = run(method, x, y, factored="never", engine="batched")
            for g, e in zip(got[f"{method}/direct"], expected):
                assert torch.allclose(g, e, atol=1e-5), (method, "direct", rank, (g - e).abs().max())


# ------------------------------------------------------------------------------------------ the Trainer
TRAINER_METHODS = ["ew", "uw", "dwa", "dtp", "lbtw", "famo", "gradnorm", "mgda", "mgda_ub", "pcgrad", "upgrad"]
TRAINER_METHODS += ["graddrop", "nash_mtl", "imtl"]


def trainer_run(method, data, out_dir=None):
    """Two epochs of the Trainer (hps_mlp without dropout, Adam); the final weights and the history."""
    pt.seed_everything(0)
    model = pt.models.create("hps_mlp", tasks=data.tasks, input_shape=data.input_shape)
    balancer = pt.balancing.create(method, tasks=[t.name for t in data.tasks])
    options = {"epochs": 2, "batch_size": 32, "lr": 3e-3, "progress": False, "out_dir": out_dir, "seed": 0}
    trainer = pt.Trainer(model, data.tasks, balancer, data.train, data.val, data.test, **options)
    result = trainer.fit()
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rows = [len(batch[0]) for batch in trainer.train_batches]  # this process's share of each batch
    return {"weights": weights, "history": result.history, "writes": trainer.writes, "rows": rows}


def trainer_data():
    return pt.data.create("multidigits", n_train=96, n_val=48, n_test=48)


SPARSE_METHODS = ["ew", "famo", "gradnorm", "mgda", "upgrad"]


def sparse_trainer_data():
    """trainer_data with one labelled row of 'sum': of the 3 batches of 32 one has it in one process's
    half only (the task is present, that process's share of its gradient 0), two have it nowhere."""
    import dataclasses

    data = trainer_data()
    targets = dict(data.train.targets)
    targets["sum"] = torch.full_like(targets["sum"], float("nan"))
    targets["sum"][5] = data.train.targets["sum"][5]
    return dataclasses.replace(data, train=pt.data.Split(data.train.inputs, targets))


def scarce_trainer_data():
    """trainer_data with every task labelled on rows 0-3 only: in some batches one process's half has no
    label while the other's has."""
    import dataclasses

    data = trainer_data()
    targets = {k: v.clone() for k, v in data.train.targets.items()}
    for t in targets.values():
        t[4:] = -100 if t.dtype == torch.long else float("nan")
    return dataclasses.replace(data, train=pt.data.Split(data.train.inputs, targets))


def counting_empty_shares(run, method, data):
    """``run(method, data)`` with the batches in which this process's share has no label counted."""
    import polytask.training.trainer as trainer_module

    original, count = trainer_module.unlabelled_tasks, [0]

    def counted(tasks, targets, complete=()):
        absent = original(tasks, targets, complete)
        count[0] += len(absent) == len(tasks)
        return absent

    trainer_module.unlabelled_tasks = counted
    try:
        return run(method, data) | {"empty_shares": count[0]}
    finally:
        trainer_module.unlabelled_tasks = original


def trainer_worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data = trainer_data()  # from the cache the parent filled (not rebuilt by two processes at once)
        results = {m: trainer_run(m, data, os.path.join(out_dir, m)) for m in TRAINER_METHODS}
        sparse = sparse_trainer_data()
        results.update({f"sparse/{m}": trainer_run(m, sparse) for m in SPARSE_METHODS})
        scarce = scarce_trainer_data()
        for method in ("ew", "mgda"):
            results[f"scarce/{method}"] = counting_empty_shares(trainer_run, method, scarce)
        torch.save(results, os.path.join(out_dir, f"trainer_rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_trainer_on_two_processes_equals_one_process_on_the_global_batches(tmp_path):
    """Each process takes half of every batch of 32; loss weightings have their gradients averaged by the
    Trainer, gradient methods average the per-task gradients themselves; the epoch statistics (losses,
    weights, DTP's KPIs) are the global ones and process 0's evaluation decides the selection."""
    data = trainer_data()
    mp.spawn(trainer_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    torch.set_num_threads(1)
    for method in TRAINER_METHODS:
        expected = trainer_run(method, data)
        for rank in range(2):
            got = torch.load(tmp_path / f"trainer_rank{rank}.pt", weights_only=False)[method]
            for name, value in expected["weights"].items():
                assert torch.allclose(got["weights"][name], value, atol=1e-5), (method, rank, name)
            for g, e in zip(got["history"], expected["history"]):
                for key in ("train_loss", "weights"):
                    assert g[key] == pytest.approx(e[key], rel=1e-4, abs=1e-6), (method, rank, key)
                assert g["best"] == e["best"]
            assert got["writes"] == (rank == 0)
            assert expected["rows"] == [32, 32, 32] and got["rows"] == [16, 16, 16]
        assert (tmp_path / method / "result.json").exists() and (tmp_path / method / "checkpoint.pt").exists()
    for method in SPARSE_METHODS:  # a task labelled in one process's share only: the processes agree
        ranks = [torch.load(tmp_path / f"trainer_rank{r}.pt", weights_only=False)[f"sparse/{method}"] for r in (0, 1)]
        for name, value in ranks[0]["weights"].items():
            assert torch.equal(ranks[1]["weights"][name], value), (method, name)
        for h0, h1 in zip(ranks[0]["history"], ranks[1]["history"]):
            assert h0["unlabelled_batches"] == h1["unlabelled_batches"] == {"sum": 2}, method
            assert h0["weights"] == h1["weights"] and h0["train_loss"] == h1["train_loss"], method
    # a process's share without any label (counted in the workers): that process joins MGDA's per-task
    # backward with zero losses still in its graph, so MGDA trains every batch EW trains
    scarce = {
        m: [torch.load(tmp_path / f"trainer_rank{r}.pt", weights_only=False)[f"scarce/{m}"] for r in (0, 1)]
        for m in ("ew", "mgda")
    }
    for method, ranks in scarce.items():
        for name, value in ranks[0]["weights"].items():
            assert torch.equal(ranks[1]["weights"][name], value), (method, name)
    assert sum(r["empty_shares"] for r in scarce["mgda"]) > 0
    assert [h["steps"] for h in scarce["mgda"][0]["history"]] == [h["steps"] for h in scarce["ew"][0]["history"]]


def test_trainer_under_world_size_without_a_process_group_says_so(monkeypatch):
    data = pt.data.create("multidigits", n_train=32, n_val=16, n_test=16)
    model = pt.models.create("hps_mlp", tasks=data.tasks, input_shape=data.input_shape)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(pt.PolytaskError, match=r"one of 2 .* no process group is initialised"):
        pt.Trainer(model, data.tasks, pt.balancing.create("ew", tasks=3), data.train, data.val)
