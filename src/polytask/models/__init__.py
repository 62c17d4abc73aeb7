"""Multi-task architectures: ``create(name, tasks=..., input_shape=..., **options)``, ``available()``."""

from __future__ import annotations

from collections.abc import Sequence

from polytask.models import hps as _hps  # noqa: F401  (registers)
from polytask.models.backbones import MLPBackbone, SmallCNN
from polytask.models.base import MultiTaskModel, count_parameters
from polytask.models.hps import HPS
from polytask.models.registry import MODELS
from polytask.tasks import Task


def create(name: str, tasks: Sequence[Task], input_shape: Sequence[int], **options) -> MultiTaskModel:
    """Build architecture ``name`` for ``tasks`` (one task = single-task network of that design)."""
    return MODELS.create(name, tasks=list(tasks), input_shape=tuple(input_shape), **options)


def available() -> list[str]:
    """Names of every registered architecture."""
    return MODELS.available()


__all__ = ["HPS", "MODELS", "MLPBackbone", "MultiTaskModel", "SmallCNN", "available", "count_parameters", "create"]
