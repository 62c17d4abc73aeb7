"""One registry helper for models, balancers, datasets and metrics: ``create(name, **kw)``, ``available()``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from polytask.errors import ConfigError, UnknownNameError
from polytask.typecheck import annotations_of, check_value

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a lower-case name to a factory (a class or a function) and a one-line description."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._descriptions: dict[str, str] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(
        self, name: str, description: str | None = None, **meta: Any
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@REGISTRY.register("ew")`` on a class or factory function; ``meta``: facts about
        the entry that callers may filter on (e.g. an architecture's ``inputs``)."""
        key = name.lower()

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if key in self._factories:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._factories[key] = factory
            self._descriptions[key] = description or _first_sentence(factory.__doc__ or "")
            self._meta[key] = dict(meta)
            return factory

        return deco

    def meta(self, name: str) -> dict[str, Any]:
        """The facts registered with ``name`` (empty when none)."""
        self.get(name)
        return self._meta[str(name).lower()]

    def get(self, name: str) -> Callable[..., T]:
        key = str(name).lower()
        if key not in self._factories:
            raise UnknownNameError(self.kind, str(name), self._factories)
        return self._factories[key]

    def options(self, name: str) -> list[str]:
        """Keyword options the factory of ``name`` accepts."""
        params = inspect.signature(self.get(name)).parameters.values()
        return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def check_options(self, name: str, kwargs: dict) -> None:
        """Raise :class:`ConfigError` naming any option the factory of ``name`` does not take."""
        params = inspect.signature(self.get(name)).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return
        valid = self.options(name)
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ConfigError(
                f"{self.kind} {name!r} has no option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}"
            )

    def check_option_types(self, name: str, kwargs: dict, where: str) -> dict:
        """``kwargs`` checked against the annotations of the factory of ``name`` (for options from a config
        file; ``where`` is their key path, e.g. ``method_options.famo``): unknown options and values of the
        wrong type are :class:`ConfigError` naming the key; returns them coerced (``1e-3`` read as a
        string by YAML becomes a float)."""
        if not isinstance(kwargs, dict):
            raise ConfigError(f"config key {where}: expected a mapping of options, got {kwargs!r}")
        self.check_options(name, kwargs)
        hints = annotations_of(self.get(name))
        return {k: check_value(f"{where}.{k}", v, hints[k]) if k in hints else v for k, v in kwargs.items()}

    def create(self, name: str, **kwargs) -> T:
        """Build ``name``; an option the factory does not take, or a required one not given, is an error
        naming it."""
        self.check_options(name, kwargs)
        params = inspect.signature(self.get(name)).parameters.values()
        required = [
            p.name
            for p in params
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in kwargs
        ]
        if required:
            raise ConfigError(
                f"{self.kind} {name!r} needs option(s) {', '.join(required)} "
                f"(e.g. {self.kind}_options: {{{required[0]}: ...}} in a config file)"
            )
        return self.get(name)(**kwargs)

    def available(self) -> list[str]:
        return sorted(self._factories)

    def documentation(self, name: str, passed: tuple[str, ...] = (), config_key: str = "") -> str:
        """The full docstring of ``name`` and its options with their defaults, leaving out the arguments
        the library passes itself (``passed``, e.g. ``tasks``); ``config_key``: where a config file sets
        them."""
        factory = self.get(name)
        doc = inspect.cleandoc(factory.__doc__ or self._descriptions[str(name).lower()])
        lines = []
        for p in inspect.signature(factory).parameters.values():
            if p.name in passed or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                continue
            lines.append(f"  {p.name} (required)" if p.default is p.empty else f"  {p.name} = {p.default!r}")
        options = "\n".join(lines) if lines else "  (none)"
        where = f" ({config_key} in a config file)" if config_key else ""
        return f"{self.kind} {str(name).lower()}\n\n{doc}\n\noptions{where}:\n{options}"

    def describe(self) -> dict[str, str]:
        return {k: self._descriptions[k] for k in self.available()}

    def __contains__(self, name: str) -> bool:
        return str(name).lower() in self._factories


def _first_sentence(doc: str, limit: int = 110) -> str:
    """The docstring's first paragraph on one line, cut at a word boundary to at most ``limit`` chars."""
    text = " ".join(doc.strip().split("\n\n")[0].split())
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + " …"
