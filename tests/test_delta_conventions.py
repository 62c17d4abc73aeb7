"""ΔMTL in both conventions of the literature (issue 18): Δp (per task, positive = better; Maninis et al.
2019, Vandenhende et al. 2021, LibMTL) and Δm (per metric, lower = better; Nash-MTL, CAGrad, FAMO), by hand
and against published table rows."""

import pytest

from polytask.errors import PolytaskError
from polytask.metrics import delta_mtl
from polytask.metrics.delta import delta_m

NYU_METRICS = [  # (task, metric, higher is better), in the column order of Nash-MTL's Table 2
    ("segmentation", "miou", True),
    ("segmentation", "pixel_acc", True),
    ("depth", "abs_err", False),
    ("depth", "rel_err", False),
    ("normal", "mean", False),
    ("normal", "median", False),
    ("normal", "within_11.25", True),
    ("normal", "within_22.5", True),
    ("normal", "within_30", True),
]


def _table(values, metrics=NYU_METRICS):
    scores, directions = {}, {}
    for (task, metric, higher), value in zip(metrics, values):
        scores.setdefault(task, {})[metric] = value
        directions.setdefault(task, {})[metric] = higher
    return scores, directions


def test_both_conventions_by_hand_where_they_disagree_in_sign():
    # task a: one metric, accuracy 0.50 -> 0.55 (+10 %); task b: three errors 1.00 -> 1.04 (−4 % each)
    metrics = [("a", "acc", True), ("b", "e1", False), ("b", "e2", False), ("b", "e3", False)]
    model, directions = _table([0.55, 1.04, 1.04, 1.04], metrics)
    base, _ = _table([0.50, 1.0, 1.0, 1.0], metrics)
    # Δp = ((+10) + (−4)) / 2 = +3: better than single-task
    assert delta_mtl(model, base, directions) == pytest.approx(3.0)
    # Δm = mean(−10, +4, +4, +4) = +0.5: worse than single-task
    assert delta_m(model, base, directions) == pytest.approx(0.5)
    assert delta_mtl(model, base, directions, convention="m") == pytest.approx(0.5)
    with pytest.raises(PolytaskError, match="convention must be 'p' or 'm'"):
        delta_mtl(model, base, directions, convention="x")


# Navon et al. 2022 (Nash-MTL), Table 2, NYUv2 (SegNet/MTAN, mean over 3 seeds): single-task, linear
# scalarisation (LS, printed Δm% = 5.59) and Nash-MTL (printed Δm% = −4.04)
NASH_STL = [38.30, 63.76, 0.6754, 0.2780, 25.01, 19.21, 30.14, 57.20, 69.15]
NASH_LS = [39.29, 65.33, 0.5493, 0.2263, 28.15, 23.96, 22.09, 47.50, 61.08]
NASH_NASH = [40.13, 65.93, 0.5261, 0.2171, 25.26, 20.08, 28.40, 55.47, 68.15]


@pytest.mark.parametrize(("row", "printed"), [(NASH_LS, 5.59), (NASH_NASH, -4.04)], ids=["LS", "Nash-MTL"])
def test_delta_m_reproduces_nash_mtl_table_2(row, printed):
    model, directions = _table(row)
    base, _ = _table(NASH_STL)
    assert delta_m(model, base, directions) == pytest.approx(printed, abs=0.01)


def test_the_same_published_row_is_worse_in_delta_m_and_better_in_delta_p():
    model, directions = _table(NASH_LS)
    base, _ = _table(NASH_STL)
    assert delta_mtl(model, base, directions) == pytest.approx(0.88, abs=0.01)  # worked out in the issue


# Liu, Johns & Davison 2022 (Auto-Lambda), README table, NYUv2 split ResNet-50, 3 seeds: mIoU ↑, depth
# absolute error ↓, normal mean angle ↓, and the printed ΔMTL (the Δp convention, positive = better)
AUTOL_SINGLE = [43.37, 52.24, 22.40]
AUTOL_METRICS = [("seg", "miou", True), ("depth", "abs_err", False), ("normal", "mean", False)]


@pytest.mark.parametrize(
    ("row", "printed"),
    [([44.64, 43.32, 24.48], 3.57), ([46.14, 41.91, 23.52], 7.05), ([47.17, 40.97, 23.68], 8.21)],
    ids=["Equal", "CAGrad", "Auto-Lambda"],
)
def test_delta_p_reproduces_the_auto_lambda_table(row, printed):
    model, directions = _table(row, AUTOL_METRICS)
    base, _ = _table(AUTOL_SINGLE, AUTOL_METRICS)
    assert delta_mtl(model, base, directions) == pytest.approx(printed, abs=0.01)
    # one metric per task: here, and only here, Δm is the negation of Δp
    assert delta_m(model, base, directions) == pytest.approx(-delta_mtl(model, base, directions))
