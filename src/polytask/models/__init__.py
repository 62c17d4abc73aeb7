"""Multi-task architectures: ``create(name, tasks=..., input_shape=..., **options)``, ``available()``.

Vision: ``hps_mlp``, ``hps_cnn``. Recommenders (dense or tabular inputs): ``shared_bottom``, ``omoe``,
``mmoe``, ``cgc``, ``ple``, ``esmm``; behaviour sequences: ``dupn``."""

from __future__ import annotations

from collections.abc import Sequence

from polytask.features import FeatureSpec, SequenceSpec
from polytask.models import dupn as _dupn  # noqa: F401  (registers)
from polytask.models import esmm as _esmm  # noqa: F401
from polytask.models import hps as _hps  # noqa: F401
from polytask.models import mmoe as _mmoe  # noqa: F401
from polytask.models import ple as _ple  # noqa: F401
from polytask.models.backbones import MLPBackbone, SmallCNN
from polytask.models.base import MultiTaskModel, count_parameters
from polytask.models.hps import HPS
from polytask.models.registry import MODELS
from polytask.tasks import Task


def create(name: str, tasks: Sequence[Task], input_shape: Sequence[int] | FeatureSpec, **options) -> MultiTaskModel:
    """Build architecture ``name`` for ``tasks`` (one task = single-task network of that design).
    ``input_shape``: a tuple for dense inputs, or a :class:`~polytask.features.FeatureSpec` for tabular ones."""
    shape = input_shape if isinstance(input_shape, (FeatureSpec, SequenceSpec)) else tuple(input_shape)
    return MODELS.create(name, tasks=list(tasks), input_shape=shape, **options)


def available() -> list[str]:
    """Names of every registered architecture."""
    return MODELS.available()


__all__ = ["HPS", "MODELS", "MLPBackbone", "MultiTaskModel", "SmallCNN", "available", "count_parameters", "create"]
