"""The polytask command: compare, train, list, report, and its errors."""

import json
import os
import subprocess
import sys

import pytest
import yaml

import polytask as pt
from polytask import compare as compare_module
from polytask.cli import main

TINY = {"dataset_options": {"n_train": 128, "n_val": 64, "n_test": 64}, "batch_size": 32}


def write_yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_list_prints_every_registry(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("multidigits", "hps_cnn", "hps_mlp", "ew", "uw", "gls", "dwa", "dtp", "lbtw", "rlw", "famo"):
        assert f"  {name} " in out


def test_list_one_entry_shows_its_documentation_and_options(capsys):
    assert main(["list", "cagrad", "mmoe"]) == 0
    out = capsys.readouterr().out
    assert "method cagrad\n\nCAGrad (Liu et al. 2021)" in out
    assert "options (method_options in a config file):\n  c = 0.4\n  rescale = 1\n" in out
    assert "architecture mmoe" in out and "options (arch_options in a config file):\n  n_experts = 8" in out
    assert "tasks" not in out.split("options (arch_options")[1]  # passed by the library, not an option
    assert main(["list", "multidigits"]) == 0
    assert "  labelled = None    ({task: fraction}" in capsys.readouterr().out
    assert main(["list", "mgdaa"]) == 2
    assert "unknown name 'mgdaa': not a dataset, architecture or method" in capsys.readouterr().err


def test_compare_writes_results_leaderboard_and_report(tmp_path, capsys):
    cfg = write_yaml(tmp_path / "c.yaml", {**TINY, "archs": ["hps_mlp"]})
    out = tmp_path / "out"
    args = ["compare", "--config", cfg, "--methods", "ew,famo", "--seeds", "2", "--epochs", "2", "--out", str(out)]
    assert main([*args, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| famo" in printed and "| single-task" in printed and "ΔMTL" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == "polytask.compare/1"
    assert {(r["method"], r["seed"]) for r in results["runs"]} == {("ew", 0), ("ew", 1), ("famo", 0), ("famo", 1)}
    base = results["baselines"]["hps_mlp"]["test"]
    for run in results["runs"]:  # both ΔMTL conventions recomputed from the saved scores
        dirs = {t["name"]: t["metrics"] for t in results["tasks"]}
        assert run["delta_mtl"] == pytest.approx(pt.metrics.delta_mtl(run["test_scores"], base, dirs))
        assert run["delta_m"] == pytest.approx(pt.metrics.delta_mtl(run["test_scores"], base, dirs, "m"))
    for s in results["summary"]:
        assert s["delta_mtl"]["n"] == 2 and s["delta_m"]["n"] == 2 and s["params"] > 0 and s["ms_per_step"] > 0
    convention = results["delta_mtl_convention"]
    assert convention["leaderboard"] == "p" and "Δp" in convention["delta_mtl"] and "Δm" in convention["delta_m"]
    means = [s["delta_mtl"]["mean"] for s in results["summary"]]
    assert means == sorted(means, reverse=True)  # Δp: higher is better
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and 'src="http' not in html
    assert "Δp % ↑" in html and "Δm % ↓" in html
    board = (out / "leaderboard.md").read_text()
    assert "| famo" in board and board.index("Δp % ↑") < board.index("Δm % ↓")
    assert main(["report", str(out)]) == 0  # rebuilt from results.json alone
    # --delta m on the same output: the finished runs are reused, the leaderboard sorts and leads with Δm
    assert main([*args, "--quiet", "--delta", "m"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert [r["test_scores"] for r in again["runs"]] == [r["test_scores"] for r in results["runs"]]
    assert again["delta_mtl_convention"]["leaderboard"] == "m"
    means = [s["delta_m"]["mean"] for s in again["summary"]]
    assert means == sorted(means)  # Δm: lower is better
    board = (out / "leaderboard.md").read_text()
    assert board.index("Δm % ↓") < board.index("Δp % ↑")


def test_compare_rejects_an_unknown_delta_convention(tmp_path, capsys):
    cfg = write_yaml(tmp_path / "c.yaml", {**TINY, "delta": "q"})
    assert main(["compare", "--config", cfg, "--quiet"]) != 0
    assert "delta must be 'p' (Δp, per task) or 'm' (Δm, per metric), got 'q'" in capsys.readouterr().err


def test_single_task_baselines_are_cached(tmp_path, monkeypatch):
    cfg = write_yaml(tmp_path / "c.yaml", {**TINY, "archs": ["hps_mlp"]})
    args = ["compare", "--config", cfg, "--methods", "ew", "--seeds", "1", "--epochs", "1", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    calls = []
    real = compare_module.train_run
    monkeypatch.setattr(compare_module, "train_run", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert len(calls) == 1  # only the multi-task run; the three single-task runs came from the cache
    a = json.loads((tmp_path / "a" / "results.json").read_text())["baselines"]
    b = json.loads((tmp_path / "b" / "results.json").read_text())["baselines"]
    assert a["hps_mlp"]["test"] == b["hps_mlp"]["test"]
    calls.clear()
    assert main([*args, "--out", str(tmp_path / "c"), "--no-cache"]) == 0
    assert len(calls) == 4


def test_compare_rerun_in_same_out_reuses_finished_runs(tmp_path, monkeypatch):
    cfg = write_yaml(tmp_path / "c.yaml", {**TINY, "archs": ["hps_mlp"], "cache": False})
    args = [
        "compare",
        "--config",
        cfg,
        "--methods",
        "ew",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 0
    calls = []
    monkeypatch.setattr(compare_module, "train_run", lambda *a, **k: calls.append(a))
    assert main(args) == 0 and calls == []


def test_compare_errors_list_valid_names(tmp_path, capsys):
    assert main(["compare", "--methods", "ew,magic", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'magic'" in err and "famo" in err
    assert main(["compare", "--archs", "resnet50", "--out", str(tmp_path)]) == 2
    assert "unknown architecture 'resnet50'" in capsys.readouterr().err
    assert main(["compare", "--dataset", "nyuv3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'nyuv3'; valid datasets: " in err and "multidigits" in err
    bad = write_yaml(tmp_path / "bad.yaml", {"epoch": 3})
    assert main(["compare", "--config", bad]) == 2
    assert "unknown config key(s) epoch; valid keys:" in capsys.readouterr().err
    bad = write_yaml(tmp_path / "bad2.yaml", {"epochs": "many"})
    assert main(["compare", "--config", bad]) == 2
    assert "config key epochs: expected an integer or null, got 'many'" in capsys.readouterr().err
    bad = write_yaml(tmp_path / "bad3.yaml", {"method_options": {"dwa": {"temp": 2}}})
    assert main(["compare", "--config", bad]) == 2
    assert "method 'dwa' has no option(s) temp" in capsys.readouterr().err
    assert main(["compare", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_from_yaml_and_resume(tmp_path, capsys):
    cfg = write_yaml(
        tmp_path / "t.yaml", {**TINY, "arch": "hps_mlp", "method": "dwa", "epochs": 2, "out": str(tmp_path / "run")}
    )
    assert main(["train", "--config", cfg, "--quiet"]) == 0
    assert "best epoch" in capsys.readouterr().out
    assert (tmp_path / "run" / "checkpoint.pt").exists() and (tmp_path / "run" / "log.jsonl").exists()
    cfg3 = write_yaml(tmp_path / "t3.yaml", {**TINY, "arch": "hps_mlp", "method": "dwa", "epochs": 3})
    assert main(["train", "--config", cfg3, "--out", str(tmp_path / "run"), "--resume", "--quiet"]) == 0
    rows = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]
    bad = write_yaml(tmp_path / "bad.yaml", {"methdo": "ew"})
    assert main(["train", "--config", bad]) == 2
    assert "unknown config key(s) methdo" in capsys.readouterr().err


def test_acceptance_command_runs_as_a_console_script(tmp_path):
    """`polytask compare --methods ew,uw --seeds 1 --epochs 1 --out DIR` on the default dataset."""
    env = {**os.environ, "POLYTASK_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "polytask",
            "compare",
            "--methods",
            "ew,uw",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| uw" in proc.stdout
    assert all((tmp_path / "o" / f).exists() for f in ("results.json", "leaderboard.md", "report.html"))


def test_example_configs_are_valid():
    from pathlib import Path

    from polytask.compare import Comparison
    from polytask.config import CompareConfig, RunConfig, from_mapping, load_yaml

    root = Path(__file__).resolve().parents[1] / "examples" / "configs"
    for name in ("compare_multidigits.yaml", "compare_gradient_methods.yaml", "compare_partial_labels.yaml"):
        Comparison(from_mapping(CompareConfig, load_yaml(root / name)), progress=False)
    config = from_mapping(RunConfig, load_yaml(root / "train_dwa.yaml"))
    pt.balancing.create(config.method, tasks=3, **config.method_options)


def test_reused_runs_with_nan_metrics_load_as_nan(tmp_path):
    from polytask.compare import _scores_from_json

    loaded = _scores_from_json({"test_scores": {"a": {"auc": None, "acc": 0.5}}, "val_scores": None})
    assert (
        loaded["test_scores"]["a"]["acc"] == 0.5
        and loaded["test_scores"]["a"]["auc"] != loaded["test_scores"]["a"]["auc"]
    )


def test_compare_methods_all_runs_every_method(tmp_path, capsys):
    out = tmp_path / "all"
    args = ["compare", "--methods", "all", "--archs", "hps_mlp", "--seeds", "1", "--epochs", "1"]
    cfg = write_yaml(tmp_path / "c.yaml", TINY)
    assert main([*args, "--config", cfg, "--out", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in results["runs"]} == set(pt.balancing.available())


def test_compare_recommender_family_on_mmoe_synthetic(tmp_path):
    cfg = write_yaml(
        tmp_path / "r.yaml",
        {
            "dataset": "mmoe_synthetic",
            "dataset_options": {"n_train": 256, "n_val": 64, "n_test": 64},
            "archs": ["shared_bottom", "omoe", "mmoe", "cgc", "ple"],
            "methods": ["ew"],
            "seeds": [0],
            "epochs": 1,
        },
    )
    assert main(["compare", "--config", cfg, "--out", str(tmp_path / "o"), "--quiet"]) == 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert {r["arch"] for r in results["runs"]} == {"shared_bottom", "omoe", "mmoe", "cgc", "ple"}


def test_auxiliary_tasks_are_reported_but_not_selected_on(tmp_path, tiny_data):
    from polytask.compare import Comparison
    from polytask.config import CompareConfig

    config = CompareConfig(
        dataset="multidigits",
        dataset_options={"n_train": 192, "n_val": 96, "n_test": 96},
        methods=["ew"],
        seeds=[0],
        epochs=2,
        auxiliary=["sum"],
        out=str(tmp_path),
    )
    results = Comparison(config, progress=False, log=lambda s: None).run()
    roles = {t["name"]: t["role"] for t in results["tasks"]}
    assert roles == {"left": "primary", "right": "primary", "sum": "auxiliary"}
    run = results["runs"][0]
    base = results["baselines"]["hps_cnn"]["test"]
    primary = {t["name"]: t["metrics"] for t in results["tasks"] if t["role"] == "primary"}
    assert run["delta_mtl"] == pytest.approx(pt.metrics.delta_mtl(run["test_scores"], base, primary))
    assert "sum" in run["test_scores"]  # still reported
    board = (tmp_path / "leaderboard.md").read_text()
    assert "sum (aux) mae" in board and "primary tasks only" in board
    with pytest.raises(pt.errors.TaskMismatchError, match="no task 'summ'"):
        tiny_data.with_auxiliary(["summ"])


def test_compare_leaves_out_pairs_that_cannot_train_and_says_why(tmp_path, capsys):
    """MGDA-UB needs one shared representation: MMoE has none. The grid runs every other pair and names
    the missing one in the log, results.json and the leaderboard; a request with no runnable pair fails
    before any training."""
    cfg = {"dataset": "mmoe_synthetic", "dataset_options": {"n_train": 128, "n_val": 64, "n_test": 64}}
    cfg = {**cfg, "seeds": [0], "epochs": 1, "batch_size": 32, "method_options": {"famo": {"lr": 0.01}}}
    cfg = write_yaml(tmp_path / "r.yaml", cfg)
    out = tmp_path / "o"
    args = ["compare", "--config", cfg, "--archs", "shared_bottom,mmoe", "--methods", "ew,mgda_ub"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "method_options for famo not used: not among the methods run (ew, mgda_ub)" in printed
    assert "not run: mgda_ub on mmoe: the method needs the gradients w.r.t. one shared representation" in printed
    results = json.loads((out / "results.json").read_text())
    ran = {(r["method"], r["arch"]) for r in results["runs"]}
    assert ran == {("ew", "shared_bottom"), ("ew", "mmoe"), ("mgda_ub", "shared_bottom")}
    assert [(s["method"], s["arch"]) for s in results["not_run"]] == [("mgda_ub", "mmoe")]
    assert "Not run (the method cannot train the architecture)" in (out / "leaderboard.md").read_text()
    assert "mgda_ub on mmoe" in (out / "report.html").read_text()

    none = tmp_path / "none"
    assert main(["compare", "--config", cfg, "--archs", "mmoe", "--methods", "graddrop", "--out", str(none)]) == 2
    err = capsys.readouterr().err
    assert "no requested method can train a requested architecture" in err and "graddrop on mmoe" in err
    assert not (none / "baselines").exists()


def test_compare_and_group_refuse_to_run_under_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["compare", "--methods", "ew"]) == 2
    assert "polytask compare runs in one process" in capsys.readouterr().err
    assert main(["group"]) == 2
    assert "polytask group runs in one process" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("seeds", [0, 0], "seeds lists 0 more than once: [0, 0]"), ("methods", ["ew", "ew"], "methods lists ew more")],
)
def test_a_repeated_seed_or_method_is_an_error(tmp_path, capsys, key, value, message):
    cfg = write_yaml(tmp_path / "c.yaml", {**TINY, key: value})
    assert main(["compare", "--config", cfg, "--quiet"]) != 0
    assert message in capsys.readouterr().err
    assert main(["compare", "--seeds", "0,0", "--quiet", "--out", str(tmp_path / "o")]) != 0
    assert "seeds lists 0 more than once" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dataset_options": {"n_train": "abc"}}, "config key dataset_options.n_train: expected an integer, got 'abc'"),
        ({"method_options": {"famo": 0.5}}, "config key method_options.famo: expected a mapping"),
        ({"methods": [1]}, "config key methods[0]: expected a string, got 1"),
        ({"seeds": [0, 1.5]}, "config key seeds[1]: expected an integer, got 1.5"),
        ({"method_options": {"famo": {"gamma": "high"}}}, "config key method_options.famo.gamma: expected a number"),
        ({"arch_options": {"hps_mlp": {"dropout": [0.1]}}}, "config key arch_options.hps_mlp.dropout: expected"),
    ],
)
def test_nested_option_values_are_type_checked_naming_the_key_path(tmp_path, capsys, values, message):
    cfg = write_yaml(tmp_path / "c.yaml", {**TINY, "archs": ["hps_mlp"], "methods": ["famo"], **values})
    assert main(["compare", "--config", cfg, "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_yaml_1_1_floats_written_as_1e_minus_3_are_accepted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nmethod_options:\n  famo:\n    gamma: 1e-3\n")
    config = pt.config.from_mapping(pt.config.CompareConfig, pt.config.load_yaml(path))
    assert config.lr == 0.001 and isinstance(config.lr, float)
    from polytask.runs import check_config_options

    assert check_config_options(config).method_options["famo"]["gamma"] == 0.001
