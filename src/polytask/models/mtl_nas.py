"""MTL-NAS (Gao, Bai, Jie, Ma, Jia & Liu, CVPR 2020): task-agnostic search of cross-task fusion edges.

One network per task. The search space holds an edge from stage i of task a's network into stage j ≥ i
of task b's (a ≠ b; ``max_gap`` bounds j − i). At stage j, task b's feature is fused with its incoming
edges by a single-sided asymmetric NDDR:

    y = ReLU(BN(W_self x_b + Σ_e g_e W_e pool(x_{a_e, i_e}))),   W_self = I, W_e = 0 at initialisation,

1x1 convolutions W (the reference's init (1, 0)), sources average-pooled to the target's resolution, and
edges from the same stage taking the source's unfused feature. The search (:meth:`MTLNAS.search`)
alternates network updates on one half of the training split with updates of the edge logits α on the
other; gates g_e are RelaxedBernoulli(τ, α_e) samples with τ annealed from 1 towards 0 as (1 − t/T)² (the
reference's poly schedule, floored at 0.01), and the architecture loss adds ``entropy_weight`` x Σ_e
H(sigmoid(α_e)), the minimal-entropy regulariser (reference weight 10) that drives each edge to 0 or 1.
The discrete network keeps the edges with α_e > 0 and, as the paper describes, is re-trained from
scratch (the reference code evaluates the super-network instead).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from polytask.data.base import BatchLoader, Split
from polytask.errors import PolytaskError
from polytask.models.conv import DEFAULT_STRIDES, DEFAULT_WIDTHS, ResTrunk, check_image_shape, task_head
from polytask.models.registry import register
from polytask.models.search import UsageSplitModel, halves, reinitialise, train_pass
from polytask.tasks import Task


def edge_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Σ_e H(sigmoid(α_e)) in nats: 0 when every edge is decided, log 2 per undecided edge."""
    p = torch.sigmoid(logits)
    return -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits)).sum()


