"""Task losses with missing targets, shape checks, and metrics that skip missing samples."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import polytask as pt


def test_missing_class_targets_add_nothing():
    task = pt.Task("digit", "multiclass", 3)
    logits = torch.randn(5, 3, requires_grad=True)
    target = torch.tensor([0, -100, 2, 1, -100])
    loss = task.compute_loss(logits, target)
    keep = torch.tensor([0, 2, 3])
    assert torch.allclose(loss, F.cross_entropy(logits[keep], target[keep]))
    loss.backward()
    assert torch.all(logits.grad[[1, 4]] == 0)  # missing samples get no gradient


def test_missing_regression_targets_and_explicit_mask():
    task = pt.Task("y", "regression")
    pred = torch.tensor([[1.0], [5.0], [2.0], [0.0]])
    target = torch.tensor([2.0, float("nan"), 2.0, 4.0])
    mask = torch.tensor([True, True, True, False])
    # NaN drops sample 1, the mask drops sample 3: mean((1-2)^2, (2-2)^2) = 0.5
    assert task.compute_loss(pred, target, mask).item() == pytest.approx(0.5)


def test_all_missing_gives_zero_loss_in_graph():
    task = pt.Task("y", "regression")
    pred = torch.randn(3, 1, requires_grad=True)
    loss = task.compute_loss(pred, torch.full((3,), float("nan")))
    loss.backward()
    assert loss.item() == 0 and torch.all(pred.grad == 0)


def test_metrics_skip_missing_samples(tiny_data):
    split = tiny_data.test
    targets = dict(split.targets)
    targets["left"] = targets["left"].clone()
    targets["left"][::2] = -100  # half of 'left' missing
    targets["sum_mask"] = torch.zeros(len(split), dtype=torch.bool)
    targets["sum_mask"][:10] = True
    masked = pt.data.Split(split.inputs, targets)
    torch.manual_seed(0)
    model = pt.models.create("hps_mlp", tasks=tiny_data.tasks, input_shape=tiny_data.input_shape)
    result = pt.evaluate(model, tiny_data.tasks, pt.data.BatchLoader(masked, 32))
    with torch.no_grad():
        out = model(split.inputs)
    left_pred = out["left"].softmax(-1).numpy()[1::2]
    expected = float(np.mean(left_pred.argmax(1) == split.targets["left"].numpy()[1::2]))
    assert result.scores["left"]["accuracy"] == pytest.approx(expected)
    sum_pred = out["sum"][:10, 0].numpy()
    assert result.scores["sum"]["mae"] == pytest.approx(
        float(np.mean(np.abs(sum_pred - split.targets["sum"][:10].numpy()))), rel=1e-5
    )


def test_shape_and_name_mismatch_errors_name_the_task():
    task = pt.Task("left", "multiclass", 10)
    with pytest.raises(pt.TaskMismatchError, match="task 'left': prediction shape \\(4, 3\\)"):
        task.compute_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(pt.TaskMismatchError, match="task 'left'"):
        task.compute_loss(torch.randn(5, 10), torch.zeros(4, dtype=torch.long))
    with pytest.raises(pt.TaskMismatchError, match=r"targets lack task\(s\) \['left'\]"):
        pt.compute_losses([task], {"left": torch.randn(4, 10)}, {"right": torch.zeros(4)})
    with pytest.raises(pt.TaskMismatchError, match=r"unknown task\(s\) \['extra'\]"):
        pt.compute_losses([task], {"left": torch.randn(4, 10), "extra": torch.randn(4)}, {"left": torch.zeros(4)})


def test_task_validation_errors():
    with pytest.raises(pt.PolytaskError, match="unknown loss 'hinge'"):
        pt.Task("a", "multiclass", 3, loss="hinge")
    with pytest.raises(pt.PolytaskError, match="role must be"):
        pt.Task("a", role="main")
    with pytest.raises(pt.UnknownNameError, match="unknown metric"):
        pt.Task("a", "regression", metrics=("r2",))
    with pytest.raises(pt.PolytaskError, match="kpi 'mae' must be higher-is-better"):
        pt.Task("a", "regression", kpi="mae")


def test_complete_tasks_are_detected_once_and_give_the_same_losses():
    tasks = [pt.Task("a", "multiclass", 3), pt.Task("b", "regression"), pt.Task("c", "regression")]
    targets = {
        "a": torch.tensor([0, 1, 2, 1]),
        "b": torch.tensor([1.0, float("nan"), 0.0, 2.0]),
        "c": torch.tensor([1.0, 2.0, 3.0, 4.0]),
        "c_mask": torch.tensor([True, True, False, True]),
    }
    # b has a NaN, c has a mask: only a may skip the per-batch check
    assert pt.tasks.complete_tasks(tasks, targets) == {"a"}
    targets["a"][1] = -100
    assert pt.tasks.complete_tasks(tasks, targets) == frozenset()
    outputs = {"a": torch.randn(4, 3), "b": torch.randn(4, 1), "c": torch.randn(4, 1)}
    targets["a"][1] = 1
    fast = pt.compute_losses(tasks, outputs, targets, complete={"a"})
    slow = pt.compute_losses(tasks, outputs, targets)
    assert all(torch.equal(fast[n], slow[n]) for n in slow)
