"""Recommender models: shapes, gates, ESMM's product, CGC vs MMoE mixing, tabular embeddings, masks."""

import pytest
import torch

import polytask as pt
from polytask.errors import PolytaskError, TaskMismatchError
from polytask.features import CategoricalField, FeatureSpec
from polytask.models.esmm import product_logit

RECSYS = ["shared_bottom", "omoe", "mmoe", "cgc", "ple"]


def tasks(k=3):
    return [pt.Task(f"t{i}", "binary") for i in range(k)]


SPEC = FeatureSpec((CategoricalField("user", 10, 4), CategoricalField("item", 20, 6)), ("price", "age"))


def tabular_batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randint(0, 10, (n,), generator=g), torch.randint(0, 20, (n,), generator=g)], 1)
    return {"categorical": ids, "numerical": torch.randn(n, 2, generator=g)}


@pytest.mark.parametrize("arch", RECSYS)
def test_a_float64_model_casts_its_inputs_to_float64(arch):
    """Dense and tabular inputs are cast to the model's floating dtype (float32 by default; float64 after
    ``model.double()``, where a fixed float32 cast made the first layer fail), not saved in state dicts."""
    for shape, x in (((7,), torch.randn(5, 7, dtype=torch.float64)), (SPEC, tabular_batch(5))):
        model = pt.models.create(arch, tasks=tasks(2), input_shape=shape)
        assert all(v.dtype == torch.float32 for v in model(x).values())
        model.double()
        assert all(v.dtype == torch.float64 for v in model(x).values())
        assert not any("float_dtype" in key for key in model.state_dict())


@pytest.mark.parametrize("arch", RECSYS)
@pytest.mark.parametrize("k", [1, 3])
def test_output_shapes_for_k_tasks_dense_and_tabular(arch, k):
    for shape, x in (((7,), torch.randn(5, 7)), (SPEC, tabular_batch(5))):
        model = pt.models.create(arch, tasks=tasks(k), input_shape=shape)
        out = model(x)
        assert sorted(out) == [f"t{i}" for i in range(k)]
        assert all(v.shape == (5, 1) for v in out.values())
        params = {id(p) for p in model.parameters()}
        split = {id(p) for p in model.shared_parameters()}
        for t in model.tasks:
            split |= {id(p) for p in model.task_parameters(t)}
        assert split == params  # every parameter is shared or belongs to a task


@pytest.mark.parametrize("arch", ["omoe", "mmoe", "cgc", "ple"])
def test_gates_are_distributions(arch):
    model = pt.models.create(arch, tasks=tasks(3), input_shape=(7,))
    model(torch.randn(9, 7))
    for g in model.gates.values():
        assert torch.all(g >= 0) and torch.allclose(g.sum(dim=1), torch.ones(9))
    if arch == "omoe":
        assert model.gates["t0"] is model.gates["t2"]  # one gate for all tasks
    if arch == "mmoe":
        assert not torch.allclose(model.gates["t0"], model.gates["t1"])


def test_cgc_without_task_experts_is_mmoe_mixing():
    torch.manual_seed(0)
    mm = pt.models.create("mmoe", tasks=tasks(2), input_shape=(6,), n_experts=3)
    cg = pt.models.create("cgc", tasks=tasks(2), input_shape=(6,), specific_experts=0, shared_experts=3)
    layer = cg.levels[0]
    for src, dst in zip(mm.experts, layer.shared):
        dst.load_state_dict(src.state_dict())
    for t in ("t0", "t1"):
        layer.task_gates[t].load_state_dict(mm.gate_modules[t].state_dict())
        cg.towers[t].load_state_dict(mm.towers[t].state_dict())
    x = torch.randn(8, 6)
    a, b = mm(x), cg(x)
    for t in ("t0", "t1"):
        assert torch.allclose(a[t], b[t], atol=1e-6)
        assert torch.allclose(mm.gates[t], cg.gates[t])


def test_ple_shared_gate_mixes_all_experts_on_non_final_levels():
    model = pt.models.create("ple", tasks=tasks(2), input_shape=(6,), levels=3, specific_experts=2, shared_experts=1)
    assert [lvl.shared_gate is None for lvl in model.levels] == [False, False, True]
    assert model.levels[0].shared_gate.linear.out_features == 2 * 2 + 1
    assert model.levels[0].task_gates["t0"].linear.out_features == 2 + 1


