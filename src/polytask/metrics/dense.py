"""Dense-prediction metrics as additive statistics: each ``*_stats`` function turns one batch into a dict
of tensors that add up over batches, and the matching ``*_scores`` function turns the summed statistics
into metric values. Summing first and dividing once gives dataset-level (pixel-weighted) scores, as the
confusion-matrix evaluation of MTAN / LibMTL and Vandenhende et al.'s meters do, in constant memory.

- Segmentation (``miou``, ``pixel_acc``): confusion matrix over valid pixels. IoU_c = TP/(TP+FP+FN);
  mIoU averages the classes that occur in the targets or the predictions (a class absent from both is
  undefined and skipped, like ``nanmean``); pixel accuracy = trace / valid pixels.
- Depth (``abs_err``, ``rel_err``, ``delta1``): mean |p − t|, mean |p − t| / t over valid pixels
  (MTAN), and the share of valid pixels with max(p/t, t/p) < 1.25 (Eigen et al. 2014).
- Normals (``mean_angle``, ``median_angle``, ``within_11.25``, ``within_22.5``, ``within_30``): the angle
  in degrees between the L2-normalised prediction and the target over valid pixels; the median is read
  from a 0.01° histogram (exact to 0.01°), the "within" shares are in percent.
- Edges (``odsF``): an approximation of the optimal-dataset-scale F-measure of the BSDS/SEISM benchmark.
  At each threshold t ∈ {0.01, ..., 0.99} a predicted edge pixel counts as correct when a target edge
  lies within chessboard distance ``radius``, and a target edge pixel as recalled when a predicted edge
  does; P and R are summed over the dataset and odsF = max_t 2PR/(P+R). Unlike SEISM there is no
  non-maximum thinning and no one-to-one matching, so thick predicted edges are not penalised.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Stats = dict[str, torch.Tensor]

NORMAL_THRESHOLDS = (11.25, 22.5, 30.0)
ANGLE_BIN = 0.01  # degrees per histogram bin for the median
EDGE_THRESHOLDS = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)

# metric name -> higher_is_better, per dense task kind
DENSE_METRICS: dict[str, dict[str, bool]] = {
    "segmentation": {"miou": True, "pixel_acc": True},
    "depth": {"abs_err": False, "rel_err": False, "delta1": True},
    "normals": {
        "mean_angle": False,
        "median_angle": False,
        "within_11.25": True,
        "within_22.5": True,
        "within_30": True,
    },
    "edges": {"odsF": True},
}


def add_stats(total: Stats | None, batch: Stats) -> Stats:
    """Sum of two statistics dicts (``total`` None: a copy of ``batch``)."""
    if total is None:
        return {k: v.clone() for k, v in batch.items()}
    return {k: total[k] + v for k, v in batch.items()}


# ------------------------------------------------------------------------------ segmentation
def segmentation_stats(labels: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, n_classes: int) -> Stats:
    """Confusion matrix (rows: target class, columns: predicted class) over the valid pixels."""
    t = target[valid].long()
    p = labels[valid].long()
    cm = torch.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    return {"confusion": cm}


def segmentation_scores(stats: Stats) -> dict[str, float]:
    cm = stats["confusion"].double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    total = cm.sum()
    return {
        "miou": float((tp[present] / union[present]).mean()) if bool(present.any()) else math.nan,
        "pixel_acc": float(tp.sum() / total) if total > 0 else math.nan,
    }


# ------------------------------------------------------------------------------ depth
def depth_stats(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> Stats:
    """Sums of |p − t|, |p − t|/t and [max(p/t, t/p) < 1.25] over valid pixels (targets there are > 0)."""
    p, t = pred[valid].double(), target[valid].double()
    err = (p - t).abs()
    ratio = torch.maximum(p / t, t / p.clamp_min(1e-12))
    return {
        "abs": err.sum(),
        "rel": (err / t).sum(),
        "delta1": (ratio < 1.25).sum().double(),
        "n": torch.tensor(float(t.numel()), dtype=torch.float64),
    }


def depth_scores(stats: Stats) -> dict[str, float]:
    n = float(stats["n"])
    if n == 0:
        return dict.fromkeys(DENSE_METRICS["depth"], math.nan)
    return {
        "abs_err": float(stats["abs"]) / n,
        "rel_err": float(stats["rel"]) / n,
        "delta1": float(stats["delta1"]) / n,
    }


# ------------------------------------------------------------------------------ normals
def normal_angles(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Angle in degrees between (N, 3, H, W) predictions (normalised here) and unit targets: (N, H, W)."""
    cos = (F.normalize(pred.double(), dim=1) * target.double()).sum(1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos))


def normals_stats(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> Stats:
    angles = normal_angles(pred, target)[valid]
    bins = round(180 / ANGLE_BIN)
    index = (angles / ANGLE_BIN).long().clamp_(0, bins - 1)
    return {
        "sum": angles.sum(),
        "n": torch.tensor(float(angles.numel()), dtype=torch.float64),
        "within": torch.stack([(angles < th).sum() for th in NORMAL_THRESHOLDS]).double(),
        "histogram": torch.bincount(index, minlength=bins),
    }


def normals_scores(stats: Stats) -> dict[str, float]:
    n = float(stats["n"])
    if n == 0:
        return dict.fromkeys(DENSE_METRICS["normals"], math.nan)
    cumulative = stats["histogram"].cumsum(0).double()
    k = int(torch.searchsorted(cumulative, torch.tensor(n / 2, dtype=torch.float64)))
    below = float(cumulative[k - 1]) if k > 0 else 0.0
    inside = float(stats["histogram"][k])
    median = (k + (n / 2 - below) / inside) * ANGLE_BIN  # linear within the bin
    scores = {"mean_angle": float(stats["sum"]) / n, "median_angle": median}
    for th, count in zip(NORMAL_THRESHOLDS, stats["within"].tolist()):
        scores[f"within_{th:g}"] = 100.0 * count / n
    return scores


# ------------------------------------------------------------------------------ edges
def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """(N, H, W) bool -> pixels within chessboard distance ``radius`` of a True pixel."""
    if radius == 0:
        return mask
    x = mask.unsqueeze(1).float()
    return F.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius)[:, 0] > 0


def edge_stats(prob: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, radius: int = 1) -> Stats:
    """Per threshold: predicted edges, predicted edges near a target edge, target edges, target edges near
    a predicted edge (all over valid pixels). ``prob`` (N, H, W) in [0, 1]; ``target`` (N, H, W) in {0, 1}."""
    gt = (target == 1) & valid
    near_gt = _dilate(gt, radius)
    rows = {"pred": [], "pred_hit": [], "gt_hit": []}
    for th in EDGE_THRESHOLDS.tolist():
        edge = (prob >= th) & valid
        rows["pred"].append(edge.sum())
        rows["pred_hit"].append((edge & near_gt).sum())
        rows["gt_hit"].append((gt & _dilate(edge, radius)).sum())
    out = {k: torch.stack(v).double() for k, v in rows.items()}
    out["gt"] = gt.sum().double()
    return out


def edge_scores(stats: Stats) -> dict[str, float]:
    if float(stats["gt"]) == 0:
        return {"odsF": math.nan}
    precision = torch.where(stats["pred"] > 0, stats["pred_hit"] / stats["pred"].clamp_min(1), torch.ones(()))
    recall = stats["gt_hit"] / stats["gt"]
    f = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), 0.0)
    return {"odsF": float(f.max())}
