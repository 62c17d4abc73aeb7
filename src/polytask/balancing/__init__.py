"""Balancing methods: ``create(name, tasks=..., **kwargs)``, ``available()``.

Loss weightings: ew, uw, gls, dwa, dtp, lbtw, rlw, famo, imtl_l. Gradient methods: gradnorm, mgda, mgda_ub,
pcgrad, cagrad, nash_mtl, imtl_g, imtl, graddrop, gradvac, aligned_mtl, upgrad. See :class:`Balancer` for
the one-call interface.
"""

from __future__ import annotations

from collections.abc import Sequence

from polytask.balancing import gradient, gramian_weightings, jacobian, weightings
from polytask.balancing.base import Balancer, LossWeighting
from polytask.balancing.gradient import GradientBalancer
from polytask.balancing.registry import BALANCERS


def create(name: str, tasks: Sequence[str] | int, **kwargs) -> Balancer:
    """Build the balancing method ``name`` for ``tasks`` (names, or their number)."""
    return BALANCERS.create(name, tasks=tasks, **kwargs)


def available() -> list[str]:
    """Names of every registered balancing method."""
    return BALANCERS.available()


__all__ = [
    "BALANCERS",
    "Balancer",
    "GradientBalancer",
    "LossWeighting",
    "available",
    "create",
    "gradient",
    "gramian_weightings",
    "jacobian",
    "weightings",
]
