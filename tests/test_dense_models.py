"""The ``scenes`` dataset and the vision architectures: shapes, the papers' initial states, parameter
growth in K, penalties worked out by hand, and the compare integration."""

import itertools
import math

import numpy as np
import pytest
import torch

import polytask as pt
from polytask.compare import archs_for_data
from polytask.data.scenes import build_arrays
from polytask.dense import DenseTask
from polytask.errors import ConfigError
from polytask.models.base import count_parameters
from polytask.models.soft_sharing import l2_coupling, trace_norm
from polytask.tasks import Task

DENSE_ARCHS = [
    "hps_resnet",
    "soft_sharing",
    "cross_stitch",
    "nddr",
    "mtan",
    "sluice",
    "padnet",
    "mtinet",
    "drn",
    "tensor_tucker",
    "tensor_tt",
    "jmt",
    "adashare",
    "mtl_nas",
    "fully_adaptive",
]


@pytest.fixture(scope="module")
def scenes():
    return pt.data.create("scenes", n_train=24, n_val=8, n_test=8, size=16)


# ------------------------------------------------------------------------------ the dataset
def test_scenes_labels_are_consistent_and_deterministic():
    a = build_arrays(20, 1, 1, 32, 60.0, 0.0, seed=3)
    b = build_arrays(20, 1, 1, 32, 60.0, 0.0, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    seg, depth, normals, edges = a["train_seg"], a["train_depth"], a["train_normals"], a["train_edges"]
    assert a["train_image"].shape == (20, 3, 32, 32) and a["train_image"].min() >= 0 and a["train_image"].max() <= 1
    assert set(np.unique(seg)) <= {0, 1, 2, 3, 4, 255} and {0, 1} <= set(np.unique(seg))
    # label ambiguity only on edges: ignored classes, invalid depth and invalid normals are edge pixels
    invalid_normals = np.abs(normals).sum(1) == 0
    assert np.all(edges[seg == 255] == 1) and np.all(edges[depth == 0] == 1) and np.all(edges[invalid_normals] == 1)
    valid = ~invalid_normals
    assert np.allclose(np.linalg.norm(normals.transpose(0, 2, 3, 1)[valid], axis=-1), 1, atol=1e-5)
    # floor pixels face up, wall pixels face the camera, and a wall is a plane of constant depth
    floor = (seg == 0) & valid
    wall = (seg == 1) & valid
    assert np.allclose(normals.transpose(0, 2, 3, 1)[floor], [0, 1, 0], atol=1e-5)
    assert np.allclose(normals.transpose(0, 2, 3, 1)[wall], [0, 0, -1], atol=1e-5)
    for i in range(20):
        z = depth[i][wall[i] & (depth[i] > 0)]
        assert z.max() - z.min() < 1e-4
    assert 0.03 < edges.mean() < 0.2


def test_scenes_tasks_and_bad_options(scenes):
    assert [t.name for t in scenes.tasks] == ["seg", "depth", "normals", "edges"]
    assert scenes.input_shape == (3, 16, 16)
    with pytest.raises(pt.PolytaskError, match="class_colour"):
        pt.data.create("scenes", class_colour=2.0)


# ------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("arch", DENSE_ARCHS)
def test_dense_architectures_shapes_on_scenes_and_multidigits(arch, scenes, tiny_data):
    torch.manual_seed(0)
    model = pt.models.create(arch, tasks=scenes.tasks, input_shape=scenes.input_shape)
    out = model(scenes.train.inputs[:3])
    assert out["seg"].shape == (3, 5, 16, 16) and out["depth"].shape == (3, 1, 16, 16)
    assert out["normals"].shape == (3, 3, 16, 16) and out["edges"].shape == (3, 1, 16, 16)
    losses = pt.compute_losses(scenes.tasks, out, {k: v[:3] for k, v in scenes.train.targets.items()})
    assert all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(pt.errors.TaskMismatchError, match=r"expected images \(N, 3, H, W\)"):
        model(tiny_data.train.inputs[:3])  # one-channel digits into an RGB model
    model = pt.models.create(arch, tasks=tiny_data.tasks, input_shape=tiny_data.input_shape)
    out = model(tiny_data.train.inputs[:3])
    assert out["left"].shape == (3, 10) and out["sum"].shape == (3, 1)
    # every parameter is either shared or belongs to a task
    groups = [list(model.shared_parameters()), *model.task_parameter_groups().values()]
    seen = {id(p) for g in groups for p in g}
    assert all(id(p) in seen for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------ initial states
def _copy_columns(dst, src):
    state = {k: v for k, v in src.state_dict().items() if not k.startswith("fusions")}
    missing, unexpected = dst.load_state_dict(state, strict=False)
    assert all(k.startswith("fusions") for k in missing + unexpected)


def test_cross_stitch_with_identity_units_equals_independent_networks(scenes):
    torch.manual_seed(0)
    stitch = pt.models.create("cross_stitch", tasks=scenes.tasks, input_shape=scenes.input_shape, alpha=1.0).eval()
    independent = pt.models.create("soft_sharing", tasks=scenes.tasks, input_shape=scenes.input_shape, weight=0.0)
    _copy_columns(independent, stitch)
    x = scenes.train.inputs[:4]
    a, b = stitch(x), independent.eval()(x)
    assert all(torch.allclose(a[t], b[t], atol=1e-6) for t in a)
    # and an off-identity unit does mix the columns
    mixed = pt.models.create("cross_stitch", tasks=scenes.tasks, input_shape=scenes.input_shape, alpha=0.9).eval()
    _copy_columns(mixed, stitch)
    assert not torch.allclose(mixed(x)["seg"], a["seg"], atol=1e-4)


def test_cross_stitch_init_rows_sum_to_one():
    from polytask.models.cross_stitch import stitch_init

    a = stitch_init(4, 0.7)
    assert torch.allclose(a.sum(1), torch.ones(4)) and a[0, 0] == pytest.approx(0.7) and a[0, 1] == pytest.approx(0.1)
    assert torch.allclose(stitch_init(2, 0.9), torch.tensor([[0.9, 0.1], [0.1, 0.9]]))


def test_nddr_with_diagonal_blocks_equals_cross_stitch(scenes):
    """NDDR's initial 1x1 weights are diag(α), diag(β) blocks (zero off the block diagonals): with BN at its
    initial eval state (identity up to sqrt(1 + eps)) and non-negative inputs it computes the cross-stitch."""
    torch.manual_seed(0)
    stitch = pt.models.create("cross_stitch", tasks=scenes.tasks, input_shape=scenes.input_shape, alpha=0.8).eval()
    nddr = pt.models.create("nddr", tasks=scenes.tasks, input_shape=scenes.input_shape, alpha=0.8)
    _copy_columns(nddr, stitch)
    nddr.eval()
    x = scenes.train.inputs[:4]
    a, b = stitch(x), nddr(x)
    assert all(torch.allclose(a[t], b[t], rtol=1e-3, atol=1e-4) for t in a)
    w = nddr.fusions[0].reduce[1].weight[:, :, 0, 0]  # task 1's reduction of [x_0, x_1, x_2, x_3]
    c = w.shape[0]
    assert torch.allclose(w[:, c : 2 * c], 0.8 * torch.eye(c)) and torch.allclose(w[:, :c], (0.2 / 3) * torch.eye(c))


def test_soft_sharing_without_penalty_equals_single_task_networks(scenes):
    torch.manual_seed(0)
    soft = pt.models.create("soft_sharing", tasks=scenes.tasks, input_shape=scenes.input_shape, weight=0.0).eval()
    assert soft.regularization() is None
    x = scenes.train.inputs[:4]
    out = soft(x)
    for k, task in enumerate(scenes.tasks):
        single = pt.models.create("hps_resnet", tasks=[task], input_shape=scenes.input_shape)
        state = {
            **{f"encoder.{n}": v for n, v in soft.columns[k].state_dict().items()},
            **{f"heads.{task.name}.{n}": v for n, v in soft.heads[task.name].state_dict().items()},
        }
        single.load_state_dict(state)
        assert torch.allclose(single.eval()(x)[task.name], out[task.name], atol=1e-6)


# ------------------------------------------------------------------------------ penalties by hand
def test_coupling_penalties_by_hand():
    w = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0]), torch.tensor([1.0, 1.0])]
    assert l2_coupling(w).item() == pytest.approx(8 + 1 + 5)
    assert trace_norm([torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])]).item() == pytest.approx(7.0)


