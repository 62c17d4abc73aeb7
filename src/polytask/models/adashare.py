"""AdaShare (Sun, Panda, Feris & Saenko, NeurIPS 2020): learning what to share, by a per-task select/skip
policy over the residual blocks of one shared network.

For task k and block l, logits α_{k,l} over {select, skip}; block l computes, for task k,
x ← p_{k,l} f_l(x) + (1 − p_{k,l}) s_l(x), with s_l the block's shortcut (identity, or its 1x1 projection
where the block changes shape). Three phases, all run by :meth:`AdaShare.search` before the usual
training (which is the third phase):

1. warm-up (``warmup_epochs``): every block selected, network weights trained;
2. policy learning (``search_epochs``): per epoch, one pass of network updates on one half of the training
   split with policies sampled by Gumbel-softmax (straight-through with ``hard``, the paper's estimator;
   the reference code uses the soft sample), then one pass of policy updates on the other half (Adam,
   ``policy_lr``, weight decay 5e-4), after which τ ← 0.965 τ (from 5). Curriculum: in search epoch e
   only the last ⌊e/3⌋ + 1 blocks are free, the others stay selected. The policy loss adds
   λ_sp Σ_{k,l} log p_{k,l}^{select} (sparsity) and λ_sh Σ_{k1<k2} Σ_l ((L − l)/L) |p_{k1,l} − p_{k2,l}|
   (sharing, l = 1 .. L, heavier on lower blocks), with p the select probabilities;
3. re-training from scratch with a policy sampled once from softmax(α) (deterministic per seed); blocks
   the curriculum has not freed by the end of a short search keep "select" (their logits are untrained).

Trainable parameters do not grow with K beyond the heads (the K x L x 2 logits train in the search
only). Tasks whose policies agree on a
prefix of blocks share its computation.
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


def sparsity_loss(select: torch.Tensor) -> torch.Tensor:
    """Σ_{k,l} log p_{k,l} over the (K, L) select probabilities."""
    return torch.log(select.clamp_min(1e-12)).sum()


def sharing_loss(select: torch.Tensor) -> torch.Tensor:
    """Σ_{k1<k2} Σ_l ((L − l)/L) |p_{k1,l} − p_{k2,l}|, l = 1 .. L (lower blocks weigh more, the last 0)."""
    k, layers = select.shape
    weights = (layers - torch.arange(1, layers + 1, dtype=select.dtype, device=select.device)) / layers
    diffs = (select[:, None, :] - select[None, :, :]).abs()  # (K, K, L)
    return (torch.triu(torch.ones(k, k, device=select.device), diagonal=1)[..., None] * diffs * weights).sum()


@register(
    "adashare",
    "AdaShare (Sun 2020): per-task select/skip policy over shared ResNet blocks, searched then re-trained",
    inputs=("image",),
    dense=True,
    baseline="hps_resnet",
)
class AdaShare(UsageSplitModel):
    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: Sequence[int],
        warmup_epochs: int = 2,
        search_epochs: int = 6,
        tau: float = 5.0,
        tau_decay: float = 0.965,
        sparsity: float = 1e-3,
        sharing: float = 0.05,
        policy_lr: float = 0.01,
        hard: bool = True,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        strides: Sequence[int] = DEFAULT_STRIDES,
        blocks: int = 2,
        head_hidden: int = 32,
    ):
        super().__init__()
        c, h, w = check_image_shape(input_shape, "adashare")
        if warmup_epochs < 0 or search_epochs < 0 or tau <= 0 or not 0 < tau_decay <= 1:
            raise PolytaskError("adashare: warmup/search epochs >= 0, tau > 0 and tau_decay in (0, 1] are required")
        self.task_objs = list(tasks)
        self.tasks = [t.name for t in tasks]
        self.trunk = ResTrunk(c, widths, strides, blocks)
        self.blocks = [b for s in self.trunk.stages for b in s]
        k, layers = len(self.tasks), len(self.blocks)
        # reference init: equal select/skip; trained in the policy search only
        self.logits = nn.Parameter(torch.full((k, layers, 2), 0.5), requires_grad=False)
        self.register_buffer("policy", torch.ones(k, layers))  # the fixed policy (1 = select); warm-up: all
        self.heads = nn.ModuleDict({t.name: task_head(t, self.trunk.out_channels, (h, w), head_hidden) for t in tasks})
        self.warmup_epochs, self.search_epochs = int(warmup_epochs), int(search_epochs)
        self.tau0, self.tau_decay, self.hard = float(tau), float(tau_decay), bool(hard)
        self.sparsity, self.sharing, self.policy_lr = float(sparsity), float(sharing), float(policy_lr)
        self.searching = False
        self.tau = self.tau0
        self.free_from = 0  # curriculum: blocks before this index are selected during the search

    # ------------------------------------------------------------------ execution
    def select_probabilities(self) -> torch.Tensor:
        """(K, L) softmax probability of selecting each block."""
        return self.logits.softmax(-1)[..., 0]

    def _gates(self) -> torch.Tensor:
        if not self.searching:
            return self.policy
        sample = F.gumbel_softmax(self.logits, tau=self.tau, hard=self.hard)[..., 0]
        fixed = torch.ones_like(sample)
        free = torch.arange(len(self.blocks), device=sample.device) >= self.free_from
        return torch.where(free, sample, fixed)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.trunk.stem(x)
        gates = self._gates()
        out = {}
        if self.searching:
            for k, t in enumerate(self.tasks):
                h = z
                for j, block in enumerate(self.blocks):
                    g = gates[k, j]
                    h = g * block(h) + (1 - g) * block.shortcut(h)
                out[t] = self.heads[t](h)
            return out
        # fixed policy: tasks with the same prefix of decisions share its computation
        cache: dict[tuple, torch.Tensor] = {(): z}
        for k, t in enumerate(self.tasks):
            decisions = tuple(bool(v) for v in gates[k].tolist())
            start = max(i for i in range(len(decisions) + 1) if decisions[:i] in cache)
            h = cache[decisions[:start]]
            for j in range(start, len(self.blocks)):
                block = self.blocks[j]
                h = block(h) if decisions[j] else block.shortcut(h)
                cache[decisions[: j + 1]] = h
            out[t] = self.heads[t](h)
        return out

    # ------------------------------------------------------------------ phases 1 and 2
    def network_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n != "logits"]

    def search(
        self,
        train: Split,
        batch_size: int = 64,
        lr: float = 2e-3,
        seed: int = 0,
        progress: bool = False,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """Warm-up, policy learning, then the sampled policy and freshly initialised weights (phase 3 is
        the caller's training). Returns the policy (K, L), 1 = select."""
        network_half, policy_half = halves(train, seed, "adashare")
        net_opt = torch.optim.Adam(self.network_parameters(), lr=lr)
        policy_opt = torch.optim.Adam([self.logits], lr=self.policy_lr, weight_decay=5e-4)

        def policy_loss() -> torch.Tensor:
            select = self.select_probabilities()
            return self.sparsity * sparsity_loss(select) + self.sharing * sharing_loss(select)

        self.train()
        self.policy.fill_(1.0)
        with tqdm(total=self.warmup_epochs + self.search_epochs, desc="adashare search", disable=not progress) as bar:
            for epoch in range(self.warmup_epochs):
                batches = BatchLoader(train, batch_size, shuffle=True, seed=seed + epoch)
                train_pass(self, self.task_objs, batches, net_opt, device, name="adashare")
                bar.update()
            self.searching, self.tau = True, self.tau0
            self.logits.requires_grad_(True)
            for epoch in range(self.search_epochs):
                self.free_from = max(0, len(self.blocks) - (epoch // 3 + 1))
                batches = BatchLoader(network_half, batch_size, shuffle=True, seed=seed + 1000 + epoch)
                train_pass(self, self.task_objs, batches, net_opt, device, name="adashare")
                batches = BatchLoader(policy_half, batch_size, shuffle=True, seed=seed + 2000 + epoch)
                train_pass(self, self.task_objs, batches, policy_opt, device, policy_loss, "adashare")
                self.tau *= self.tau_decay
                bar.update()
        self.searching = False
        self.logits.requires_grad_(False)
        with torch.no_grad():
            probs = self.logits.softmax(-1).reshape(-1, 2)
            draw = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed))
            self.policy.copy_((draw == 0).float().reshape(self.policy.shape))
            if self.search_epochs == 0:
                self.policy.fill_(1.0)
            else:  # blocks the curriculum never freed have untrained logits: they stay selected
                self.policy[:, : self.free_from] = 1.0
        reinitialise(self, seed)
        # weight-update passes over the whole training set (halves count half); none stay in the model
        self.search_passes = self.warmup_epochs + self.search_epochs * len(network_half) / len(train)
        self.carried_search_passes = 0.0
        return self.policy.clone()

    # ------------------------------------------------------------------ parameter split (fixed policy)
    def _parameter_users(self) -> list[tuple[nn.Parameter, set[int]]]:
        """Each trunk parameter with the tasks whose computation uses it under the fixed policy: a block's
        shortcut serves every task (as the residual of selecting tasks, as the skip path of the others),
        the rest of the block only the tasks that select it."""
        every = set(range(len(self.tasks)))
        pairs = [(p, every) for p in self.trunk.stem.parameters()]
        for j, block in enumerate(self.blocks):
            selecting = {k for k in every if self.policy[k, j] > 0}
            shortcut = {id(q) for q in block.shortcut.parameters()}
            pairs += [(p, every if id(p) in shortcut else selecting) for p in block.parameters()]
        return pairs
