"""multidigits and HPS."""

import pytest
import torch

import polytask as pt


def test_multidigits_is_deterministic_and_split_by_source_image():
    a = pt.data.create("multidigits", n_train=100, n_val=50, n_test=50, seed=3)
    b = pt.data.create("multidigits", n_train=100, n_val=50, n_test=50, seed=3)
    c = pt.data.create("multidigits", n_train=100, n_val=50, n_test=50, seed=4)
    assert torch.equal(a.train.inputs, b.train.inputs) and not torch.equal(a.train.inputs, c.train.inputs)
    pools = [set(a.info["pools"][s]) for s in ("train", "val", "test")]
    assert not (pools[0] & pools[1]) and not (pools[0] & pools[2]) and not (pools[1] & pools[2])
    assert sum(map(len, pools)) == 1797
    assert a.train.inputs.shape == (100, 1, 16, 16) and len(a.val) == 50 and len(a.test) == 50
    t = a.train.targets
    assert torch.equal(t["sum"], (t["left"] + t["right"]).float())
    assert [task.name for task in a.tasks] == ["left", "right", "sum"]
    assert float(a.train.inputs.min()) >= 0 and float(a.train.inputs.max()) <= 1


def test_multidigits_digits_are_where_the_labels_say():
    """The left digit's top-left 8x8 corner region matches one of the source images of its class."""
    from sklearn.datasets import load_digits

    d = pt.data.create("multidigits", n_train=20, n_val=5, n_test=5, max_shift=0, canvas=16)
    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32)
    for i in range(5):
        left = d.train.inputs[i, 0, :8, :8]  # max_shift 0 and canvas 16: the digits do not overlap
        matches = [int(digits.target[j]) for j in range(len(images)) if torch.allclose(images[j], left)]
        assert int(d.train.targets["left"][i]) in matches


def test_dataset_errors():
    with pytest.raises(pt.UnknownNameError, match=r"unknown dataset 'mnist'.*multidigits"):
        pt.data.create("mnist")
    with pytest.raises(pt.ConfigError, match=r"no option.*n_trian"):
        pt.data.create("multidigits", n_trian=3)
    with pytest.raises(pt.PolytaskError, match="max_shift"):
        pt.data.create("multidigits", max_shift=20)
    d = pt.data.create("multidigits", n_train=10, n_val=5, n_test=5)
    with pytest.raises(pt.TaskMismatchError, match="no task 'middle'"):
        d.select(["middle"])


def test_batch_loader_epoch_order_depends_on_seed_and_epoch_only(tiny_data):
    def first_targets(seed, epoch):
        loader = pt.data.BatchLoader(tiny_data.train, 32, shuffle=True, seed=seed)
        loader.set_epoch(epoch)
        return next(iter(loader))[1]["left"]

    assert torch.equal(first_targets(0, 2), first_targets(0, 2))
    assert not torch.equal(first_targets(0, 1), first_targets(0, 2))
    assert len(pt.data.BatchLoader(tiny_data.train, 50)) == 4  # 192 samples, last batch partial


@pytest.mark.parametrize("arch", ["hps_mlp", "hps_cnn"])
def test_hps_outputs_and_parameter_split(arch, tiny_data):
    model = pt.models.create(arch, tasks=tiny_data.tasks, input_shape=tiny_data.input_shape)
    out = model(tiny_data.train.inputs[:7])
    assert out["left"].shape == (7, 10) and out["right"].shape == (7, 10) and out["sum"].shape == (7, 1)
    assert model.representation is not None and model.representation.shape[0] == 7
    shared = {id(p) for p in model.shared_parameters()}
    per_task = [{id(p) for p in model.task_parameters(t)} for t in model.tasks]
    union = shared.union(*per_task)
    assert union == {id(p) for p in model.parameters()}
    assert all(not (shared & s) for s in per_task) and not (per_task[0] & per_task[1])
    with pytest.raises(pt.TaskMismatchError, match="no task 'depth'"):
        list(model.task_parameters("depth"))


def test_single_task_mode_and_parameter_growth(tiny_data):
    one = pt.models.create("hps_cnn", tasks=tiny_data.select(["left"]).tasks, input_shape=tiny_data.input_shape)
    three = pt.models.create("hps_cnn", tasks=tiny_data.tasks, input_shape=tiny_data.input_shape)
    assert list(one(tiny_data.train.inputs[:2])) == ["left"]
    enc = pt.models.count_parameters(one.encoder)
    # HPS: one encoder plus one head per task
    assert pt.models.count_parameters(three) - enc == sum(pt.models.count_parameters(h) for h in three.heads.values())
    assert pt.models.count_parameters(three) < 3 * pt.models.count_parameters(one)


def test_model_errors():
    with pytest.raises(pt.UnknownNameError, match=r"unknown architecture 'resnet'.*hps_cnn, hps_mlp"):
        pt.models.create("resnet", tasks=[pt.Task("a")], input_shape=(1, 8, 8))
    with pytest.raises(pt.PolytaskError, match="needs \\(C, H, W\\)"):
        pt.models.create("hps_cnn", tasks=[pt.Task("a", out_features=3)], input_shape=(64,))


SMALL = {"n_train": 16, "n_val": 8, "n_test": 8}


@pytest.mark.parametrize("dataset", ["multidigits", "mmoe_synthetic", "funnel", "behaviour_sequences"])
def test_has_representation_says_whether_forward_sets_one(dataset):
    """``has_representation`` is what the pairing check reads before training (MGDA-UB, GradDrop and
    rep_grad=True are refused without one): it must match what forward() does, for every architecture."""
    data = pt.data.create(dataset, **SMALL)
    archs = pt.models.compatible(data.tasks, data.input_shape)
    assert len(archs) >= 5
    from polytask.data.base import take

    batch = take(data.train.inputs, torch.arange(4))
    for arch in archs:
        pt.seed_everything(0)
        model = pt.models.create(arch, tasks=data.tasks, input_shape=data.input_shape)
        model(batch)
        z = model.representation
        assert model.has_representation is not None, f"{arch} does not say whether it has a representation"
        assert (z is not None) == model.has_representation, arch
        if z is not None:
            assert z.requires_grad and z.shape[0] == 4, arch
