"""The comparison figures stay readable with many runs and with epochs in which a task had no labels."""

import warnings

import matplotlib.image
import pytest

from polytask.report import plots


def results(n_methods, nan_epoch=False):
    def history(offset):
        rows = []
        for epoch in range(3):
            missing = nan_epoch and epoch == 1
            rows.append(
                {
                    "train_loss": {"a": 1.0 + offset, "b": float("nan") if missing else 2.0 + offset},
                    "val_loss": {"a": 1.1 + offset, "b": 2.1 + offset},
                    "weights": {"a": 1.0, "b": float("nan") if missing else 0.5},
                }
            )
        return rows

    runs = [{"method": f"m{i}", "arch": "hps_mlp", "history": history(i / 10)} for i in range(n_methods)]
    base = {"hps_mlp": {"runs": {t: [{"history": history(0)}] for t in ("a", "b")}}}
    return {"tasks": [{"name": "a"}, {"name": "b"}], "runs": runs, "baselines": base}


@pytest.mark.parametrize("figure", [plots.loss_curves, plots.weight_trajectories])
def test_figures_without_warnings_for_many_runs_and_unlabelled_epochs(figure, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no tight-layout or empty-slice warning
        few = figure(results(3, nan_epoch=True), tmp_path / "few.png")
        many = figure(results(40, nan_epoch=True), tmp_path / "many.png")
    if figure is plots.loss_curves:  # the legend of 40 runs goes beside the panels: a wider image
        assert matplotlib.image.imread(many).shape[1] > matplotlib.image.imread(few).shape[1] * 1.2
