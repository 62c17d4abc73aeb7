"""Partially labelled training data from a fully labelled dataset: each listed task keeps its labels on a
random fraction of the training samples, the rest are masked out (``targets[task + "_mask"]``). Multi-task
data are often like this (datasets merged from sources that annotate different tasks); a batch may then
hold no label of a task, which the balancers treat as that task being absent."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch

from polytask.data.base import MultiTaskData, Split
from polytask.errors import ConfigError


def keep_labels(data: MultiTaskData, fractions: Mapping[str, float], seed: int = 0) -> MultiTaskData:
    """``data`` with task t's training labels kept on ``fractions[t]`` of the samples (at least one),
    chosen at random with ``seed``; validation and test keep all their labels."""
    names = [t.name for t in data.tasks]
    if not isinstance(fractions, Mapping):
        raise ConfigError(f"labelled must map task names to fractions, e.g. {{{names[0]!r}: 0.1}}; got {fractions!r}")
    unknown = [t for t in fractions if t not in names]
    if unknown:
        raise ConfigError(f"labelled: unknown task(s) {unknown}; tasks of {data.name}: {names}")
    bad = {t: f for t, f in fractions.items() if not isinstance(f, (int, float)) or not 0.0 < float(f) <= 1.0}
    if bad:
        raise ConfigError(f"labelled: fractions must be in (0, 1], got {bad}")
    generator = torch.Generator().manual_seed(seed)
    targets = dict(data.train.targets)
    n = len(data.train)
    for task in data.tasks:  # in task order: each task's draw depends only on the seed and the order
        if task.name not in fractions:
            continue
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.randperm(n, generator=generator)[: max(1, round(float(fractions[task.name]) * n))]] = True
        # the task's own valid entries (its mask and missing targets), on the kept samples only
        valid = task.valid_mask(targets[task.name], targets.get(task.name + "_mask"))
        targets[task.name + "_mask"] = valid & keep.view(n, *([1] * (valid.dim() - 1)))
    return dataclasses.replace(data, train=Split(data.train.inputs, targets))
