"""``DenseTask``: a per-pixel task (semantic segmentation, depth, surface normals, edges).

Predictions are (N, C, H, W) maps at the target's resolution; targets are (N, H, W) (segmentation labels,
depth, edge labels) or (N, 3, H, W) (unit normals). Invalid pixels are skipped by the loss and the
metrics: segmentation and edge labels equal to ``ignore_index``, depth equal to ``invalid_value`` (0, as
in NYUv2) or NaN, normals that are all zero (NYUv2) or NaN. Losses follow the MTAN / Vandenhende et al.
reference code: cross-entropy, L1 depth, 1 − cos for normals (prediction L2-normalised), and class-
balanced BCE for edges (weight ``edge_pos_weight`` on edge pixels, 1 − it on the others). Metrics are
summed over a split as statistics (:mod:`polytask.metrics.dense`), not averaged per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from polytask.errors import PolytaskError, TaskMismatchError
from polytask.metrics import dense as dm
from polytask.tasks import Task

DENSE_KINDS = ("segmentation", "depth", "normals", "edges")
_CHANNELS = {"depth": 1, "normals": 3, "edges": 1}
_DEFAULT_KPI = {"segmentation": "pixel_acc", "depth": "delta1", "normals": "within_30", "edges": "odsF"}
_DEFAULT_METRICS = {
    "segmentation": ("miou", "pixel_acc"),
    "depth": ("abs_err", "rel_err"),
    "normals": ("mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30"),
    "edges": ("odsF",),
}


@dataclass
class DenseTask(Task):
    """A dense-prediction task. ``out_features``: number of classes for segmentation (1 depth, 3 normals,
    1 edges, set automatically). ``kpi`` (for DTP) defaults to pixel accuracy, δ<1.25, the share within 30°
    (as a fraction) and odsF. ``edge_radius``: match tolerance in pixels of the odsF approximation."""

    ignore_index: int = 255
    invalid_value: float = 0.0
    edge_pos_weight: float = 0.95
    edge_radius: int = 1

    def __post_init__(self) -> None:
        if self.kind not in DENSE_KINDS:
            raise PolytaskError(f"dense task {self.name!r}: kind must be one of {DENSE_KINDS}, got {self.kind!r}")
        if self.role not in ("primary", "auxiliary"):
            raise PolytaskError(f"task {self.name!r}: role must be 'primary' or 'auxiliary', got {self.role!r}")
        if self.kind == "segmentation":
            if self.out_features < 2:
                raise PolytaskError(f"segmentation task {self.name!r}: out_features (classes) must be >= 2")
        else:
            self.out_features = _CHANNELS[self.kind]
        if self.loss is not None:
            raise PolytaskError(f"dense task {self.name!r}: the loss is fixed by its kind ({self.kind})")
        valid_metrics = dm.DENSE_METRICS[self.kind]
        names = tuple(self.metrics) or _DEFAULT_METRICS[self.kind]
        unknown = [m for m in names if m not in valid_metrics]
        if unknown:
            raise PolytaskError(
                f"dense task {self.name!r}: unknown metric(s) {unknown} for {self.kind}; valid: {list(valid_metrics)}"
            )
        self.metrics = names
        self.kpi = self.kpi or _DEFAULT_KPI[self.kind]
        if self.kpi not in valid_metrics or not valid_metrics[self.kpi]:
            raise PolytaskError(
                f"dense task {self.name!r}: kpi {self.kpi!r} must be a higher-is-better {self.kind} metric"
            )
        if not 0.0 < self.edge_pos_weight < 1.0:
            raise PolytaskError(f"dense task {self.name!r}: edge_pos_weight must be in (0, 1)")

    @property
    def directions(self) -> dict[str, bool]:
        return {m: dm.DENSE_METRICS[self.kind][m] for m in self.metrics}

    # ----------------------------------------------------------------- shapes and masks
    def _check_shapes(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        spatial = target.shape[-2:] if target.dim() >= 3 else None
        want_target = 4 if self.kind == "normals" else 3
        ok = (
            spatial is not None
            and target.dim() == want_target
            and pred.dim() == 4
            and pred.shape[0] == target.shape[0]
            and pred.shape[1] == self.out_features
            and pred.shape[-2:] == spatial
            and (self.kind != "normals" or target.shape[1] == 3)
        )
        if not ok:
            t_shape = "(N, 3, H, W)" if self.kind == "normals" else "(N, H, W)"
            raise TaskMismatchError(
                f"task {self.name!r}: prediction shape {tuple(pred.shape)} does not match target shape "
                f"{tuple(target.shape)}; a {self.kind} task expects predictions (N, {self.out_features}, H, W) "
                f"and targets {t_shape} at the same H, W"
            )
        return pred

    def valid_mask(self, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Bool (N, H, W): True at valid pixels (``mask``, if given, is per sample (N,) or per pixel)."""
        if self.kind in ("segmentation", "edges"):
            valid = target != self.ignore_index
        elif self.kind == "depth":
            valid = (target != self.invalid_value) & ~torch.isnan(target)
        else:
            valid = (target != 0).any(1) & ~torch.isnan(target).any(1)
        if mask is not None:
            mask = mask.bool()
            if mask.dim() == 1 and mask.shape[0] == valid.shape[0]:
                mask = mask[:, None, None]
            elif mask.shape != valid.shape:
                raise TaskMismatchError(
                    f"task {self.name!r}: mask shape {tuple(mask.shape)} is neither (N,) nor {tuple(valid.shape)}"
                )
            valid = valid & mask
        return valid

    # ----------------------------------------------------------------- loss and outputs
    def compute_loss(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, complete: bool = False
    ) -> torch.Tensor:
        """Mean loss over valid pixels (0, still in the graph, when there is none)."""
        self._check_shapes(pred, target)
        valid = self.valid_mask(target, mask)
        if self.kind == "segmentation":
            labels = torch.where(valid, target.long(), torch.full_like(target.long(), -100))
            if not bool(valid.any()):
                return pred.sum() * 0.0
            return F.cross_entropy(pred, labels, ignore_index=-100)
        n = valid.sum()
        if int(n) == 0:
            return pred.sum() * 0.0
        if self.kind == "depth":
            per_pixel = (pred[:, 0] - torch.nan_to_num(target.to(pred.dtype))).abs()
        elif self.kind == "normals":
            per_pixel = 1.0 - (F.normalize(pred, dim=1) * torch.nan_to_num(target.to(pred.dtype))).sum(1)
        else:
            y = (target == 1).to(pred.dtype)
            w = self.edge_pos_weight
            per_pixel = F.binary_cross_entropy_with_logits(
                pred[:, 0], y, weight=w * y + (1 - w) * (1 - y), reduction="none"
            )
        return torch.where(valid, per_pixel, torch.zeros_like(per_pixel)).sum() / n

    def postprocess(self, pred: torch.Tensor) -> torch.Tensor:
        """Raw maps -> what the metrics read: class labels, depth, unit normals, edge probabilities."""
        if self.kind == "segmentation":
            return pred.argmax(1)
        if self.kind == "depth":
            return pred[:, 0]
        if self.kind == "normals":
            return F.normalize(pred, dim=1)
        return torch.sigmoid(pred[:, 0])

    # ----------------------------------------------------------------- metrics (streaming)
    def batch_stats(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> dm.Stats:
        """Additive statistics of one batch of post-processed predictions."""
        if self.kind == "segmentation":
            return dm.segmentation_stats(pred, target, valid, self.out_features)
        if self.kind == "depth":
            return dm.depth_stats(pred, target, valid)
        if self.kind == "normals":
            return dm.normals_stats(pred, target, valid)
        return dm.edge_stats(pred, target, valid, self.edge_radius)

    def scores(self, stats: dm.Stats, metrics: Sequence[str] | None = None) -> dict[str, float]:
        table = {
            "segmentation": dm.segmentation_scores,
            "depth": dm.depth_scores,
            "normals": dm.normals_scores,
            "edges": dm.edge_scores,
        }[self.kind](stats)
        return {m: table[m] for m in (metrics or self.metrics)}

    def evaluate(self, pred, target, valid=None) -> dict[str, float]:
        """{metric: value} for whole arrays or tensors (post-processed predictions, per-pixel ``valid``)."""
        pred, target = torch.as_tensor(np.asarray(pred)), torch.as_tensor(np.asarray(target))
        valid = self.valid_mask(target) if valid is None else torch.as_tensor(np.asarray(valid)).bool()
        return self.scores(self.batch_stats(pred, target, valid))

    def kpi_value(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
        valid = self.valid_mask(target, mask)
        if not bool(valid.any()):
            return float("nan")
        p = self.postprocess(pred.detach().float()).cpu()
        value = self.scores(self.batch_stats(p, target.detach().cpu(), valid.cpu()), [self.kpi])[self.kpi]
        return value / 100.0 if self.kpi.startswith("within") else value

    def has_missing(self, target: torch.Tensor) -> bool:
        return True  # per-pixel validity is always checked

    def evaluate_empty(self) -> dict[str, float]:
        """Scores of an empty split: NaN for every metric."""
        return dict.fromkeys(self.metrics, float("nan"))
