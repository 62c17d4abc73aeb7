"""Checking configuration values (parsed YAML or keyword options) against type annotations, with errors
that name the key path (``method_options.famo.gamma``, ``seeds[1]``).

Only what YAML can hold is checked: None, bool, int, float, str, lists (``list``, ``tuple``,
``Sequence``), mappings (``dict``, ``Mapping``), ``Literal``, unions and ``Any``; any other annotation (a
class, a callable) is accepted as is. One coercion: a float written the way YAML 1.1 reads as a string
(``1e-3``) becomes that float, and an integer where a float is expected becomes a float.
"""

from __future__ import annotations

import collections.abc as cabc
import re
import types
import typing
from typing import Any

from polytask.errors import ConfigError

_FLOAT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_LISTS = (list, tuple, cabc.Sequence, cabc.MutableSequence)
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)


class _Mismatch(Exception):
    def __init__(self, where: str, expected: str, value: Any):
        super().__init__(where)
        self.where, self.expected, self.value = where, expected, value


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(annotation))
    base = origin or annotation
    if base in _LISTS:
        return "a list"
    if base in _MAPPINGS:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        base, getattr(base, "__name__", str(base))
    )


def _check(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is Any or isinstance(annotation, (str, typing.TypeVar)):
        return value
    if origin in (typing.Union, types.UnionType):
        inner = None
        for arg in typing.get_args(annotation):
            try:
                return _check(value, arg, where)
            except _Mismatch as exc:  # the deepest mismatch says most (e.g. seeds[1], not seeds)
                if inner is None or exc.where != where:
                    inner = exc
        if inner is not None and inner.where != where:
            raise inner
        raise _Mismatch(where, _describe(annotation), value)
    if annotation is type(None) or annotation is None:
        if value is not None:
            raise _Mismatch(where, "null", value)
        return value
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise _Mismatch(where, _describe(annotation), value)
        return value
    base = origin or annotation
    if base is bool:
        if not isinstance(value, bool):
            raise _Mismatch(where, "true or false", value)
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Mismatch(where, "an integer", value)
        return value
    if base is float:
        if isinstance(value, str) and _FLOAT.match(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch(where, "a number", value)
        return float(value)
    if base is str:
        if not isinstance(value, str):
            raise _Mismatch(where, "a string", value)
        return value
    if base in _LISTS:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(where, "a list", value)
        args = typing.get_args(annotation)
        if base is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise _Mismatch(where, f"a list of {len(args)}", value)
            return type(value)(_check(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        return type(value)(_check(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if base in _MAPPINGS:
        if not isinstance(value, dict):
            raise _Mismatch(where, "a mapping", value)
        key_type, value_type = (typing.get_args(annotation) or (Any, Any))[:2]
        return {_check(k, key_type, where): _check(v, value_type, f"{where}.{k}") for k, v in value.items()}
    return value  # a class, a callable...: not something YAML holds


def check_value(where: str, value: Any, annotation: Any) -> Any:
    """``value`` checked against ``annotation`` (coerced where YAML needs it); :class:`ConfigError` naming
    the key path otherwise."""
    try:
        return _check(value, annotation, where)
    except _Mismatch as exc:
        raise ConfigError(f"config key {exc.where}: expected {exc.expected}, got {exc.value!r}") from None


def annotations_of(factory: Any) -> dict[str, Any]:
    """The resolved parameter annotations of a function or class (its ``__init__``); {} where they cannot
    be resolved."""
    target = factory.__init__ if isinstance(factory, type) else factory
    try:
        return typing.get_type_hints(target)
    except Exception:  # a forward reference that only exists for type checkers
        return {}
