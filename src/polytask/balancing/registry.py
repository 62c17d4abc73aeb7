"""The registry of balancing methods: ``create(name, tasks=..., **kwargs)``, ``available()``."""

from __future__ import annotations

from polytask.registry import Registry

BALANCERS: Registry = Registry("method")
register = BALANCERS.register