@register(
    "mtl_nas",
    "MTL-NAS (Gao 2020): one ResNet per task, searched NDDR fusion edges (min-entropy), then re-trained",
    inputs=("image",),
    dense=True,
    baseline="hps_resnet",
)
class MTLNAS(UsageSplitModel):
    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: Sequence[int],
        search_epochs: int = 6,
        max_gap: int = 1,
        entropy_weight: float = 10.0,
        arch_lr: float = 3e-3,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        strides: Sequence[int] = DEFAULT_STRIDES,
        blocks: int = 2,
        head_hidden: int = 32,
    ):
        super().__init__()
        c, h, w = check_image_shape(input_shape, "mtl_nas")
        if search_epochs < 0 or max_gap < 0 or entropy_weight < 0 or arch_lr <= 0:
            raise PolytaskError("mtl_nas: search_epochs, max_gap, entropy_weight >= 0 and arch_lr > 0 are required")
        self.task_objs = list(tasks)
        self.tasks = [t.name for t in tasks]
        self.columns = nn.ModuleList(ResTrunk(c, widths, strides, blocks) for _ in self.tasks)
        ws = self.columns[0].widths
        k = len(self.tasks)
        # edges (source task, source stage, target task, target stage)
        self.edges = [
            (a, i, b, j)
            for b in range(k)
            for j in range(len(ws))
            for a in range(k)
            for i in range(max(0, j - max_gap), j + 1)
            if a != b
        ]
        self.incoming = {
            (b, j): [e for e, edge in enumerate(self.edges) if edge[2:] == (b, j)]
            for b in range(k)
            for j in range(len(ws))
        }
        self.self_proj = nn.ModuleList(
            nn.ModuleList(nn.Conv2d(ws[j], ws[j], 1, bias=False) for j in range(len(ws))) for _ in range(k)
        )
        self.edge_proj = nn.ModuleList(nn.Conv2d(ws[i], ws[j], 1, bias=False) for _, i, _, j in self.edges)
        self.norms = nn.ModuleList(nn.ModuleList(nn.BatchNorm2d(wd) for wd in ws) for _ in range(k))
        self.alpha = nn.Parameter(torch.zeros(len(self.edges)), requires_grad=False)  # logits; trained in search
        self.register_buffer("active", torch.ones(len(self.edges)))  # discrete edges (all on before a search)
        self.heads = nn.ModuleDict({t.name: task_head(t, ws[-1], (h, w), head_hidden) for t in tasks})
        self.search_epochs, self.entropy_weight, self.arch_lr = (
            int(search_epochs),
            float(entropy_weight),
            float(arch_lr),
        )
        self.searching = False
        self.tau = 1.0
        self._init_fusion()

    def _init_fusion(self) -> None:
        """The reference's (1, 0) init: own feature passed through, every edge contributing 0."""
        with torch.no_grad():
            for per_task in self.self_proj:
                for conv in per_task:
                    conv.weight.copy_(torch.eye(conv.weight.shape[0])[:, :, None, None])
            for conv in self.edge_proj:
                conv.weight.zero_()

    def gates(self) -> torch.Tensor:
        """Per edge: a RelaxedBernoulli(τ, α) sample while searching, else the discrete choice."""
        if not self.searching:
            return self.active
        return torch.distributions.RelaxedBernoulli(torch.tensor(self.tau), logits=self.alpha).rsample()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        gates = self.gates()
        feats = [col.stem(x) for col in self.columns]
        fused: list[list[torch.Tensor]] = [[] for _ in self.tasks]  # per task, per stage
        for j in range(len(self.columns[0].stages)):
            raw = [col.stages[j](f) for col, f in zip(self.columns, feats)]
            for b in range(len(self.tasks)):
                total = self.self_proj[b][j](raw[b])
                for e in self.incoming[(b, j)]:
                    if not self.searching and self.active[e] == 0:
                        continue
                    a, i = self.edges[e][:2]
                    src = raw[a] if i == j else fused[a][i]
                    if src.shape[-2:] != raw[b].shape[-2:]:
                        src = F.adaptive_avg_pool2d(src, raw[b].shape[-2:])
                    total = total + gates[e] * self.edge_proj[e](src)
                fused[b].append(torch.relu(self.norms[b][j](total)))
            feats = [fused[b][j] for b in range(len(self.tasks))]
        return {t: self.heads[t](f) for t, f in zip(self.tasks, feats)}

    # ------------------------------------------------------------------ search
    def search(
        self,
        train: Split,
        batch_size: int = 64,
        lr: float = 2e-3,
        seed: int = 0,
        progress: bool = False,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """Alternate network and edge-logit updates, keep the edges with α > 0, re-draw the weights.
        Returns the kept edges (a 0/1 vector in the order of ``self.edges``)."""
        network_half, arch_half = halves(train, seed, "mtl_nas")
        weights = [p for n, p in self.named_parameters() if n != "alpha"]
        net_opt = torch.optim.Adam(weights, lr=lr)
        arch_opt = torch.optim.Adam([self.alpha], lr=self.arch_lr)
        self.train()
        self.searching = True
        self.alpha.requires_grad_(True)
        steps = max(1, self.search_epochs)
        with tqdm(total=self.search_epochs, desc="mtl_nas search", disable=not progress) as bar:
            for epoch in range(self.search_epochs):
                self.tau = max(1e-2, (1 - epoch / steps) ** 2)
                batches = BatchLoader(network_half, batch_size, shuffle=True, seed=seed + 1000 + epoch)
                train_pass(self, self.task_objs, batches, net_opt, device, name="mtl_nas")
                batches = BatchLoader(arch_half, batch_size, shuffle=True, seed=seed + 2000 + epoch)
                train_pass(
                    self,
                    self.task_objs,
                    batches,
                    arch_opt,
                    device,
                    lambda: self.entropy_weight * edge_entropy(self.alpha),
                    "mtl_nas",
                )
                bar.update()
        self.searching = False
        self.alpha.requires_grad_(False)
        self.active.copy_((self.alpha > 0).float())
        reinitialise(self, seed)
        self._init_fusion()
        # weight-update passes over the whole training set (a half counts half); none stay in the model
        self.search_passes = self.search_epochs * len(network_half) / len(train)
        self.carried_search_passes = 0.0
        return self.active.clone()

    # ------------------------------------------------------------------ parameters
    def _reach(self) -> list[set[int]]:
        """Per task b, the tasks whose losses b's column reaches through the kept edges (itself included)."""
        k = len(self.tasks)
        reach = [{b} for b in range(k)]
        changed = True
        while changed:  # a → b edge: whatever reaches b is reached by a
            changed = False
            for e, (a, _, b, _) in enumerate(self.edges):
                if self.active[e] > 0 and not reach[b] <= reach[a]:
                    reach[a] |= reach[b]
                    changed = True
        return reach

    def _parameter_users(self) -> list[tuple[nn.Parameter, set[int]]]:
        reach = self._reach()
        pairs = []
        for b in range(len(self.tasks)):
            for module in (self.columns[b], self.self_proj[b], self.norms[b]):
                pairs += [(p, reach[b]) for p in module.parameters()]
        for e, (_, _, b, _) in enumerate(self.edges):
            if self.active[e] > 0:
                pairs += [(p, reach[b]) for p in self.edge_proj[e].parameters()]
        return pairs
