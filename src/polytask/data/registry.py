"""The dataset registry: factories ``(**options) -> MultiTaskData``."""

from __future__ import annotations

from polytask.registry import Registry

DATASETS: Registry = Registry("dataset")
register = DATASETS.register
