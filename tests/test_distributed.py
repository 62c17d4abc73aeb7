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
TASKS = ["a", "b", "c"]
STEPS = 2


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(8, 1) for _ in TASKS)

    def forward(self, x):
        z = self.encoder(x)
        return z, torch.stack([h(z)[:, 0] for h in self.heads], dim=1)


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    y = torch.randn(16, 3, generator=g) * torch.tensor([1.0, 3.0, 0.5])
    return x, y


def run(method, x, y, ddp=False):
    """Two SGD steps of ``method``; returns the gradients of the second step."""
    torch.manual_seed(0)
    net = Net()
    model = nn.parallel.DistributedDataParallel(net) if ddp else net
    balancer = pt.balancing.create(method, tasks=TASKS)
    opt = torch.optim.SGD(list(net.parameters()) + list(balancer.parameters()), lr=0.05)
    for step in range(STEPS):
        torch.manual_seed(100 + step)  # same random draws (PCGrad orders) on every rank
        opt.zero_grad()
        z, out = model(x)
        losses = ((out - y) ** 2).mean(dim=0)
        balancer.backward(
            losses,
            shared_params=list(net.encoder.parameters()),
            task_params={t: list(h.parameters()) for t, h in zip(TASKS, net.heads)},
            representation=z,
        )
        grads = [p.grad.clone() for p in net.parameters()]
        opt.step()
    return grads


def worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x, y = data()
        half = slice(rank * 8, (rank + 1) * 8)
        results = {m: run(m, x[half], y[half], ddp=True) for m in METHODS}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
