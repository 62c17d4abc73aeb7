"""Inference cost of a trained model: milliseconds per input in eval mode, without gradients."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from polytask.data.base import Inputs, num_rows, take
from polytask.training.evaluation import move_batch


@torch.no_grad()
def ms_per_input(
    model: nn.Module, inputs: Inputs, device: torch.device | str = "cpu", batch_size: int = 64, repeats: int = 5
) -> float:
    """Median over ``repeats`` of the time of one forward pass of a batch of ``batch_size`` inputs (the
    first ones of ``inputs``), divided by the batch size; one untimed warm-up pass first."""
    device = torch.device(device)
    n = min(batch_size, num_rows(inputs))
    x, _ = move_batch(take(inputs, slice(0, n)), {}, device)
    was_training = model.training
    model.eval()
    try:
        model(x)
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return 1000 * statistics.median(times) / n