def test_esmm_ctcvr_is_ctr_times_cvr():
    model = pt.models.create(
        "esmm", tasks=[pt.Task("ctr", "binary"), pt.Task("ctcvr", "binary")], input_shape=SPEC, towers=(8,)
    )
    x = tabular_batch(12)
    out = model(x)
    p_ctr, p_ctcvr = torch.sigmoid(out["ctr"]), torch.sigmoid(out["ctcvr"])
    assert torch.allclose(p_ctcvr, p_ctr * model.pcvr, atol=1e-6)
    assert torch.allclose(model.predict_cvr(x), model.pcvr)
    # the log-space product logit is exact even for extreme logits (reference: 50-digit decimals)
    from decimal import Decimal, getcontext

    getcontext().prec = 50

    def exact(a, b):
        sa, sb = (1 / (1 + (-Decimal(v)).exp()) for v in (a, b))
        p = sa * sb
        return float((p / (1 - p)).ln())

    a, b = [-30.0, 0.0, 30.0, 5.0], [2.0, -40.0, 30.0, -3.0]
    got = product_logit(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    assert got.tolist() == pytest.approx([exact(x, y) for x, y in zip(a, b)], rel=1e-12)
    with pytest.raises(PolytaskError, match="two binary tasks"):
        pt.models.create("esmm", tasks=tasks(3), input_shape=SPEC)


def test_unseen_categories_map_to_oov_never_crash():
    model = pt.models.create("mmoe", tasks=tasks(2), input_shape=SPEC)
    x = tabular_batch(4)
    x["categorical"][0] = torch.tensor([999, -5])  # unseen ids
    oov = tabular_batch(4)
    oov["categorical"][0] = torch.tensor([0, 0])
    assert torch.allclose(model.inputs(x), model.inputs(oov))
    with pytest.raises(TaskMismatchError, match="categorical inputs"):
        model({"categorical": x["categorical"][:, :1], "numerical": x["numerical"]})
    with pytest.raises(TaskMismatchError, match="tabular"):
        model(torch.randn(4, 3))


def test_masked_labels_are_ignored_in_training():
    data_tasks = tasks(2)
    model = pt.models.create("mmoe", tasks=data_tasks, input_shape=(5,))
    x = torch.randn(6, 5)
    y = {"t0": torch.tensor([1.0, 0, 1, 0, 1, 0]), "t1": torch.tensor([1.0, 1, 0, 0, 1, 1])}
    mask = torch.tensor([True, True, True, False, False, False])
    flipped = {**y, "t1": torch.where(mask, y["t1"], 1 - y["t1"]), "t1_mask": mask}
    a = pt.compute_losses(data_tasks, model(x), {**y, "t1_mask": mask})
    b = pt.compute_losses(data_tasks, model(x), flipped)
    assert torch.allclose(a["t1"], b["t1"])  # labels of masked samples change nothing


def test_rep_grad_refused_where_the_representation_is_not_a_cut():
    model = pt.models.create("shared_bottom", tasks=tasks(2), input_shape=(5,))
    out = model(torch.randn(8, 5))
    losses = torch.stack([o.pow(2).mean() for o in out.values()])
    ub = pt.balancing.create("mgda_ub", tasks=["t0", "t1"])
    ub.backward(losses, shared_params=list(model.shared_parameters()), representation=model.representation)
    assert all(p.grad is not None for p in model.parameters())
    mm = pt.models.create("mmoe", tasks=tasks(2), input_shape=(5,))
    out = mm(torch.randn(8, 5))
    losses = torch.stack([o.pow(2).mean() for o in out.values()])
    with pytest.raises(PolytaskError, match="representation"):
        ub.backward(losses, shared_params=list(mm.shared_parameters()), representation=mm.representation)
    # the parameter mode works on MMoE
    pt.balancing.create("mgda", tasks=["t0", "t1"]).backward(losses, shared_params=list(mm.shared_parameters()))


def test_mmoe_synthetic_correlation_and_determinism():
    a = pt.data.create("mmoe_synthetic", p=1.0, seed=3, n_train=2000, n_val=10, n_test=10)
    b = pt.data.create("mmoe_synthetic", p=1.0, seed=3, n_train=2000, n_val=10, n_test=10)
    assert torch.equal(a.train.inputs, b.train.inputs)
    assert a.info["label_correlation"] > 0.95
    c = pt.data.create("mmoe_synthetic", p=0.0, seed=3, n_train=2000, n_val=10, n_test=10)
    assert abs(c.info["label_correlation"]) < 0.1
    assert a.info["alpha"] == c.info["alpha"]  # α, β fixed across seeds and p
    with pytest.raises(PolytaskError, match="correlation"):
        pt.data.create("mmoe_synthetic", p=2.0)


def test_funnel_truth_rates_and_esmm_training():
    data = pt.data.create("funnel", n_users=200, n_items=200, n_train=6000, n_val=1000, n_test=1000, seed=1)
    again = pt.data.create("funnel", n_users=200, n_items=200, n_train=6000, n_val=1000, n_test=1000, seed=1)
    assert torch.equal(data.train.inputs["categorical"], again.train.inputs["categorical"])
    click = data.train.targets["ctr"]
    conv = data.train.targets["ctcvr"]
    assert torch.all(conv <= click)  # a conversion needs a click
    truth = data.info["truth"]["train"]
    assert abs(click.mean().item() - truth["pctr"].mean()) < 0.01  # labels follow the known probabilities
    assert data.input_shape.output_dim == 4 * 8 + 2
    model = pt.models.create("esmm", tasks=data.tasks, input_shape=data.input_shape, towers=(16,))
    trainer = pt.Trainer(
        model,
        data.tasks,
        pt.balancing.create("ew", tasks=["ctr", "ctcvr"]),
        data.train,
        data.val,
        data.test,
        epochs=2,
        batch_size=512,
        progress=False,
    )
    result = trainer.fit()
    assert 0.0 <= result.test_scores["ctr"]["auc"] <= 1.0 and result.test_scores["ctcvr"]["log_loss"] > 0
    with pytest.raises(PolytaskError, match="ctr and cvr"):
        pt.data.create("funnel", ctr=1.5)


def test_behaviour_sequences_and_dupn():
    data = pt.data.create("behaviour_sequences", n_train=64, n_val=16, n_test=16, n_items=60, length=8, seed=2)
    held = pt.data.create(
        "behaviour_sequences", held_out=True, n_held_out=32, n_val=16, n_test=16, n_items=60, length=8
    )
    assert [t.name for t in data.tasks] == ["ctr", "price", "category"] and [t.name for t in held.tasks] == ["shop"]
    assert not torch.equal(data.test.inputs["item"], held.test.inputs["item"])  # other users
    model = pt.models.create("dupn", tasks=data.tasks, input_shape=data.input_shape, embed_dim=8, hidden=16)
    out = model(data.train.inputs)
    assert out["ctr"].shape == (64, 1) and out["category"].shape == (64, 20)
    assert model.representation.shape == (64, 16 + 8)
    assert torch.allclose(model.attention_weights.sum(dim=1), torch.ones(64))
    # unseen ids are OOV, never a crash; a missing field is a clear error
    x = {k: v[:4].clone() for k, v in data.train.inputs.items()}
    x["item"][0, 0] = 10_000
    model(x)
    with pytest.raises(TaskMismatchError, match="query"):
        model({k: v for k, v in x.items() if k != "query"})
    # rep-grad methods train the encoder through the shared representation (of this forward pass)
    losses = pt.compute_losses(data.tasks, model(data.train.inputs), data.train.targets)
    before = [p.detach().clone() for p in model.shared_parameters()]
    pt.balancing.create("mgda_ub", tasks=[t.name for t in data.tasks]).backward(
        losses, shared_params=list(model.shared_parameters()), representation=model.representation
    )
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.shared_parameters()))
    # the encoder moves to a new task and can be frozen there
    new = pt.models.create("dupn", tasks=held.tasks, input_shape=held.input_shape, embed_dim=8, hidden=16)
    new.load_shared(model.shared_state_dict(), freeze=True)
    assert all(not p.requires_grad for p in new.shared_parameters())
    assert torch.allclose(new.encode(x), model.encode(x))
    with pytest.raises(PolytaskError, match="SequenceSpec"):
        pt.models.create("dupn", tasks=data.tasks, input_shape=(5,))


