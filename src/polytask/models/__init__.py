"""Multi-task architectures: ``create(name, tasks=..., input_shape=..., **options)``, ``available()``.

Vision: ``hps_mlp``, ``hps_cnn``. Recommenders (dense or tabular inputs): ``shared_bottom``, ``omoe``,
``mmoe``, ``cgc``, ``ple``, ``esmm``; behaviour sequences: ``dupn``."""

from __future__ import annotations

from collections.abc import Sequence

from polytask.features import FeatureSpec, SequenceSpec
from polytask.models import adashare as _adashare  # noqa: F401  (registers)
from polytask.models import cross_stitch as _cross_stitch  # noqa: F401
from polytask.models import drn as _drn  # noqa: F401
from polytask.models import dupn as _dupn  # noqa: F401
from polytask.models import esmm as _esmm  # noqa: F401
from polytask.models import fully_adaptive as _fully_adaptive  # noqa: F401
from polytask.models import hps as _hps  # noqa: F401
from polytask.models import jmt as _jmt  # noqa: F401
from polytask.models import mmoe as _mmoe  # noqa: F401
from polytask.models import mtan as _mtan  # noqa: F401
from polytask.models import mtinet as _mtinet  # noqa: F401
from polytask.models import mtl_nas as _mtl_nas  # noqa: F401
from polytask.models import nddr as _nddr  # noqa: F401
from polytask.models import padnet as _padnet  # noqa: F401
from polytask.models import ple as _ple  # noqa: F401
from polytask.models import sluice as _sluice  # noqa: F401
from polytask.models import soft_sharing as _soft_sharing  # noqa: F401
from polytask.models import tensor_factorised as _tensor_factorised  # noqa: F401
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


def input_kind(input_shape: Sequence[int] | FeatureSpec | SequenceSpec) -> str:
    """``tabular``, ``sequence``, ``image`` (C, H, W) or ``vector``: what an architecture's ``inputs`` name."""
    if isinstance(input_shape, FeatureSpec):
        return "tabular"
    if isinstance(input_shape, SequenceSpec):
        return "sequence"
    return "image" if len(tuple(input_shape)) == 3 else "vector"


def incompatibility(
    name: str, tasks: Sequence[Task], input_shape: Sequence[int] | FeatureSpec | SequenceSpec, build: bool = True
) -> str | None:
    """Why architecture ``name`` cannot run ``tasks`` on ``input_shape`` (None when it can). Checks the
    registered input kinds and dense-task support, then (``build``) that the model can be built."""
    from polytask.dense import DenseTask
    from polytask.errors import PolytaskError

    meta = MODELS.meta(name)
    kind = input_kind(input_shape)
    if kind not in meta.get("inputs", ()):
        return f"takes {'/'.join(meta.get('inputs', ()))} inputs, not {kind}"
    dense = [t.name for t in tasks if isinstance(t, DenseTask)]
    if dense and not meta.get("dense", False):
        return f"has no per-pixel heads for dense task(s) {dense}"
    if build:
        try:
            create(name, tasks=tasks, input_shape=input_shape)
        except PolytaskError as exc:
            return str(exc)
    return None


def compatible(tasks: Sequence[Task], input_shape: Sequence[int] | FeatureSpec | SequenceSpec) -> list[str]:
    """The architectures that can run ``tasks`` on ``input_shape`` (what ``--archs all`` means)."""
    return [n for n in available() if incompatibility(n, tasks, input_shape) is None]


__all__ = [
    "HPS",
    "MODELS",
    "MLPBackbone",
    "MultiTaskModel",
    "SmallCNN",
    "available",
    "compatible",
    "count_parameters",
    "create",
    "incompatibility",
    "input_kind",
]
