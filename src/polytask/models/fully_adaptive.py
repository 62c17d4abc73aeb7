"""Fully-adaptive feature sharing (Lu, Kumar, Zhai, Cheng, Javidi & Feris, CVPR 2017).

Starts as one thin network shared by all tasks (a residual trunk and a head per task) and grows a tree of
branches top-down, one stage at a time (:meth:`FullyAdaptive.search`): after ``round_epochs`` of training,
task affinity is measured on held-out training samples — A_ij is the share of examples on which tasks i
and j are both easy or both hard (a task is hard on an example when its loss there is above the task's
median) — and the branches meeting at the current stage are grouped to minimise

    L(grouping) = branch_cost · (number of groups − 1) + Σ_groups Σ_{i ∈ g} (1 − mean_{j ∈ g, j ≠ i} A_ij),

a branching cost traded against the separation cost of keeping dissimilar tasks together (task
affinities averaged over a branch's tasks; exhaustive over set partitions). Each new group gets a copy of
the stage's current weights ("widening"). The search moves down a stage until all branches merge or the
first stage is reached; the grown network is then trained as usual (no re-initialisation). The paper
initialises the thin network from a pre-trained one by simultaneous orthogonal matching pursuit; here it
starts from scratch.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from polytask.data.base import BatchLoader, Split, take
from polytask.errors import PolytaskError
from polytask.models.base import MultiTaskModel
from polytask.models.conv import DEFAULT_STRIDES, DEFAULT_WIDTHS, ResTrunk, check_image_shape, task_head
from polytask.models.registry import register
from polytask.models.search import train_pass
from polytask.tasks import Task

Group = tuple[int, ...]


def easy_hard_affinity(per_example_losses: torch.Tensor) -> torch.Tensor:
    """(K, K) share of examples on which two tasks are both easy or both hard, from (N, K) losses (hard:
    above the task's median)."""
    hard = per_example_losses > per_example_losses.median(dim=0).values
    return (hard[:, :, None] == hard[:, None, :]).double().mean(0)


def set_partitions(items: Sequence) -> Iterator[list[list]]:
    """Every partition of ``items`` into non-empty groups (Bell(n) of them)."""
    if not items:
        yield []
        return
    first, rest = items[0], list(items[1:])
    for partition in set_partitions(rest):
        yield [[first], *partition]
        for i in range(len(partition)):
            yield [*partition[:i], [first, *partition[i]], *partition[i + 1 :]]


def grouping_cost(groups: Sequence[Sequence[Group]], affinity: torch.Tensor, branch_cost: float) -> float:
    """branch_cost · (groups − 1) + Σ_g Σ_{unit u ∈ g} (1 − mean affinity of u's tasks to the rest of g)."""
    cost = branch_cost * (len(groups) - 1)
    for group in groups:
        for u in group:
            others = [t for v in group if v is not u for t in v]
            if others:
                cost += 1.0 - float(affinity[list(u)][:, others].mean())
    return cost


def best_grouping(units: Sequence[Group], affinity: torch.Tensor, branch_cost: float) -> list[list[Group]]:
    """The partition of ``units`` (branches, each a tuple of task indices) with the lowest cost."""
    return min(set_partitions(list(units)), key=lambda g: grouping_cost(g, affinity, branch_cost))


@register(
    "fully_adaptive",
    "Fully-adaptive feature sharing (Lu 2017): a thin shared ResNet widened top-down by task affinity",
    inputs=("image",),
    dense=True,
    baseline="hps_resnet",
)
class FullyAdaptive(MultiTaskModel):
    has_representation = False  # no single z that every task head reads

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: Sequence[int],
        branch_cost: float = 0.5,
        round_epochs: int = 1,
        affinity_samples: int = 128,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        strides: Sequence[int] = DEFAULT_STRIDES,
        blocks: int = 2,
        head_hidden: int = 32,
    ):
        super().__init__()
        c, h, w = check_image_shape(input_shape, "fully_adaptive")
        if branch_cost < 0 or round_epochs < 0 or affinity_samples < 2:
            raise PolytaskError("fully_adaptive: branch_cost >= 0, round_epochs >= 0, affinity_samples >= 2")
        if len(tasks) > 8:
            raise PolytaskError("fully_adaptive: the exhaustive grouping search supports at most 8 tasks")
        self.task_objs = list(tasks)
        self.tasks = [t.name for t in tasks]
        trunk = ResTrunk(c, widths, strides, blocks)
        self.stem = trunk.stem
        every = tuple(range(len(self.tasks)))
        self.partition: list[list[Group]] = [[every] for _ in trunk.stages]  # per stage, its branches
        self.branches = nn.ModuleDict({self._key(j, every): s for j, s in enumerate(trunk.stages)})
        self.heads = nn.ModuleDict({t.name: task_head(t, trunk.out_channels, (h, w), head_hidden) for t in tasks})
        self.branch_cost, self.round_epochs, self.affinity_samples = (
            float(branch_cost),
            int(round_epochs),
            int(affinity_samples),
        )
        self.affinities: list[torch.Tensor] = []

    @staticmethod
    def _key(stage: int, group: Group) -> str:
        return f"s{stage}_" + "_".join(map(str, group))

    def _parent(self, stage: int, k: int) -> Group:
        return next(g for g in self.partition[stage] if k in g)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats: dict[Group, torch.Tensor] = {(): self.stem(x)}
        for j, groups in enumerate(self.partition):
            new = {}
            for g in groups:
                parent = () if j == 0 else self._parent(j - 1, g[0])
                new[g] = self.branches[self._key(j, g)](feats[parent])
            feats = new
        last = len(self.partition) - 1
        return {t: self.heads[t](feats[self._parent(last, k)]) for k, t in enumerate(self.tasks)}

    # ------------------------------------------------------------------ growing the tree
    @torch.no_grad()
    def per_example_losses(self, split: Split, device: torch.device | str = "cpu") -> torch.Tensor:
        """(N, K) loss of every task on each of the first ``affinity_samples`` examples (eval mode)."""
        from polytask.training.evaluation import move_batch

        n = min(self.affinity_samples, len(split))
        x, targets = move_batch(
            take(split.inputs, slice(0, n)), {k: v[:n] for k, v in split.targets.items()}, torch.device(device)
        )
        was = self.training
        self.eval()
        out = self(x)
        self.train(was)
        rows = [
            [float(t.compute_loss(out[t.name][i : i + 1], targets[t.name][i : i + 1])) for t in self.task_objs]
            for i in range(n)
        ]
        return torch.tensor(rows, dtype=torch.float64)

    def split_stage(self, stage: int, affinity: torch.Tensor) -> bool:
        """Group the branches meeting at ``stage`` (the groups of the stage above, or single tasks at the
        top); copy the stage's weights into each new group. Returns whether anything split."""
        above = (
            [(k,) for k in range(len(self.tasks))] if stage == len(self.partition) - 1 else self.partition[stage + 1]
        )
        new_partition: list[Group] = []
        changed = False
        for group in self.partition[stage]:
            units = [u for u in above if set(u) <= set(group)]
            chosen = best_grouping(units, affinity, self.branch_cost)
            module = self.branches[self._key(stage, group)]
            if len(chosen) > 1:
                changed = True
                del self.branches[self._key(stage, group)]
                for units_in_group in chosen:
                    merged = tuple(sorted(t for u in units_in_group for t in u))
                    self.branches[self._key(stage, merged)] = copy.deepcopy(module)
                    new_partition.append(merged)
            else:
                new_partition.append(group)
        self.partition[stage] = sorted(new_partition)
        return changed

    def search(
        self,
        train: Split,
        batch_size: int = 64,
        lr: float = 2e-3,
        seed: int = 0,
        progress: bool = False,
        device: torch.device | str = "cpu",
    ) -> list[list[Group]]:
        """Grow the tree top-down (one training round and one affinity estimate per stage); returns the
        branches of every stage."""
        n_affinity = min(self.affinity_samples, len(train) // 2)
        if n_affinity < 2:
            raise PolytaskError("fully_adaptive: the affinity estimate needs at least 4 training samples")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        fit_idx, probe_idx = order[n_affinity:], order[:n_affinity]
        fit = Split(take(train.inputs, fit_idx), {k: v[fit_idx] for k, v in train.targets.items()})
        probe = Split(take(train.inputs, probe_idx), {k: v[probe_idx] for k, v in train.targets.items()})
        self.affinities = []
        self.search_passes = self.carried_search_passes = 0.0
        stages = list(reversed(range(len(self.partition))))
        for j in tqdm(stages, desc="fully_adaptive search", disable=not progress):
            optimizer = torch.optim.Adam(self.parameters(), lr=lr)
            self.train()
            for epoch in range(self.round_epochs):
                batches = BatchLoader(fit, batch_size, shuffle=True, seed=seed + 100 * j + epoch)
                train_pass(self, self.task_objs, batches, optimizer, device, name="fully_adaptive")
            # the rounds' weights stay in the final model: training that counts in its budget
            self.search_passes += self.round_epochs * len(fit) / len(train)
            self.carried_search_passes = self.search_passes
            affinity = easy_hard_affinity(self.per_example_losses(probe, device))
            self.affinities.append(affinity)
            self.split_stage(j, affinity)
            if len(self.partition[j]) == 1:
                break  # every branch merged here: the stages below stay shared
        return [list(p) for p in self.partition]

    # ------------------------------------------------------------------ parameters
    def shared_parameters(self) -> Iterator[nn.Parameter]:
        if len(self.tasks) > 1:
            yield from self.stem.parameters()
        for j, groups in enumerate(self.partition):
            for g in groups:
                if len(g) > 1:
                    yield from self.branches[self._key(j, g)].parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        self._check_task(task)
        k = self.tasks.index(task)
        if len(self.tasks) == 1:
            yield from self.stem.parameters()
        for j, groups in enumerate(self.partition):
            for g in groups:
                if g == (k,):
                    yield from self.branches[self._key(j, g)].parameters()
        yield from self.heads[task].parameters()

    def get_extra_state(self) -> dict:
        return {"partition": [[list(g) for g in p] for p in self.partition]}

    def set_extra_state(self, state: dict) -> None:
        """Rebuild the tree of a saved model (its branch modules must exist before their weights load)."""
        partition = [[tuple(g) for g in p] for p in state["partition"]]
        if partition != self.partition:
            template = {j: self.branches[self._key(j, self.partition[j][0])] for j in range(len(partition))}
            self.branches = nn.ModuleDict(
                {self._key(j, g): copy.deepcopy(template[j]) for j, groups in enumerate(partition) for g in groups}
            )
            self.partition = partition