def test_soft_sharing_regularization_is_the_weighted_layer_sum(scenes):
    for penalty, fn in (("l2", l2_coupling), ("trace", trace_norm)):
        model = pt.models.create(
            "soft_sharing", tasks=scenes.tasks, input_shape=scenes.input_shape, penalty=penalty, weight=0.5
        )
        layers = model.coupled_weights()
        assert len(layers) == sum(1 for p in model.columns[0].parameters() if p.dim() == 4)
        expected = 0.5 * sum(fn(layer) for layer in layers)
        assert model.regularization().item() == pytest.approx(expected.item(), rel=1e-6)


def test_trainer_applies_the_coupling_penalty(scenes):
    """With a strong penalty the task networks end closer together than without it."""

    def spread(weight: float) -> float:
        pt.utils.seed_everything(0)
        model = pt.models.create("soft_sharing", tasks=scenes.tasks, input_shape=scenes.input_shape, weight=weight)
        trainer = pt.Trainer(
            model,
            scenes.tasks,
            pt.balancing.create("ew", tasks=[t.name for t in scenes.tasks]),
            scenes.train,
            scenes.val,
            epochs=2,
            batch_size=8,
            progress=False,
            lr=1e-2,
        )
        trainer.fit()
        with torch.no_grad():
            return float(sum(l2_coupling(layer) for layer in model.coupled_weights()))

    assert spread(1.0) < 0.5 * spread(0.0)


