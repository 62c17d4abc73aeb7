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
from polytask.errors import ConfigError
from polytask.typecheck import annotations_of, check_value


def create(name: str, labelled: Mapping[str, float] | None = None, label_seed: int = 0, **options) -> MultiTaskData:
    """Build (or load from cache) dataset ``name``. ``labelled`` ({task: fraction}, any dataset): keep
    those tasks' training labels on that fraction of the samples only (seeded by ``label_seed``), for
    partially labelled training; validation and test keep theirs."""
    data = DATASETS.create(name, **options)
    return data if labelled is None else keep_labels(data, labelled, label_seed)


def check_options(name: str, options: dict, where: str = "dataset_options") -> dict:
    """Dataset options from a config file, checked against :func:`create` (``labelled``, ``label_seed``)
    and the factory of ``name``: unknown options and wrong types are errors naming the key path; returns
    them coerced (see :mod:`polytask.typecheck`)."""
    if not isinstance(options, dict):
        raise ConfigError(f"config key {where}: expected a mapping of options, got {options!r}")
    shared = {k: options[k] for k in ("labelled", "label_seed") if k in options}
    hints = annotations_of(create)
    checked = {k: check_value(f"{where}.{k}", v, hints[k]) for k, v in shared.items()}
    rest = {k: v for k, v in options.items() if k not in shared}
    return {**DATASETS.check_option_types(name, rest, where), **checked}


def available() -> list[str]:
    """Names of every registered dataset."""
    return DATASETS.available()


__all__ = ["DATASETS", "BatchLoader", "MultiTaskData", "Split", "available", "cache_dir", "check_options", "create"]
