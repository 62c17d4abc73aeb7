"""Exceptions polytask raises for bad input. Each names the offending thing."""

from __future__ import annotations

from collections.abc import Iterable


class PolytaskError(ValueError):
    """Base class of every error polytask raises on purpose."""


class UnknownNameError(PolytaskError, KeyError):
    """A dataset, architecture, method, metric or config key that does not exist."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(self.valid) or '(none)'}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class TaskMismatchError(PolytaskError):
    """Model outputs, targets or losses that do not line up with the declared tasks."""


class NonFiniteLossError(PolytaskError, FloatingPointError):
    """A task's loss became NaN or infinite."""

    def __init__(self, tasks: list[str], where: str = ""):
        self.tasks = tasks
        suffix = f" at {where}" if where else ""
        super().__init__(f"non-finite loss for task(s) {', '.join(tasks)}{suffix}")


class NoTaskPresentError(PolytaskError):
    """Every task's loss is None: no task has a labelled sample in the batch (on any process)."""


class EmptyShareError(PolytaskError):
    """Under torch.distributed one process has no task in its share of the batch, and the method needs
    every process in its per-task backward; raised in every process alike."""


class NonFiniteGradientError(PolytaskError, FloatingPointError):
    """Per-task gradients became NaN or infinite although the losses are finite."""


class NonFiniteMetricError(PolytaskError, FloatingPointError):
    """The selected model, or its validation or test losses, hold NaN or inf: no result to report."""


class CheckpointError(PolytaskError):
    """A checkpoint that is missing, unreadable or incompatible."""


class ConfigError(PolytaskError):
    """A configuration file or value that is invalid."""


class SolverError(PolytaskError, ArithmeticError):
    """A balancing method's optimisation sub-problem has no solution or its solver failed."""
