"""The architecture registry: factories ``(tasks, input_shape, **options) -> MultiTaskModel``."""

from __future__ import annotations

from polytask.registry import Registry

MODELS: Registry = Registry("architecture")
register = MODELS.register
