"""Containers for multi-task datasets and a fast in-memory batch loader.

A batch is ``(inputs, {task: target, task + "_mask": optional bool})``, the format the Trainer and
``polytask.tasks.compute_losses`` read; any iterable yielding it (e.g. a torch ``DataLoader``) works too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from polytask.errors import PolytaskError, TaskMismatchError
from polytask.features import FeatureSpec
from polytask.tasks import Task

Batch = tuple[torch.Tensor, dict[str, torch.Tensor]]


Inputs = torch.Tensor | dict[str, torch.Tensor]


def take(inputs: Inputs, index) -> Inputs:
    """Rows ``index`` (a slice or index tensor) of a tensor or of every tensor in a dict."""
    if isinstance(inputs, dict):
        return {k: v[index] for k, v in inputs.items()}
    return inputs[index]


def num_rows(inputs: Inputs) -> int:
    if isinstance(inputs, dict):
        sizes = {len(v) for v in inputs.values()}
        if len(sizes) != 1:
            raise TaskMismatchError(f"split: input fields have different row counts {sorted(sizes)}")
        return sizes.pop()
    return len(inputs)


@dataclass
class Split:
    """One split held in memory: ``inputs`` (N, ...) — or a dict of such tensors, e.g. tabular
    ``{"categorical": (N, C), "numerical": (N, D)}`` — and ``targets`` {task: (N,)} (+ optional masks)."""

    inputs: Inputs
    targets: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        n = num_rows(self.inputs)
        for name, t in self.targets.items():
            if len(t) != n:
                raise TaskMismatchError(f"split: target {name!r} has {len(t)} rows, inputs have {n}")

    def __len__(self) -> int:
        return num_rows(self.inputs)

    def subset(self, tasks: Sequence[str]) -> Split:
        """The same samples with only ``tasks``' targets (and masks)."""
        keep = {k: v for k, v in self.targets.items() if k in tasks or k.removesuffix("_mask") in tasks}
        return Split(self.inputs, keep)


@dataclass
class MultiTaskData:
    """A dataset's tasks, input shape and train/val/test splits."""

    name: str
    tasks: list[Task]
    input_shape: tuple[int, ...] | FeatureSpec
    train: Split
    val: Split
    test: Split
    info: dict = field(default_factory=dict)

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise TaskMismatchError(f"dataset {self.name!r} has no task {name!r}; tasks: {[t.name for t in self.tasks]}")

    def with_auxiliary(self, auxiliary: Sequence[str]) -> MultiTaskData:
        """The same data with ``auxiliary`` tasks in the auxiliary role (trained and reported, never used
        for model selection or ΔMTL) and every other task primary."""
        for name in auxiliary:
            self.task(name)  # unknown names raise, listing the tasks
        if auxiliary and set(auxiliary) >= {t.name for t in self.tasks}:
            raise TaskMismatchError(f"dataset {self.name!r}: at least one task must stay primary")
        tasks = [dataclasses.replace(t, role="auxiliary" if t.name in auxiliary else "primary") for t in self.tasks]
        return dataclasses.replace(self, tasks=tasks)

    def select(self, tasks: Sequence[str]) -> MultiTaskData:
        """A view restricted to ``tasks`` (e.g. one task for a single-task baseline)."""
        chosen = [self.task(t) for t in tasks]
        return MultiTaskData(
            self.name,
            chosen,
            self.input_shape,
            self.train.subset(tasks),
            self.val.subset(tasks),
            self.test.subset(tasks),
            dict(self.info),
        )


class BatchLoader:
    """Mini-batches of a :class:`Split`; with ``shuffle`` the order of epoch e is a function of (seed, e)
    only, so a resumed run sees exactly the batches an uninterrupted one would (cf. DistributedSampler).
    ``shard=(rank, processes)``: this process's equal share of every batch (the same order on every
    process, so the shares make up the batch one process would see)."""

    def __init__(
        self,
        split: Split,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        shard: tuple[int, int] = (0, 1),
    ):
        if batch_size < 1:
            raise PolytaskError(f"batch_size must be >= 1, got {batch_size}")
        self.rank, self.world = shard
        if not 0 <= self.rank < self.world:
            raise PolytaskError(f"shard must be (rank, processes) with 0 <= rank < processes, got {shard}")
        if batch_size % self.world:
            raise PolytaskError(
                f"batch_size {batch_size} must be a multiple of the {self.world} processes (each takes an equal "
                "share of every batch)"
            )
        self.split, self.batch_size, self.shuffle, self.seed, self.drop_last = (
            split,
            batch_size,
            shuffle,
            seed,
            drop_last,
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _bounds(self) -> list[tuple[int, int]]:
        """(start, end) of this process's share of each batch. With several processes (``shard``) every
        batch is split into equal shares; a last batch smaller than a multiple of them loses the rest."""
        n = len(self.split)
        count = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        out = []
        for b in range(count):
            start, end = b * self.batch_size, min(n, (b + 1) * self.batch_size)
            share = (end - start) // self.world
            if share:
                out.append((start + self.rank * share, start + (self.rank + 1) * share))
        return out

    def __len__(self) -> int:
        return len(self._bounds())

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.split)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = None
        for start, end in self._bounds():
            rows = slice(start, end) if order is None else order[start:end]
            yield take(self.split.inputs, rows), {k: v[rows] for k, v in self.split.targets.items()}


# ------------------------------------------------------------------------------------------ caching
def cache_dir() -> Path:
    """``$POLYTASK_CACHE`` or ``~/.cache/polytask``."""
    return Path(os.environ.get("POLYTASK_CACHE", Path.home() / ".cache" / "polytask")).expanduser()


def config_hash(config: Mapping) -> str:
    """A short stable hash of a JSON-able configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_arrays(name: str, config: Mapping, build) -> dict:
    """``build(**config)`` (a dict of numpy arrays), cached as ``<cache>/data/<name>-<hash>.npz``; a corrupt
    cache file is rebuilt, never trusted, and an unwritable cache only costs the rebuild next time."""
    import numpy as np

    from polytask.utils import atomic_write

    path = cache_dir() / "data" / f"{name}-{config_hash(config)}.npz"
    if path.exists():
        try:
            with np.load(path) as f:
                return {k: f[k] for k in f.files}
        except Exception:
            path.unlink(missing_ok=True)
    arrays = build(**config)
    with contextlib.suppress(OSError):  # an unwritable cache only costs the rebuild next time
        atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
    return arrays