# ------------------------------------------------------------------------------ parameter growth
def _params(arch: str, k: int) -> int:
    tasks = [DenseTask(f"d{i}", "depth") for i in range(k)]
    return count_parameters(pt.models.create(arch, tasks=tasks, input_shape=(3, 16, 16)))


def test_parameter_growth_in_k():
    p = {a: [_params(a, k) for k in (1, 2, 3, 4)] for a in DENSE_ARCHS}
    steps = {a: np.diff(v) for a, v in p.items()}
    # soft sharing: K networks, exactly linear; HPS: one head per task
    assert len(set(steps["soft_sharing"])) == 1 and len(set(steps["hps_resnet"])) == 1
    # one-task forms of the column designs are one network (+ identity units)
    assert p["soft_sharing"][0] == p["hps_resnet"][0]
    # cross-stitch adds K² channel units on top of K networks, NDDR K² C² 1x1 weights: super-linear
    assert steps["cross_stitch"][2] > steps["cross_stitch"][1] > steps["cross_stitch"][0] > steps["soft_sharing"][0]
    assert steps["nddr"][2] > steps["nddr"][1] > steps["cross_stitch"][1]
    # MTAN adds only attention modules and a head per task: linear, far below a network per task
    assert len(set(steps["mtan"])) == 1 and steps["hps_resnet"][0] < steps["mtan"][0] < 0.5 * steps["soft_sharing"][0]


# ------------------------------------------------------------------------------ compare integration
def test_archs_for_data_filters_and_explains(scenes, tiny_data):
    assert archs_for_data(["all"], scenes) == sorted(DENSE_ARCHS)
    assert archs_for_data(None, scenes) == ["hps_resnet"]
    assert archs_for_data(None, tiny_data) == ["hps_cnn"]
    with pytest.raises(ConfigError, match=r"hps_cnn.*no per-pixel heads.*Architectures for it"):
        archs_for_data(["hps_cnn"], scenes)
    with pytest.raises(ConfigError, match=r"mmoe.*takes"):
        archs_for_data(["mmoe"], scenes)


def test_compare_on_scenes_shares_the_single_task_baseline(tmp_path):
    from polytask.compare import Comparison
    from polytask.config import CompareConfig

    config = CompareConfig(
        dataset="scenes",
        dataset_options={"n_train": 16, "n_val": 8, "n_test": 8, "size": 16},
        archs=["hps_resnet", "mtan"],
        methods=["ew"],
        seeds=[0],
        epochs=1,
        batch_size=8,
        out=str(tmp_path),
    )
    results = Comparison(config, progress=False, log=lambda s: None).run()
    assert list(results["baselines"]) == ["hps_resnet"]
    assert {s["arch"] for s in results["summary"]} == {"hps_resnet", "mtan"}
    assert all(s["ms_per_image"] > 0 and s["params"] > 0 for s in results["summary"])
    assert "normals" in results["summary"][0]["metrics"]
    assert (tmp_path / "plots" / "delta_vs_params.png").exists()
    assert "ms/image" in (tmp_path / "leaderboard.md").read_text()


