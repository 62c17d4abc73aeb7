"""The key that decides whether a cached or finished run is reused (issue 19, item 1): derived from every
field of the resolved compare settings, so that a field added later cannot be forgotten."""

import dataclasses
import json
import typing

import pytest
import yaml

from polytask import compare as compare_module
from polytask.cli import main
from polytask.compare import NOT_IN_RUN_KEY, Comparison
from polytask.config import CompareConfig
from polytask.data.base import config_hash

# valid alternatives for string fields (a new string field without one fails here, on purpose)
STRING_ALTERNATIVES = {"on_nonfinite": "skip", "dataset": "funnel", "search_budget": "included"}
DICT_ALTERNATIVES = {"dataset_options": {"n_train": 100}}
NONE_ALTERNATIVES = {int: 3, float: 0.5, str: "x", dict: {"probe": 1}, list: ["probe"]}


def _changed(field: dataclasses.Field, value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2
    if isinstance(value, str):
        return STRING_ALTERNATIVES[field.name]
    if isinstance(value, dict):
        return {**value, **DICT_ALTERNATIVES[field.name]}
    if isinstance(value, list):
        return [*value, "probe"]
    assert value is None, (field.name, value)
    hints = typing.get_type_hints(CompareConfig)
    kinds = [typing.get_origin(a) or a for a in typing.get_args(hints[field.name]) if a is not type(None)]
    return NONE_ALTERNATIVES[kinds[0]]


def _key(config: CompareConfig) -> str:
    return config_hash(Comparison(config, progress=False)._settings_key())


def test_every_settings_field_changes_the_run_key():
    base = CompareConfig(epochs=2, batch_size=32, lr=1e-3)
    checked = []
    for field in dataclasses.fields(CompareConfig):
        if field.name in NOT_IN_RUN_KEY or field.name == "device":
            continue
        changed = dataclasses.replace(base, **{field.name: _changed(field, getattr(base, field.name))})
        assert _key(changed) != _key(base), f"changing {field.name!r} leaves the run key unchanged"
        checked.append(field.name)
    assert {"epochs", "batch_size", "lr", "amp", "on_nonfinite", "patience", "dataset", "dataset_options"} <= set(
        checked
    )


def test_the_key_holds_the_device_kind_and_the_versions():
    key = Comparison(CompareConfig(device="cpu"), progress=False)._settings_key()
    assert key["device"] == "cpu" and key["torch"] and "device" in key
    assert Comparison(CompareConfig(device="auto"), progress=False)._settings_key()["device"] in ("cpu", "cuda")


def test_fields_left_out_of_the_key_exist():  # a renamed field must not silently leave the exclusions
    assert {f.name for f in dataclasses.fields(CompareConfig)} >= NOT_IN_RUN_KEY


def test_patience_is_not_served_from_runs_without_it(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    tiny = {"dataset_options": {"n_train": 128, "n_val": 64, "n_test": 64}, "batch_size": 32, "archs": ["hps_mlp"]}
    cfg.write_text(yaml.safe_dump(tiny))
    args = ["compare", "--config", str(cfg), "--methods", "ew", "--seeds", "1", "--epochs", "2", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    calls = []
    real = compare_module.train_run
    monkeypatch.setattr(compare_module, "train_run", lambda *a, **k: calls.append(a) or real(*a, **k))
    cfg.write_text(yaml.safe_dump({**tiny, "patience": 1}))
    assert main([*args, "--out", str(tmp_path / "a")]) == 0  # same output directory, same cache
    assert len(calls) == 4  # three single-task baselines and the multi-task run, none reused
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["config"]["patience"] == 1


@pytest.mark.parametrize("name", sorted(NOT_IN_RUN_KEY))
def test_fields_left_out_of_the_key_do_not_change_it(name):
    base = CompareConfig(epochs=2, batch_size=32, lr=1e-3, archs=["hps_mlp"], methods=["ew"])
    field = next(f for f in dataclasses.fields(CompareConfig) if f.name == name)
    value = {
        "archs": ["hps_cnn"],
        "methods": ["mgda"],
        "seeds": [5],
        "tasks": ["left"],
        "auxiliary": ["sum"],
        "arch_options": {"hps_mlp": {}},
        "method_options": {"ew": {}},
        "out": "elsewhere",
        "cache": False,
        "delta": "m",
    }[name]
    assert _key(dataclasses.replace(base, **{field.name: value})) == _key(base)


def test_files_you_download_enter_the_key(tmp_path):
    import os

    data = tmp_path / "census"
    data.mkdir()
    (data / "census-income.data").write_text("a, b\n")
    (data / "census-income.test").write_text("a, b\n")
    config = CompareConfig(dataset="census_income", dataset_options={"path": str(data)}, epochs=1)
    before = _key(config)
    assert _key(config) == before
    stat = (data / "census-income.data").stat()
    (data / "census-income.data").write_text("a, c\n")  # replaced in place, same name and size
    os.utime(data / "census-income.data", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert _key(config) != before
