"""Metric functions and ΔMTL against values worked out by hand."""

import math

import numpy as np
import pytest

import polytask as pt
from polytask import metrics as M


def test_accuracy_and_macro_f1_by_hand():
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
    target = np.array([0, 1, 1, 2])  # predicted 0, 1, 2, 0
    assert M.accuracy(probs, target) == pytest.approx(0.5)
    # class 0: P=1/2, R=1 -> 2/3; class 1: P=1, R=1/2 -> 2/3; class 2: P=0, R=0 -> 0
    assert M.macro_f1(probs, target) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert M.accuracy(np.array([0.2, 0.7, 0.6]), np.array([0, 1, 0])) == pytest.approx(2 / 3)


def test_auc_and_log_loss_by_hand():
    p, y = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    assert M.auc(p, y) == pytest.approx(0.75)  # 3 of 4 positive-negative pairs ranked right
    expected = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert M.log_loss(p, y) == pytest.approx(expected)
    probs = np.array([[0.7, 0.3], [0.4, 0.6]])
    assert M.log_loss(probs, np.array([0, 0])) == pytest.approx(-(math.log(0.7) + math.log(0.4)) / 2)
    with pytest.warns(UserWarning, match="one class"):
        assert math.isnan(M.auc(p, np.ones(4)))


def test_regression_metrics_by_hand():
    pred, y = np.array([1.0, 2.0, 4.4]), np.array([1.0, 3.0, 4.0])
    assert M.mae(pred, y) == pytest.approx((0 + 1 + 0.4) / 3)
    assert M.rmse(pred, y) == pytest.approx(math.sqrt((0 + 1 + 0.16) / 3))
    assert M.rounded_accuracy(pred, y) == pytest.approx(2 / 3)


def test_metric_registry_directions():
    assert M.get("accuracy").higher_is_better and not M.get("rmse").higher_is_better
    with pytest.raises(pt.UnknownNameError, match=r"unknown metric 'acc'.*accuracy"):
        M.get("acc")


def test_delta_mtl_sign_convention_and_value():
    base = {"cls": {"acc": 0.80, "f1": 0.50}, "reg": {"mae": 2.0}}
    dirs = {"cls": {"acc": True, "f1": True}, "reg": {"mae": False}}
    better = {"cls": {"acc": 0.88, "f1": 0.55}, "reg": {"mae": 1.5}}
    # cls: (+10% + +10%) / 2 = 10; reg: -(1.5 - 2)/2 = +25; Δ = (10 + 25) / 2 = 17.5
    assert pt.metrics.delta_mtl(better, base, dirs) == pytest.approx(17.5)
    worse = {"cls": {"acc": 0.72, "f1": 0.45}, "reg": {"mae": 2.5}}
    assert pt.metrics.delta_mtl(worse, base, dirs) == pytest.approx(-17.5)
    assert pt.metrics.delta_mtl(base, base, dirs) == 0
    assert pt.metrics.delta_mtl(better, base, {"cls": {"acc": "higher"}}) == pytest.approx(10.0)


def test_delta_mtl_errors():
    dirs = {"a": {"acc": True}}
    with pytest.raises(pt.TaskMismatchError, match="task 'a' has no scores"):
        pt.metrics.delta_mtl({}, {"a": {"acc": 1.0}}, dirs)
    with pytest.raises(pt.TaskMismatchError, match="lack metric 'acc'"):
        pt.metrics.delta_mtl({"a": {}}, {"a": {"acc": 1.0}}, dirs)
    with pytest.raises(pt.PolytaskError, match="finite non-zero baseline"):
        pt.metrics.delta_mtl({"a": {"acc": 1.0}}, {"a": {"acc": 0.0}}, dirs)


def test_macro_f1_agrees_with_scikit_learn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for n_classes in (2, 3, 10):
        probs = rng.random((200, n_classes))
        target = rng.integers(0, n_classes, 200)
        target[:5] = 0
        want = f1_score(target, probs.argmax(1), labels=np.arange(n_classes), average="macro", zero_division=0)
        assert M.macro_f1(probs, target) == pytest.approx(want)
    p = rng.random(50)
    y = rng.integers(0, 2, 50)
    assert M.macro_f1(p, y) == pytest.approx(f1_score(y, (p >= 0.5).astype(int), average="macro"))
