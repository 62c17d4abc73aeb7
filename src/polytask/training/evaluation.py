"""Evaluation over a whole split: per-task metrics (missing targets skipped) and mean losses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from polytask.metrics.dense import add_stats
from polytask.tasks import Task, check_outputs


@dataclass
class EvalResult:
    scores: dict[str, dict[str, float]]  # {task: {metric: value}}
    losses: dict[str, float]  # {task: mean loss over present targets}


def move_batch(x, targets: dict[str, torch.Tensor], device: torch.device):
    """Inputs (a tensor or a dict of tensors, e.g. tabular fields) and targets on ``device``."""
    if isinstance(x, dict):
        first = next(iter(x.values()))
        if first.device == device:
            return x, targets
        x = {k: v.to(device, non_blocking=True) for k, v in x.items()}
    elif x.device == device:
        return x, targets
    else:
        x = x.to(device, non_blocking=True)
    return x, {k: v.to(device, non_blocking=True) for k, v in targets.items()}


@torch.no_grad()
def evaluate(
    model: nn.Module, tasks: Sequence[Task], batches: Iterable, device: torch.device | str = "cpu", amp: bool = False
) -> EvalResult:
    """Run ``model`` over ``batches`` in eval mode and score every task (training mode restored after)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    streaming = {t.name for t in tasks if hasattr(t, "batch_stats")}  # dense tasks: summed statistics
    stats: dict[str, dict | None] = dict.fromkeys(streaming)
    preds: dict[str, list[torch.Tensor]] = {t.name: [] for t in tasks}
    targs: dict[str, list[torch.Tensor]] = {t.name: [] for t in tasks}
    valids: dict[str, list[torch.Tensor]] = {t.name: [] for t in tasks}
    loss_sum = dict.fromkeys(preds, 0.0)
    count = dict.fromkeys(preds, 0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else nullcontext()
    try:
        for x, targets in batches:
            x, targets = move_batch(x, targets, device)
            with autocast:
                out = model(x)
            check_outputs(tasks, out, targets)
            for t in tasks:
                p, y = out[t.name].float(), targets[t.name]
                valid = t.valid_mask(y, targets.get(t.name + "_mask"))
                n = int(valid.sum())
                if n:
                    loss_sum[t.name] += float(t.compute_loss(p, y, targets.get(t.name + "_mask"))) * n
                    count[t.name] += n
                if t.name in streaming:
                    batch = t.batch_stats(t.postprocess(p), y, valid)
                    stats[t.name] = add_stats(stats[t.name], {k: v.cpu() for k, v in batch.items()})
                    continue
                preds[t.name].append(t.postprocess(p).cpu())
                targs[t.name].append(y.cpu())
                valids[t.name].append(valid.cpu())
    finally:
        model.train(was_training)
    scores = {}
    for t in tasks:
        if t.name in streaming:
            scores[t.name] = t.scores(stats[t.name]) if stats[t.name] is not None else t.evaluate_empty()
            continue
        p = torch.cat(preds[t.name]).numpy()
        y = torch.cat(targs[t.name]).numpy()
        v = torch.cat(valids[t.name]).numpy().astype(bool)
        scores[t.name] = t.evaluate(p, y, v)
    losses = {k: (loss_sum[k] / count[k] if count[k] else float("nan")) for k in loss_sum}
    return EvalResult(scores, losses)
