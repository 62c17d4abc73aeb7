"""``labelled={task: fraction}`` on any dataset: partially labelled training splits."""

import pytest
import torch

import polytask as pt


def test_labels_are_kept_on_the_given_fraction_of_training_samples_only():
    full = pt.data.create("multidigits", n_train=200, n_val=50, n_test=50)
    part = pt.data.create("multidigits", n_train=200, n_val=50, n_test=50, labelled={"sum": 0.1, "left": 0.5})
    assert int(part.train.targets["sum_mask"].sum()) == 20 and int(part.train.targets["left_mask"].sum()) == 100
    assert "right_mask" not in part.train.targets and "sum_mask" not in part.val.targets
    assert torch.equal(part.train.targets["sum"], full.train.targets["sum"])  # values untouched, masked out
    again = pt.data.create("multidigits", n_train=200, n_val=50, n_test=50, labelled={"sum": 0.1, "left": 0.5})
    other = pt.data.create(
        "multidigits", n_train=200, n_val=50, n_test=50, labelled={"sum": 0.1, "left": 0.5}, label_seed=1
    )
    assert torch.equal(again.train.targets["sum_mask"], part.train.targets["sum_mask"])
    assert not torch.equal(other.train.targets["sum_mask"], part.train.targets["sum_mask"])
    sum_task = next(t for t in part.tasks if t.name == "sum")
    valid = sum_task.valid_mask(part.train.targets["sum"], part.train.targets["sum_mask"])
    assert int(valid.sum()) == 20


def test_dense_tasks_keep_their_own_invalid_pixels():
    full = pt.data.create("scenes", n_train=20, n_val=8, n_test=8)
    part = pt.data.create("scenes", n_train=20, n_val=8, n_test=8, labelled={"depth": 0.5})
    depth = next(t for t in part.tasks if t.name == "depth")
    mask = part.train.targets["depth_mask"]
    kept = mask.flatten(1).any(1)
    assert int(kept.sum()) == 10
    own = depth.valid_mask(full.train.targets["depth"])
    assert torch.equal(mask[kept], own[kept])  # a kept image: exactly its valid pixels


def test_partial_label_errors():
    for bad, message in [
        ({"summ": 0.1}, r"unknown task\(s\) \['summ'\]"),
        ({"sum": 0.0}, r"fractions must be in \(0, 1\]"),
        ([0.1], "must map task names to fractions"),
    ]:
        with pytest.raises(pt.ConfigError, match=message):
            pt.data.create("multidigits", n_train=50, n_val=20, n_test=20, labelled=bad)


def test_training_on_partial_labels_leaves_the_task_absent_in_some_batches():
    data = pt.data.create("multidigits", n_train=192, n_val=64, n_test=64, labelled={"sum": 0.02})
    pt.seed_everything(0)
    model = pt.models.create("hps_mlp", tasks=data.tasks, input_shape=data.input_shape)
    balancer = pt.balancing.create("mgda", tasks=[t.name for t in data.tasks])
    trainer = pt.Trainer(model, data.tasks, balancer, data.train, data.val, epochs=1, batch_size=32, progress=False)
    record = trainer.fit().history[0]
    assert 0 < record["unlabelled_batches"]["sum"] < 6 and record["steps"] == 6


def test_compute_losses_gives_none_for_an_unlabelled_task_when_asked():
    data = pt.data.create("multidigits", n_train=64, n_val=16, n_test=16)
    model = pt.models.create("hps_mlp", tasks=data.tasks, input_shape=data.input_shape)
    x, targets = data.train.inputs[:8], {k: v[:8].clone() for k, v in data.train.targets.items()}
    targets["sum"][:] = float("nan")
    zero = pt.compute_losses(data.tasks, model(x), targets)
    assert zero["sum"].item() == 0 and zero["sum"].requires_grad
    absent = pt.compute_losses(data.tasks, model(x), targets, none_if_unlabelled=True)
    assert absent["sum"] is None and absent["left"].item() == pytest.approx(zero["left"].item())
    balancer = pt.balancing.create("mgda", tasks=[t.name for t in data.tasks])
    w = balancer.backward(absent, shared_params=model.shared_parameters())
    assert w[2] == 0 and w.sum().item() == pytest.approx(1.0)
