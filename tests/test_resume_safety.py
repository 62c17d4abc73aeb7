"""Resume and run files (issue 19): a torn log line does not block resume (item 8), a changed config is
refused on resume (item 4), a fresh run does not overwrite an earlier one (item 14)."""

import json

import pytest

import polytask as pt
from polytask.cli import main


def test_a_torn_last_log_line_does_not_block_resume(tiny_data, build_trainer, tmp_path):
    full = build_trainer(tiny_data, epochs=3, out_dir=tmp_path / "full").fit()
    build_trainer(tiny_data, epochs=2, out_dir=tmp_path / "part").fit()
    log = tmp_path / "part" / "log.jsonl"
    with log.open("a") as f:  # a kill or a full disk during an append
        f.write('{"epoch": 3, "train_loss": {"left": 0.5')
    assert pt.training.logs.EpochLogger(tmp_path / "part").read()[-1]["epoch"] == 2  # the torn line left out
    resumed = build_trainer(tiny_data, epochs=3, out_dir=tmp_path / "part").fit(resume=True)
    assert resumed.test_scores == full.test_scores
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    csv_rows = (tmp_path / "part" / "log.csv").read_text().splitlines()
    assert len(csv_rows) == 4 and csv_rows[0].startswith("epoch,")


def _train_yaml(tmp_path, name, **changes):
    import yaml

    values = {
        "dataset_options": {"n_train": 128, "n_val": 64, "n_test": 64},
        "batch_size": 32,
        "arch": "hps_mlp",
        "method": "ew",
        "epochs": 2,
        "lr": 0.002,
        "seed": 0,
        **changes,
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.mark.parametrize(
    ("change", "listed"),
    [
        ({"lr": 0.01}, "lr: 0.002 -> 0.01"),
        ({"method": "uw"}, "method: 'ew' -> 'uw'"),
        ({"seed": 3}, "seed: 0 -> 3"),
        ({"dataset_options": {"n_train": 96, "n_val": 64, "n_test": 64}}, "dataset_options:"),
    ],
)
def test_resume_refuses_a_changed_config_listing_the_keys(tmp_path, capsys, change, listed):
    out = str(tmp_path / "run")
    assert main(["train", "--config", _train_yaml(tmp_path, "a.yaml"), "--out", out, "--quiet"]) == 0
    changed = _train_yaml(tmp_path, "b.yaml", epochs=3, **change)
    assert main(["train", "--config", changed, "--out", out, "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--resume with a config that differs from the checkpoint's" in err and listed in err


def test_resume_may_raise_epochs_but_not_lower_them(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--config", _train_yaml(tmp_path, "a.yaml", epochs=3), "--out", out, "--quiet"]) == 0
    assert main(["train", "--config", _train_yaml(tmp_path, "b.yaml", epochs=2), "--out", out, "--resume"]) == 2
    assert "epochs 2 < the 3 the run was started with" in capsys.readouterr().err
    assert (
        main(["train", "--config", _train_yaml(tmp_path, "c.yaml", epochs=4), "--out", out, "--resume", "--quiet"]) == 0
    )
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] == 4
    rows = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3, 4]


def test_a_fresh_run_does_not_overwrite_an_earlier_one(tmp_path, capsys):
    out = str(tmp_path / "run")
    cfg = _train_yaml(tmp_path, "a.yaml")
    assert main(["train", "--config", cfg, "--out", out, "--quiet"]) == 0
    before = (tmp_path / "run" / "result.json").read_text()
    assert main(["train", "--config", _train_yaml(tmp_path, "b.yaml", seed=1), "--out", out, "--quiet"]) == 2
    assert "already holds a run (checkpoint.pt, result.json" in capsys.readouterr().err
    assert (tmp_path / "run" / "result.json").read_text() == before
    assert (
        main(["train", "--config", _train_yaml(tmp_path, "b.yaml", seed=1), "--out", out, "--overwrite", "--quiet"])
        == 0
    )
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 1


def test_a_flipped_byte_in_the_checkpoint_is_found_on_load(tiny_data, build_trainer, tmp_path):
    build_trainer(tiny_data, epochs=1, out_dir=tmp_path).fit()
    path = tmp_path / "checkpoint.pt"
    raw = bytearray(path.read_bytes())
    # a byte in the middle of the largest tensor's data (the first layer's weights), not in any header
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(pt.CheckpointError, match="does not match its checksum"):
        build_trainer(tiny_data, epochs=2, out_dir=tmp_path).fit(resume=True)


def test_a_checkpoint_without_the_trainers_keys_is_a_clear_error(tiny_data, build_trainer, tmp_path):
    from polytask.training.checkpoint import save_checkpoint

    build_trainer(tiny_data, epochs=1, out_dir=tmp_path).fit()
    save_checkpoint(tmp_path / "checkpoint.pt", {"model": {}, "epoch": 1})  # hand-made
    with pytest.raises(pt.CheckpointError, match="lacks optimizer, balancer, rng, history"):
        build_trainer(tiny_data, epochs=2, out_dir=tmp_path).fit(resume=True)
