"""Datasets: ``create(name, **options)``, ``available()``; batches are ``(inputs, {task: target})``."""

from __future__ import annotations

from collections.abc import Mapping

from polytask.data import aliexpress as _aliexpress  # noqa: F401  (registers)
from polytask.data import behaviour_sequences as _behaviour_sequences  # noqa: F401
from polytask.data import census as _census  # noqa: F401
from polytask.data import dense_benchmarks as _dense_benchmarks  # noqa: F401
from polytask.data import digits_aux as _digits_aux  # noqa: F401
from polytask.data import funnel as _funnel  # noqa: F401
from polytask.data import mmoe_synthetic as _mmoe_synthetic  # noqa: F401
from polytask.data import multidigits as _multidigits  # noqa: F401
from polytask.data import scenes as _scenes  # noqa: F401
from polytask.data import task_groups as _task_groups  # noqa: F401
from polytask.data.base import BatchLoader, MultiTaskData, Split, cache_dir
from polytask.data.partial import keep_labels
from polytask.data.registry import DATASETS


def create(name: str, labelled: Mapping[str, float] | None = None, label_seed: int = 0, **options) -> MultiTaskData:
    """Build (or load from cache) dataset ``name``. ``labelled`` ({task: fraction}, any dataset): keep
    those tasks' training labels on that fraction of the samples only (seeded by ``label_seed``), for
    partially labelled training; validation and test keep theirs."""
    data = DATASETS.create(name, **options)
    return data if labelled is None else keep_labels(data, labelled, label_seed)


def available() -> list[str]:
    """Names of every registered dataset."""
    return DATASETS.available()


__all__ = ["DATASETS", "BatchLoader", "MultiTaskData", "Split", "available", "cache_dir", "create"]
