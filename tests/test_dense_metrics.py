"""Dense metrics and dense-task losses against values worked out by hand on tiny arrays."""

import math

import pytest
import torch
import torch.nn.functional as F

from polytask.dense import DenseTask
from polytask.errors import PolytaskError, TaskMismatchError
from polytask.metrics import dense as dm
from polytask.training.evaluation import evaluate


def test_segmentation_miou_and_pixel_accuracy_by_hand():
    task = DenseTask("seg", "segmentation", 2)
    pred = torch.tensor([[[0, 1], [1, 1]]])
    target = torch.tensor([[[0, 1], [0, 255]]])
    # valid pixels: (t0, p0), (t1, p1), (t0, p1) -> IoU0 = 1/2, IoU1 = 1/2; accuracy 2/3
    scores = task.evaluate(pred, target)
    assert scores["miou"] == pytest.approx(0.5)
    assert scores["pixel_acc"] == pytest.approx(2 / 3)
    # a third class absent from targets and predictions is undefined and skipped, not scored 0
    three = DenseTask("seg", "segmentation", 3)
    assert three.evaluate(pred, target)["miou"] == pytest.approx(0.5)
    # a class only predicted (never a target) counts with IoU 0
    pred2 = torch.tensor([[[2, 1], [1, 1]]])
    assert three.evaluate(pred2, target)["miou"] == pytest.approx((0 + 0.5 + 0) / 3)


def test_depth_errors_by_hand():
    task = DenseTask("depth", "depth", metrics=("abs_err", "rel_err", "delta1"))
    pred = torch.tensor([[[1.0, 2.0, 4.0]]])
    target = torch.tensor([[[2.0, 2.0, 0.0]]])  # 0 = invalid
    scores = task.evaluate(pred, target)
    assert scores["abs_err"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert scores["rel_err"] == pytest.approx(0.25)  # (1/2 + 0) / 2
    assert scores["delta1"] == pytest.approx(0.5)  # ratio 2 fails, ratio 1 passes


def test_normal_angles_by_hand():
    task = DenseTask("normals", "normals")
    pred = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0], [5.0, 5.0, 5.0]]).T.reshape(1, 3, 1, 4)
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 4)
    scores = task.evaluate(F.normalize(pred, dim=1), target)  # last pixel: zero target = invalid
    assert scores["mean_angle"] == pytest.approx((45 + 90 + 0) / 3, abs=1e-4)
    assert scores["median_angle"] == pytest.approx(45.0, abs=0.011)
    for th in ("11.25", "22.5", "30"):
        assert scores[f"within_{th}"] == pytest.approx(100 / 3)


def test_edge_f_measure_by_hand():
    task = DenseTask("edges", "edges", edge_radius=1)
    target = torch.zeros(1, 5, 5, dtype=torch.long)
    target[0, 2, 2] = 1
    prob = torch.zeros(1, 5, 5)
    prob[0, 2, 3] = 0.9  # one pixel off the edge: a match within radius 1
    prob[0, 0, 0] = 0.6  # a false positive far away
    # t <= 0.6: P = 1/2, R = 1 -> F = 2/3; 0.6 < t <= 0.9: P = R = 1 -> F = 1; ODS = max = 1
    assert task.evaluate(prob, target)["odsF"] == pytest.approx(1.0)
    stats = dm.edge_stats(prob, target, torch.ones_like(target, dtype=torch.bool), radius=1)
    low = int((dm.EDGE_THRESHOLDS <= 0.6).nonzero().max())
    p, r = float(stats["pred_hit"][low] / stats["pred"][low]), float(stats["gt_hit"][low] / stats["gt"])
    assert (p, r) == (0.5, 1.0)
    exact = DenseTask("edges", "edges", edge_radius=0)  # no tolerance: the near miss is a miss
    assert exact.evaluate(prob, target)["odsF"] == 0.0


def test_dense_losses_by_hand():
    seg = DenseTask("seg", "segmentation", 3)
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(1))
    labels[0, 0, :] = 255
    valid = labels != 255
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], labels[valid])
    assert seg.compute_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)

    depth = DenseTask("depth", "depth")
    pred = torch.tensor([[[[1.0, 3.0], [2.0, 9.0]]]])
    target = torch.tensor([[[2.0, 3.0], [4.0, 0.0]]])  # last pixel invalid
    assert depth.compute_loss(pred, target).item() == pytest.approx((1 + 0 + 2) / 3)

    normals = DenseTask("normals", "normals")
    pred = torch.tensor([[3.0, 0.0, 0.0], [1.0, 1.0, 0.0]]).T.reshape(1, 3, 1, 2)
    target = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 2)
    assert normals.compute_loss(pred, target).item() == pytest.approx(((1 - 1) + (1 - math.sqrt(0.5))) / 2)

    edges = DenseTask("edges", "edges", edge_pos_weight=0.9)
    logit = torch.tensor([[[[0.0, 0.0, 5.0]]]])
    target = torch.tensor([[[1, 0, 255]]])
    # pixel 1: -0.9 log(0.5); pixel 2: -0.1 log(0.5); pixel 3 ignored
    assert edges.compute_loss(logit, target).item() == pytest.approx((0.9 + 0.1) * math.log(2) / 2)


def test_streaming_evaluation_equals_whole_split():
    tasks = [DenseTask("seg", "segmentation", 3), DenseTask("depth", "depth"), DenseTask("edges", "edges")]
    g = torch.Generator().manual_seed(0)
    n = 10
    targets = {
        "seg": torch.randint(0, 3, (n, 6, 6), generator=g),
        "depth": torch.rand(n, 6, 6, generator=g) + 0.5,
        "edges": (torch.rand(n, 6, 6, generator=g) > 0.8).long(),
    }
    outputs = {
        "seg": torch.randn(n, 3, 6, 6, generator=g),
        "depth": torch.rand(n, 1, 6, 6, generator=g) + 0.5,
        "edges": torch.randn(n, 1, 6, 6, generator=g),
    }

    class Fixed(torch.nn.Module):  # returns the outputs for the batch's indices
        def forward(self, idx):
            return {k: v[idx] for k, v in outputs.items()}

    idx = torch.arange(n)
    batches = [(idx[:4], {k: v[:4] for k, v in targets.items()}), (idx[4:], {k: v[4:] for k, v in targets.items()})]
    streamed = evaluate(Fixed(), tasks, batches).scores
    for t in tasks:
        whole = t.evaluate(t.postprocess(outputs[t.name]), targets[t.name])
        assert streamed[t.name] == pytest.approx(whole)


def test_dense_task_errors():
    with pytest.raises(PolytaskError, match="kind must be one of"):
        DenseTask("x", "depthh")
    with pytest.raises(PolytaskError, match="unknown metric"):
        DenseTask("x", "depth", metrics=("miou",))
    seg = DenseTask("seg", "segmentation", 4)
    with pytest.raises(TaskMismatchError, match="expects predictions \\(N, 4, H, W\\)"):
        seg.compute_loss(torch.randn(2, 4, 8, 8), torch.zeros(2, 6, 6, dtype=torch.long))