@pytest.mark.parametrize("arch", RECSYS)
def test_recommenders_take_behaviour_sequences_by_mean_pooling(arch):
    data = pt.data.create("behaviour_sequences", n_train=32, n_val=8, n_test=8, n_items=40, length=6)
    model = pt.models.create(arch, tasks=data.tasks, input_shape=data.input_shape)
    out = model(data.train.inputs)
    assert out["category"].shape == (32, 20) and out["ctr"].shape == (32, 1)


def test_held_out_segment_task_needs_category_and_price():
    options = dict(held_out=True, n_held_out=400, n_val=16, n_test=16, n_items=60, length=8, seed=1)
    shop = pt.data.create("behaviour_sequences", **options)
    segment = pt.data.create("behaviour_sequences", held_task="segment", **options)
    assert [t.name for t in segment.tasks] == ["segment"] and segment.tasks[0].out_features == 10
    assert torch.equal(shop.train.inputs["item"], segment.train.inputs["item"])  # the same users, another label
    labels = segment.train.targets["segment"]
    assert set(labels.tolist()) == set(range(10))  # 5 category groups x 2 price levels
    # the category half of the label: users whose favourite shop group (mostly top category mod 10) is g
    # mostly have segment // 2 == g mod 5
    agree = (labels // 2 == shop.train.targets["shop"] % 5).float().mean()
    assert agree > 0.6
    with pytest.raises(PolytaskError, match="held_task must be one of"):
        pt.data.create("behaviour_sequences", held_out=True, held_task="brand")