def test_pooled_heads_for_image_level_tasks():
    tasks = [Task("c", "multiclass", 4), Task("r", "regression")]
    model = pt.models.create("mtan", tasks=tasks, input_shape=(1, 12, 12))
    out = model(torch.randn(2, 1, 12, 12))
    assert out["c"].shape == (2, 4) and out["r"].shape == (2, 1)


# ------------------------------------------------------------------------------ sluice
def test_sluice_initial_mixing_and_orthogonality_by_hand():
    from polytask.models.sluice import SubspaceStitch, alpha_init, beta_init, orthogonality

    a = alpha_init(2, 2, "imbalanced")
    assert torch.allclose(a.sum(1), torch.ones(4))
    assert torch.allclose(a[:2, :2], 0.9 * torch.eye(2)) and torch.allclose(a[:2, 2:], torch.full((2, 2), 0.05))
    assert torch.allclose(alpha_init(3, 2, "balanced"), torch.full((6, 6), 1 / 6))
    assert torch.allclose(beta_init(4), torch.tensor([0.1 / 3, 0.1 / 3, 0.1 / 3, 0.9]))
    # channels c0 = [1, 2] and c1 = [3, 4] over two positions: ‖F1ᵀF2 / M‖² / (C/S)² = ((1·3 + 2·4) / 2)² / 1
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    assert orthogonality(f, 2).item() == pytest.approx(121 / 4)
    # four channels, two per subspace: F1 = [[1, 0], [0, 1]], F2 = [[1, 1], [0, 2]] (rows: positions)
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 2.0]]).reshape(1, 4, 1, 2)
    # F1ᵀF2 / M = [[1, 1], [0, 2]] / 2 -> squares sum 6/4, / (C/S)² = 4 -> 0.375
    assert orthogonality(g, 2).item() == pytest.approx(0.375)
    # an α that swaps the two tasks' second subspaces moves exactly those channels
    stitch = SubspaceStitch(2, 2, "balanced")
    with torch.no_grad():
        stitch.alpha.copy_(torch.eye(4)[[0, 3, 2, 1]])
    x0, x1 = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    y0, y1 = stitch([x0, x1])
    assert torch.equal(y0[:, :2], x0[:, :2]) and torch.equal(y0[:, 2:], x1[:, 2:]) and torch.equal(y1[:, 2:], x0[:, 2:])


def test_sluice_regularization_only_in_training(scenes):
    model = pt.models.create("sluice", tasks=scenes.tasks, input_shape=scenes.input_shape)
    model(scenes.train.inputs[:2])
    reg = model.regularization()
    assert reg is not None and reg.item() > 0 and reg.requires_grad
    model.eval()
    with torch.no_grad():
        model(scenes.train.inputs[:2])
    assert model.regularization() is None
    with pytest.raises(pt.PolytaskError, match="subspaces"):
        pt.models.create("sluice", tasks=scenes.tasks, input_shape=scenes.input_shape, subspaces=5)


# ------------------------------------------------------------------------------ PAD-Net
def test_padnet_distillation_and_deep_supervision(scenes):
    from polytask.tasks import add_intermediate_losses

    torch.manual_seed(0)
    model = pt.models.create("padnet", tasks=scenes.tasks, input_shape=scenes.input_shape)
    x, y = scenes.train.inputs[:4], {k: v[:4] for k, v in scenes.train.targets.items()}
    out = model(x)
    initial = model.intermediate_outputs()
    assert set(initial) == set(model.tasks) and all(initial[t][0].shape == out[t].shape for t in model.tasks)
    # the training loss of a task is its final loss plus its loss on the initial prediction
    losses = pt.compute_losses(scenes.tasks, out, y)
    total = add_intermediate_losses(scenes.tasks, losses, initial, y)
    for t in scenes.tasks:
        expected = losses[t.name] + t.compute_loss(initial[t.name][0], y[t.name])
        assert torch.allclose(total[t.name], expected)
    # with the message convolutions at zero, distillation passes each task's own features through
    feats = {t: torch.randn(2, 32, 4, 4) for t in model.tasks}
    with torch.no_grad():
        for conv in model.distill.message.values():
            conv.weight.zero_()
            conv.bias.zero_()
    distilled = model.distill(feats)
    assert all(torch.equal(distilled[t], feats[t]) for t in model.tasks)
    model.eval()
    with torch.no_grad():
        model(x)
    assert model.intermediate_outputs() == {}
    # distillation convolutions grow with K(K - 1)
    steps = np.diff([_params("padnet", k) for k in (1, 2, 3, 4)])
    assert steps[2] - steps[1] == steps[1] - steps[0] > 0


