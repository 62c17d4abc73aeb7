"""Corrupt cache and run files are a miss, reported once and moved aside (issue 19, item 7)."""

import json

import pytest
import yaml

from polytask.cli import main

TINY = {"dataset_options": {"n_train": 128, "n_val": 64, "n_test": 64}, "batch_size": 32, "archs": ["hps_mlp"]}
def _compare_args(tmp_path):
    """``polytask compare`` of ew on a tiny multidigits, one seed and epoch (add ``--out``)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    return ["compare", "--config", str(cfg), "--methods", "ew", "--seeds", "1", "--epochs", "1", "--quiet"]


CORRUPTIONS = {
    "random_bytes": lambda path: path.write_bytes(bytes(range(256)) * 4),
    "json_list": lambda path: path.write_text("[1, 2, 3]"),
    "missing_fields": lambda path: path.write_text(
        json.dumps({"extra": json.loads(path.read_text())["extra"], "test_scores": {}})
    ),
    "wrong_score_type": lambda path: path.write_text(
        json.dumps({**json.loads(path.read_text()), "test_scores": {"left": {"accuracy": "high"}}})
    ),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_result_or_cache_file_is_a_miss(tmp_path, capsys, corruption):
    out = tmp_path / "out"
    args = _compare_args(tmp_path)
    assert main([*args, "--out", str(out), "--no-cache"]) == 0  # every run's files in --out
    first = json.loads((out / "results.json").read_text())
    run = out / "runs" / "hps_mlp" / "ew" / "seed0" / "result.json"
    baseline = out / "baselines" / "hps_mlp" / "left" / "seed0" / "result.json"
    CORRUPTIONS[corruption](run)
    CORRUPTIONS[corruption](baseline)
    (out / "runs" / "hps_mlp" / "ew" / "seed0" / "key.json").write_bytes(b"\xff\xfe garbled")
    capsys.readouterr()
    assert main([*args, "--out", str(out), "--no-cache"]) == 0
    printed = capsys.readouterr().out
    assert f"ignoring {run}" in printed and f"ignoring {baseline}" in printed
    assert run.with_name("result.json.corrupt").exists() and json.loads(run.read_text())["params"] > 0
    again = json.loads((out / "results.json").read_text())
    assert again["runs"][0]["test_scores"] == first["runs"][0]["test_scores"]  # made again, same numbers


def test_a_corrupt_cache_entry_is_a_miss(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("POLYTASK_CACHE", str(cache))
    args = _compare_args(tmp_path)
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    entries = sorted((cache / "stl").glob("*.json"))
    assert len(entries) == 3
    entries[0].write_text('{"extra": {"key_hash": "x"}')  # cut off
    entries[1].write_text("null")
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("ignoring") == 2 and len(list((cache / "stl").glob("*.corrupt"))) == 2
    assert len(list((cache / "stl").glob("*.json"))) == 3  # rewritten by the runs made again


def test_an_unwritable_out_or_cache_is_an_error_before_any_training(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    calls = []
    monkeypatch.setattr("polytask.compare.train_run", lambda *a, **k: calls.append(a))
    args = _compare_args(tmp_path)
    assert main([*args, "--out", str(blocker / "out")]) == 2
    assert f"the output directory (--out) {blocker / 'out'} is not a writable directory" in capsys.readouterr().err
    monkeypatch.setenv("POLYTASK_CACHE", str(blocker))
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert f"the cache directory ($POLYTASK_CACHE; or pass --no-cache) {blocker / 'stl'}" in capsys.readouterr().err
    assert calls == []  # nothing trained
    train = tmp_path / "t.yaml"
    train.write_text(yaml.safe_dump({"arch": "hps_mlp", "epochs": 1}))
    assert main(["train", "--config", str(train), "--out", str(blocker / "run"), "--quiet"]) == 2
    assert (
        f"the output directory (out / --out) {blocker / 'run'} is not a writable directory" in capsys.readouterr().err
    )


def test_temporaries_of_killed_writes_are_removed_and_files_follow_the_umask(tmp_path):
    import os
    import stat

    from polytask.utils import write_json

    target = tmp_path / "result.json"
    dead = tmp_path / ".result.json.999999999.abc123.tmp"  # no such process
    alive = tmp_path / f".result.json.{os.getppid()}.def456.tmp"  # a writer still at work
    dead.write_bytes(b"x" * 1000)
    alive.write_bytes(b"y")
    old = os.umask(0o022)
    try:
        write_json(target, {"a": 1})
    finally:
        os.umask(old)
    assert not dead.exists() and alive.exists()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not mkstemp's 0600


def test_a_second_compare_on_the_same_out_is_refused(tmp_path, capsys):
    from polytask.utils import directory_lock

    out = tmp_path / "out"
    args = _compare_args(tmp_path)
    with directory_lock(out, "a test"):  # what the first process holds while it runs
        assert main([*args, "--out", str(out)]) == 2
    assert f"{out} is in use by polytask process" in capsys.readouterr().err
    assert main([*args, "--out", str(out)]) == 0  # released


def test_a_run_killed_before_its_cache_write_fills_the_cache_next_time(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("POLYTASK_CACHE", str(cache))
    args = _compare_args(tmp_path)
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    for entry in (cache / "stl").glob("*.json"):  # as if killed between result.json and the cache write
        entry.unlink()
    calls = []
    monkeypatch.setattr("polytask.compare.train_run", lambda *a, **k: calls.append(a))
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert calls == [] and len(list((cache / "stl").glob("*.json"))) == 3
