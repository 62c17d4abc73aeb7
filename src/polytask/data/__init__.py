"""Datasets: ``create(name, **options)``, ``available()``; batches are ``(inputs, {task: target})``."""

from __future__ import annotations

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
from polytask.data.registry import DATASETS


def create(name: str, **options) -> MultiTaskData:
    """Build (or load from cache) dataset ``name``."""
    return DATASETS.create(name, **options)


def available() -> list[str]:
    """Names of every registered dataset."""
    return DATASETS.available()


__all__ = ["DATASETS", "BatchLoader", "MultiTaskData", "Split", "available", "cache_dir", "create"]