# ------------------------------------------------------------------------------ MTI-Net
def test_mtinet_scales_and_feature_propagation(scenes):
    from polytask.models.mtinet import FeaturePropagation

    torch.manual_seed(0)
    model = pt.models.create("mtinet", tasks=scenes.tasks, input_shape=scenes.input_shape)
    model(scenes.train.inputs[:2])
    initial = model.intermediate_outputs()
    assert all(len(initial[t]) == 4 for t in model.tasks)  # deep supervision at each of the 4 scales
    assert all(p.shape == initial["seg"][0].shape for p in initial["seg"])
    # the task-attention fusion is a convex combination: identical task features pass through unchanged
    fpm = FeaturePropagation(["a", "b", "c"], 8, 4).eval()
    f = torch.randn(2, 8, 4, 4)
    out = fpm({"a": f, "b": f, "c": f})
    with torch.no_grad():
        shared = fpm.refine(f)
        for t in "abc":
            assert torch.allclose(out[t], f + fpm.se[t](shared), atol=1e-5)


# ------------------------------------------------------------------------------ Deep Relationship Networks
def test_tensor_normal_penalty_and_covariance_update_by_hand():
    from polytask.models.drn import tensor_normal_penalty, update_covariance

    w = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]])  # D1 = 2, D2 = 1, K = 2
    eye2, eye1 = torch.eye(2), torch.eye(1)
    assert tensor_normal_penalty(w, [eye2, eye1, eye2]).item() == pytest.approx(5.0)  # ‖W‖²
    # Σ_task = diag(1, 2): task 1's weights count half
    assert tensor_normal_penalty(w, [eye2, eye1, torch.diag(torch.tensor([1.0, 0.5]))]).item() == pytest.approx(3.0)
    # W_(3) W_(3)ᵀ / (D1 D2) = diag(1, 4) / 2; + ε I with ε = 0 -> scaled to trace 2: diag(0.4, 1.6)
    sigma = update_covariance(w, [eye2, eye1, eye2], mode=2, eps=0.0)
    assert torch.allclose(sigma, torch.diag(torch.tensor([0.4, 1.6])))


def test_drn_learns_task_covariances(scenes):
    torch.manual_seed(0)
    model = pt.models.create("drn", tasks=scenes.tasks, input_shape=scenes.input_shape, update_every=1, weight=0.1)
    layers = model.stacked_weights()
    assert [w.shape[-1] for w in layers] == [4, 4] and layers[0].shape[:2] == (48 * 9, 48)
    first = model.regularization()  # identity covariances: λ Σ ‖W‖²
    assert first.item() == pytest.approx(0.1 * sum(w.detach().pow(2).sum().item() for w in layers), rel=1e-5)
    model.regularization()  # second training call re-estimates Σ_task
    cov = model.task_covariances()[0]
    assert torch.allclose(cov, cov.T) and torch.trace(cov).item() == pytest.approx(4.0, rel=1e-5)
    assert not torch.allclose(cov, torch.eye(4))
    assert torch.linalg.eigvalsh(cov).min() > 0


