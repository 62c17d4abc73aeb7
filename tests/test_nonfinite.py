"""No NaN in a result (issue 19, items 2 and 5): a skipped batch leaves no trace in the model (buffers
included), a selected model that is not finite is an error, a loss without a graph is an error naming the
task, and a finite loss with a non-finite gradient is handled alike for every balancer."""

import pytest
import torch

import polytask as pt


def _poisoned(data, row=0):
    x = data.train.inputs.clone()
    x[row] = float("nan")
    train = pt.data.Split(x, data.train.targets)
    return pt.data.MultiTaskData("x", data.tasks, data.input_shape, train, data.val, data.test)


@pytest.mark.parametrize("method", ["ew", "mgda"])
def test_a_skipped_batch_leaves_batchnorm_statistics_untouched(tiny_data, build_trainer, method):
    trainer = build_trainer(_poisoned(tiny_data), method=method, arch="hps_resnet", on_nonfinite="skip")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in trainer.model.modules())
    result = trainer.fit()
    assert result.skipped_batches == 1
    for name, buffer in trainer.model.named_buffers():
        assert torch.isfinite(buffer.float()).all(), name
    assert all(v == v for scores in result.test_scores.values() for v in scores.values())


def test_a_model_that_is_not_finite_is_an_error_not_a_result(tiny_data, build_trainer):
    trainer = build_trainer(tiny_data, arch="hps_resnet")
    with torch.no_grad():  # what a poisoned running statistic does to every later evaluation
        next(m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_var.fill_(float("nan"))
    with pytest.raises(pt.errors.NonFiniteMetricError, match="NaN or inf"):
        trainer.fit()


@pytest.mark.parametrize("method", ["ew", "uw", "famo", "mgda", "upgrad", "gradnorm"])
def test_a_loss_without_a_graph_is_an_error_naming_the_task(method):
    w = torch.nn.Parameter(torch.ones(2, 3))
    balancer = pt.balancing.create(method, tasks=["a", "b", "c"])
    losses = {"a": w.sum(), "b": w.sum().detach(), "c": (w**2).sum()}
    with pytest.raises(pt.PolytaskError, match=r"task\(s\) b does not require grad"):
        balancer.backward(losses, shared_params=[w])
    stacked = torch.stack([w.sum(), w.sum().detach(), (w**2).sum()])  # the same in one stack
    with pytest.raises(pt.PolytaskError, match=r"task\(s\) b does not require grad"):
        balancer.backward(stacked, shared_params=[w])
    with torch.no_grad():  # every task detached
        frozen = torch.stack([w.sum(), w.sum(), w.sum()])
    with pytest.raises(pt.PolytaskError, match=r"task\(s\) a, b, c does not require grad"):
        balancer.backward(frozen, shared_params=[w])


def test_absent_tasks_are_still_given_as_none():
    w = torch.nn.Parameter(torch.ones(3))
    pt.balancing.create("ew", tasks=["a", "b"]).backward({"a": w.sum(), "b": None})
    assert w.grad.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("method", ["ew", "uw", "mgda"])
def test_a_finite_loss_with_a_non_finite_gradient_is_handled_alike(tiny_data, build_trainer, method):
    # the sqrt of a weight that starts at 0: finite loss 0, infinite gradient, in every balancer
    trainer = build_trainer(tiny_data, method=method)
    first = next(p for p in trainer.model.shared_parameters() if p.dim() == 2)
    with torch.no_grad():
        first.zero_()
    trainer.model.regularization = lambda: torch.sqrt(first.abs()).sum()
    with pytest.raises(pt.errors.NonFiniteGradientError, match="epoch 1, step 1"):
        trainer.fit()
