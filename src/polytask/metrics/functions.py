"""Per-task metric functions on whole evaluation sets.

Every function takes ``pred`` (the task's *post-processed* output: class probabilities of shape (N, C),
a positive-class probability of shape (N,), or regression values of shape (N,)) and ``target`` (N,),
both numpy arrays with missing samples already removed, and returns a float. Thresholding, ranking and
log-loss use scikit-learn's tested implementations.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm


def _labels(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Hard labels: argmax over classes, or a 0.5 threshold for one binary probability."""
    if pred.ndim == 2 and pred.shape[1] > 1:
        return pred.argmax(axis=1)
    return (pred.reshape(-1) >= 0.5).astype(np.int64)


def accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Fraction of samples whose predicted class equals the target."""
    return float(np.mean(_labels(pred, target) == target.astype(np.int64)))


def macro_f1(pred: np.ndarray, target: np.ndarray) -> float:
    """Unweighted mean over classes of the per-class F1 = 2TP / (2TP + FP + FN) (0 for a class absent from
    both targets and predictions). Classes: the C columns of ``pred``, or {0, 1} for a binary probability.

    Computed from one confusion matrix (np.bincount): the same numbers as
    ``sklearn.metrics.f1_score(average="macro", labels=range(C), zero_division=0)`` at a fraction of its
    input-validation cost, which dominated per-epoch validation time.
    """
    n_classes = pred.shape[1] if pred.ndim == 2 and pred.shape[1] > 1 else 2
    y, p = target.astype(np.int64), _labels(pred, target)
    cm = np.bincount(y * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # (TP + FP) + (TP + FN)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


def auc(pred: np.ndarray, target: np.ndarray) -> float:
    """ROC AUC; binary for (N,) probabilities, one-vs-rest macro for (N, C). NaN if one class only."""
    target = target.astype(np.int64)
    if len(np.unique(target)) < 2:
        warnings.warn("AUC undefined: only one class present in the targets; returning NaN", stacklevel=2)
        return float("nan")
    if pred.ndim == 2 and pred.shape[1] > 1:
        return float(skm.roc_auc_score(target, pred, multi_class="ovr", labels=np.arange(pred.shape[1])))
    return float(skm.roc_auc_score(target, pred.reshape(-1)))


def log_loss(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean negative log-likelihood of the targets under the predicted probabilities (clipped at 1e-15)."""
    target = target.astype(np.int64)
    if pred.ndim == 2 and pred.shape[1] > 1:
        p = np.clip(pred[np.arange(len(target)), target], 1e-15, 1.0)
        return float(-np.mean(np.log(p)))
    p = np.clip(pred.reshape(-1), 1e-15, 1 - 1e-15)
    return float(-np.mean(target * np.log(p) + (1 - target) * np.log(1 - p)))


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(pred.reshape(target.shape) - target)))


def mse(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error."""
    return float(np.mean((pred.reshape(target.shape) - target) ** 2))


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((pred.reshape(target.shape) - target) ** 2)))


def rounded_accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Fraction of regression predictions that round to the (integer) target, e.g. a digit sum."""
    return float(np.mean(np.rint(pred.reshape(target.shape)) == target))