# ------------------------------------------------------------------------------ tensor-factorised sharing
def test_tucker_and_tensor_train_reconstruct_at_full_rank():
    from polytask.models.tensor_factorised import tt_init, tt_weight, tucker_init, tucker_weight

    w = torch.randn(6, 5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    core, factors = tucker_init(w, (6, 5, 3))
    assert torch.allclose(tucker_weight(core, factors), w, atol=1e-10)
    assert torch.allclose(tt_weight(*tt_init(w, (6, 3))), w, atol=1e-10)
    # truncation keeps the best low-rank part: the error shrinks as the rank grows
    errors = [float((tucker_weight(*tucker_init(w, (r, r, 3))) - w).norm()) for r in (1, 3, 5)]
    assert errors[0] > errors[1] > errors[2] > 0


def test_tensor_factorised_starts_from_the_decomposed_networks(scenes):
    torch.manual_seed(0)
    full = pt.models.create("tensor_tucker", tasks=scenes.tasks, input_shape=scenes.input_shape, rank=10_000)
    small = pt.models.create("tensor_tucker", tasks=scenes.tasks, input_shape=scenes.input_shape, rank=4)
    assert count_parameters(small) < count_parameters(full)
    # at full rank the factorised model is exactly the K networks it decomposed (same seed, same weights)
    torch.manual_seed(0)
    independent = pt.models.create("soft_sharing", tasks=scenes.tasks, input_shape=scenes.input_shape, weight=0.0)
    x = scenes.train.inputs[:2]
    a, b = full.eval()(x), independent.eval()(x)
    assert all(torch.allclose(a[t], b[t], atol=1e-4) for t in a)
    assert not torch.allclose(small.eval()(x)["depth"], b["depth"], atol=1e-3)
    shared = {id(p) for p in small.shared_parameters()}
    assert shared and all(id(bank.task) not in shared for bank in small.banks.values())
    with pytest.raises(pt.PolytaskError, match="rank"):
        pt.models.create("tensor_tt", tasks=scenes.tasks, input_shape=scenes.input_shape, rank=0)


# ------------------------------------------------------------------------------ Joint Many-Task
def test_jmt_levels_and_successive_regularisation(scenes):
    torch.manual_seed(0)
    model = pt.models.create("jmt", tasks=scenes.tasks, input_shape=scenes.input_shape, stage_steps=2, delta=0.5)
    assert model.order == ["edges", "normals", "depth", "seg"]  # low-level tasks at lower depths
    x = scenes.train.inputs[:2]
    model(x)
    assert model.regularization().item() == 0.0  # the stage starts: θ = θ'
    lower = model._lower_parameters()
    with torch.no_grad():
        lower[0].add_(1.0)
    reg = model.regularization()  # same stage: δ ‖θ − θ'‖² = 0.5 · numel
    assert reg.item() == pytest.approx(0.5 * lower[0].numel())
    assert model.regularization().item() == 0.0  # a new stage takes a new snapshot
    # the top task's level is its own; lower heads feed higher levels, so they are shared
    assert {id(p) for p in model.heads["edges"].parameters()} <= {id(p) for p in model.shared_parameters()}
    # the seg head sees the depth prediction: changing the depth head changes seg, not the reverse
    out = model.eval()(x)
    with torch.no_grad():
        for p in model.heads["depth"].parameters():
            p.add_(0.5)
    out2 = model(x)
    assert not torch.allclose(out["seg"], out2["seg"]) and torch.allclose(out["edges"], out2["edges"])
    with pytest.raises(pt.PolytaskError, match="order"):
        pt.models.create("jmt", tasks=scenes.tasks, input_shape=scenes.input_shape, order=["seg", "depth"])


# ------------------------------------------------------------------------------ AdaShare
def test_adashare_policy_losses_by_hand():
    from polytask.models.adashare import sharing_loss, sparsity_loss

    p = torch.tensor([[0.5, 1.0, 0.25], [0.5, 0.5, 1.0]])  # K = 2, L = 3; weights (L - l)/L = 2/3, 1/3, 0
    assert sparsity_loss(p).item() == pytest.approx(math.log(0.5) * 3 + math.log(0.25))
    assert sharing_loss(p).item() == pytest.approx(2 / 3 * 0 + 1 / 3 * 0.5 + 0 * 0.75)


def test_adashare_search_then_fixed_policy(scenes):
    torch.manual_seed(0)
    model = pt.models.create(
        "adashare", tasks=scenes.tasks, input_shape=scenes.input_shape, warmup_epochs=1, search_epochs=4
    )
    before = model.logits.detach().clone()
    x = scenes.train.inputs[:2]
    out_all = model.eval()(x)  # warm-up policy: every block selected = the plain network for every task
    hps = pt.models.create("hps_resnet", tasks=scenes.tasks, input_shape=scenes.input_shape)
    hps.encoder.load_state_dict(model.trunk.state_dict())
    hps.heads.load_state_dict(model.heads.state_dict())
    ref = hps.eval()(x)
    assert all(torch.allclose(out_all[t], ref[t], atol=1e-6) for t in ref)
    policy = model.search(scenes.train, batch_size=8, seed=0)
    assert policy.shape == (4, 8) and set(policy.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(model.logits.detach(), before) and not model.logits.requires_grad
    # a skipped block is the block's shortcut: forcing every block off leaves stem -> shortcuts -> head
    model.eval()
    with torch.no_grad():
        model.policy.zero_()
        h = model.trunk.stem(x)
        for block in model.blocks:
            h = block.shortcut(h)
        assert torch.allclose(model.eval()(x)["depth"], model.heads["depth"](h), atol=1e-6)
    # parameters do not grow with K beyond a head per task (the L x 2 policy logits train in the search only)
    growth = _params("adashare", 3) - _params("adashare", 2)
    assert growth == _params("hps_resnet", 3) - _params("hps_resnet", 2)


def test_adashare_runs_all_phases_from_compare(tmp_path):
    from polytask.compare import Comparison
    from polytask.config import CompareConfig

    config = CompareConfig(
        dataset="scenes",
        dataset_options={"n_train": 16, "n_val": 8, "n_test": 8, "size": 16},
        archs=["adashare"],
        arch_options={"adashare": {"warmup_epochs": 1, "search_epochs": 1}},
        methods=["ew"],
        seeds=[0],
        epochs=1,
        batch_size=8,
        out=str(tmp_path),
    )
    results = Comparison(config, progress=False, log=lambda s: None).run()
    assert (
        results["summary"][0]["arch"] == "adashare"
        and results["runs"][0]["delta_mtl"] == results["runs"][0]["delta_mtl"]
    )


# ------------------------------------------------------------------------------ MTL-NAS
def test_mtl_nas_initial_state_entropy_and_search(scenes):
    from polytask.models.mtl_nas import edge_entropy

    assert edge_entropy(torch.zeros(3)).item() == pytest.approx(3 * math.log(2))
    assert edge_entropy(torch.tensor([30.0, -30.0])).item() == pytest.approx(0.0, abs=1e-9)
    torch.manual_seed(0)
    model = pt.models.create("mtl_nas", tasks=scenes.tasks, input_shape=scenes.input_shape, search_epochs=3)
    assert len(model.edges) == 4 * 3 * (1 + 2 * 3)  # K(K-1) pairs x (same-stage + previous-stage sources)
    # the (1, 0) init: every edge contributes 0, so the network is K independent columns
    independent = pt.models.create("soft_sharing", tasks=scenes.tasks, input_shape=scenes.input_shape, weight=0.0)
    independent.load_state_dict({k: v for k, v in model.state_dict().items() if k.startswith(("columns", "heads"))})
    x = scenes.train.inputs[:2]
    a, b = model.eval()(x), independent.eval()(x)
    assert all(torch.allclose(a[t], b[t], rtol=1e-3, atol=1e-4) for t in a)
    kept = model.search(scenes.train, batch_size=8, seed=0)
    assert set(kept.unique().tolist()) <= {0.0, 1.0} and model.alpha.abs().min() > 0
    assert torch.equal(kept, (model.alpha > 0).float())
    out = model.eval()(x)
    assert out["seg"].shape == (2, 5, 16, 16)
    # parameters of dropped edges are in neither list (they get no gradient)
    listed = {id(p) for p in model.shared_parameters()} | {
        id(p) for g in model.task_parameter_groups().values() for p in g
    }
    dropped = [e for e in range(len(model.edges)) if kept[e] == 0]
    assert all(id(model.edge_proj[e].weight) not in listed for e in dropped)


# ------------------------------------------------------------------------------ fully-adaptive feature sharing
def test_fully_adaptive_affinity_and_grouping_by_hand():
    from polytask.models.fully_adaptive import best_grouping, easy_hard_affinity, grouping_cost, set_partitions

    losses = torch.tensor([[1.0, 4.0, 1.0], [2.0, 3.0, 2.0], [3.0, 2.0, 4.0], [4.0, 1.0, 3.0]])
    a = easy_hard_affinity(losses)  # hard: task0 [0,0,1,1], task1 [1,1,0,0], task2 [0,0,1,1]
    assert torch.allclose(a, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]], dtype=torch.float64))
    partitions = list(set_partitions([1, 2, 3, 4]))
    assert len(partitions) == 15 and len({str(sorted(map(sorted, p))) for p in partitions}) == 15
    units = [(0,), (1,), (2,)]
    assert grouping_cost([[(0,), (2,)], [(1,)]], a, 0.5) == pytest.approx(0.5)
    assert grouping_cost([units], a, 0.5) == pytest.approx(0.5 + 1.0 + 0.5)
    best = best_grouping(units, a, 0.5)
    assert sorted(sorted(u[0] for u in g) for g in best) == [[0, 2], [1]]
    assert len(best_grouping(units, a, 10.0)) == 1  # branching too expensive: stay shared


