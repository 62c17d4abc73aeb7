"""The public API (pt.Task, pt.models, pt.balancing, pt.metrics, pt.Trainer, pt.data) is documented."""

import inspect

import pytest

import polytask as pt

MODULES = {
    "": pt,
    "models": pt.models,
    "balancing": pt.balancing,
    "metrics": pt.metrics,
    "data": pt.data,
    "features": pt.features,
}


def public_objects():
    for prefix, module in MODULES.items():
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                yield f"{prefix}.{name}".lstrip("."), obj


@pytest.mark.parametrize(("name", "obj"), list(public_objects()))
def test_documented_and_typed(name, obj):
    assert obj.__doc__ and obj.__doc__.strip(), f"{name} has no docstring"
    if inspect.isfunction(obj):
        sig = inspect.signature(obj)
        assert sig.return_annotation is not inspect.Signature.empty, f"{name} lacks a return type"
        untyped = [
            p
            for p in sig.parameters.values()
            if p.annotation is inspect.Parameter.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]
        assert not untyped, f"{name}: untyped parameters {untyped}"
