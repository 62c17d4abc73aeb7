"""`polytask report` on a hand-edited results.json (issue 19, item 10): validated against its schema with
errors naming the field, and the leaderboard recomputed from the runs."""

import copy
import json

import pytest
import yaml

from polytask.cli import main

TINY = {"dataset_options": {"n_train": 128, "n_val": 64, "n_test": 64}, "batch_size": 32, "archs": ["hps_mlp"]}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    cfg = tmp / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    args = ["compare", "--config", str(cfg), "--methods", "ew,uw", "--seeds", "2", "--epochs", "1", "--quiet"]
    assert main([*args, "--out", str(tmp / "out")]) == 0
    return tmp / "out"


def _edited(results_dir, tmp_path, edit):
    results = json.loads((results_dir / "results.json").read_text())
    edited = copy.deepcopy(results)
    edit(edited)
    (tmp_path / "results.json").write_text(json.dumps(edited))
    return results


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.pop("runs"), "results field runs is missing"),
        (lambda r: r.update(schema="polytask.compare/9"), "results field schema is 'polytask.compare/9'"),
        (lambda r: r["runs"][1].update(params="many"), "results field runs[1].params: expected an integer"),
        (lambda r: r["runs"][0]["test_scores"]["left"].pop("accuracy"), "runs[0].test_scores.left lacks metric"),
        (lambda r: r["runs"][0].update(baseline_arch="hps_cnn"), "runs[0].baseline_arch is 'hps_cnn'"),
        (lambda r: r["baselines"]["hps_mlp"].update(test=[]), "results field baselines.hps_mlp.test: expected a"),
        (lambda r: r.update(runs=[]), "results field runs is empty"),
        (lambda r: r["tasks"][0].update(metrics={"accuracy": "up"}), "tasks[0].metrics.accuracy: expected true"),
        (lambda r: r["runs"].append(r["runs"][0]), "seed(s) [0, 1, 0] with a repeat"),
    ],
)
def test_a_broken_results_file_is_an_error_naming_the_field(results_dir, tmp_path, capsys, edit, message):
    _edited(results_dir, tmp_path, edit)
    assert main(["report", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_the_leaderboard_is_recomputed_from_the_runs(results_dir, tmp_path, capsys):
    def edit(results):  # ew's seed-0 run made much better on every task, with its stored ΔMTL left as it was
        run = next(r for r in results["runs"] if r["method"] == "ew" and r["seed"] == 0)
        for task, metrics in run["test_scores"].items():
            for metric in metrics:
                direction = next(t for t in results["tasks"] if t["name"] == task)["metrics"][metric]
                metrics[metric] = 1.0 if direction else 0.0

    original = _edited(results_dir, tmp_path, edit)
    assert main(["report", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "the stored summary does not follow from the runs" in printed
    board = (tmp_path / "leaderboard.md").read_text()
    ew_row = next(line for line in board.splitlines() if line.startswith("| ew "))
    stored = next(s for s in original["summary"] if s["method"] == "ew")["delta_mtl"]["mean"]
    shown = float(ew_row.split("|")[3].split("±")[0])
    assert shown > stored + 10  # the edited scores, not the stored summary
    assert main(["report", str(results_dir)]) == 0  # an untouched file: no note
    assert "does not follow" not in capsys.readouterr().out