def test_fully_adaptive_grows_a_tree(scenes):
    torch.manual_seed(0)
    model = pt.models.create("fully_adaptive", tasks=scenes.tasks, input_shape=scenes.input_shape, branch_cost=0.1)
    before = count_parameters(model)
    partition = model.search(scenes.train, batch_size=8, seed=0)
    assert len(partition[-1]) > 1 and count_parameters(model) > before  # the top stage branched and widened
    for lower, upper in itertools.pairwise(partition):  # a tree: every upper branch sits inside a lower one
        assert all(any(set(u) <= set(g) for g in lower) for u in upper)
    out = model(scenes.train.inputs[:2])
    assert out["normals"].shape == (2, 3, 16, 16)
    fresh = pt.models.create("fully_adaptive", tasks=scenes.tasks, input_shape=scenes.input_shape)
    fresh.load_state_dict(model.state_dict())  # the tree travels with the weights
    assert fresh.partition == model.partition
    model.eval(), fresh.eval()
    assert torch.allclose(fresh(scenes.train.inputs[:2])["seg"], model(scenes.train.inputs[:2])["seg"])


def test_training_settings_take_the_dataset_recommendation(scenes):
    from polytask.config import CompareConfig, resolve_training

    assert scenes.info["train_defaults"] == {"epochs": 12}
    assert resolve_training(CompareConfig(), scenes.info["train_defaults"]).epochs == 12
    assert resolve_training(CompareConfig(epochs=3), scenes.info["train_defaults"]).epochs == 3  # the user wins
    plain = resolve_training(CompareConfig(), None)
    assert (plain.epochs, plain.batch_size, plain.lr) == (20, 64, 2e-3)


