"""Whether a balancing method can train a model on given tasks, checked before any training: a gradient
method on a model without shared parameters, a representation-gradient method (MGDA-UB, GradDrop,
``rep_grad=True``) on one without a single shared representation, or DTP on tasks without a KPI would
otherwise fail at the first step or the first epoch's end, after the set-up (and a search) is paid."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from polytask.balancing.base import Balancer
from polytask.errors import ConfigError
from polytask.tasks import Task


def pairing_problem(model: nn.Module, balancer: Balancer, tasks: Sequence[Task]) -> str | None:
    """Why ``balancer`` cannot train ``model`` on ``tasks`` (a phrase whose subject is the method); None
    when it can. ``model`` needs ``shared_parameters()``; its ``has_representation`` flag is read when
    it says True or False (a model of the user's own that does not say is not checked for z: that shows
    in the first step)."""
    shared = list(model.shared_parameters()) if hasattr(model, "shared_parameters") else []
    problem = balancer.incompatibility(shared, getattr(model, "has_representation", None))
    if problem:
        return problem
    if balancer.needs_kpis:
        missing = [t.name for t in tasks if t.kpi is None]
        if missing:
            return f"needs a KPI in [0, 1] for every task (Task(kpi=...)); task(s) {', '.join(missing)} have none"
    return None


def check_pairing(model: nn.Module, balancer: Balancer, tasks: Sequence[Task]) -> None:
    """Raise a :class:`~polytask.errors.ConfigError` naming the method, the model and the reason when
    ``balancer`` cannot train ``model`` on ``tasks``."""
    problem = pairing_problem(model, balancer, tasks)
    if problem:
        raise ConfigError(f"method {balancer.name!r} cannot train {type(model).__name__}: it {problem}")