def test_default_methods_depend_on_the_number_of_architectures():
    from polytask.compare import default_methods
    from polytask.config import DEFAULT_METHODS

    assert default_methods(["hps_cnn"]) == DEFAULT_METHODS
    assert default_methods(["hps_resnet", "mtan"]) == ["ew"]


def test_adashare_keeps_blocks_the_curriculum_never_freed(scenes):
    torch.manual_seed(0)
    model = pt.models.create(
        "adashare", tasks=scenes.tasks, input_shape=scenes.input_shape, warmup_epochs=0, search_epochs=3
    )
    policy = model.search(scenes.train, batch_size=8, seed=0)
    assert model.free_from == 8 - 1  # epochs 0-2 free only the last block
    assert torch.all(policy[:, :7] == 1)


def test_search_budget_counts_the_search_epochs_that_stay_in_the_model(scenes):
    """fully-adaptive keeps the weights of its search rounds (training the others do not get): with
    search_budget "included" they count in the epochs; AdaShare re-draws its weights, so nothing counts."""
    from polytask.config import TrainSettings
    from polytask.runs import train_run

    settings = TrainSettings(epochs=5, batch_size=8, device="cpu", search_budget="included")
    result = train_run(scenes, "fully_adaptive", "ew", 0, settings, {"round_epochs": 2}, progress=False)
    carried = result.extra["carried_search_passes"]
    per_stage = 2 * (len(scenes.train) // 2) / len(scenes.train)  # 2 rounds on the half not held for affinities
    assert carried == result.extra["search_passes"] and carried / per_stage in (1, 2, 3, 4)
    assert result.extra["train_epochs"] == 5 - round(carried) == result.extra["epochs_trained"]
    plain = TrainSettings(epochs=5, batch_size=8, device="cpu")
    extra = train_run(scenes, "fully_adaptive", "ew", 0, plain, {"round_epochs": 2}, progress=False)
    assert extra.extra["train_epochs"] == 5 == extra.extra["epochs_trained"] and extra.extra["search_budget"] == "extra"
    ada = train_run(scenes, "adashare", "ew", 0, settings, {"warmup_epochs": 1, "search_epochs": 2}, progress=False)
    assert ada.extra["carried_search_passes"] == 0 and ada.extra["train_epochs"] == 5
    assert ada.extra["search_passes"] == pytest.approx(1 + 2 * (len(scenes.train) // 2) / len(scenes.train))


def test_search_budget_must_be_known():
    from polytask.config import CompareConfig
    from polytask.errors import ConfigError

    with pytest.raises(ConfigError, match="search_budget must be one of"):
        CompareConfig(search_budget="matched")
