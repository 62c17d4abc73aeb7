"""Soft parameter sharing: one network per task, coupled by a penalty on their parameters.

- ``penalty="l2"`` (Duong et al. 2015): λ Σ_{i<j} ‖θ_i − θ_j‖² over corresponding weights of the task
  networks;
- ``penalty="trace"`` (Yang & Hospedales 2017, trace-norm regularised deep MTL): λ Σ_l ‖W_l‖_*, the
  nuclear norm of the K x P_l matrix whose row k is task k's flattened weight of layer l.

The penalty covers the convolution weights of the columns (not BatchNorm). With λ = 0 the model is K
independent single-task networks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from polytask.errors import PolytaskError
from polytask.models.columns import ColumnNetwork
from polytask.models.conv import DEFAULT_STRIDES, DEFAULT_WIDTHS
from polytask.models.registry import register
from polytask.tasks import Task

PENALTIES = ("l2", "trace")


def l2_coupling(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_{i<j} ‖w_i − w_j‖² for the K same-shaped tensors ``weights``."""
    pairs = [(a - b).pow(2).sum() for i, a in enumerate(weights) for b in weights[i + 1 :]]
    return torch.stack(pairs).sum() if pairs else weights[0].sum() * 0.0


def trace_norm(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Nuclear norm (sum of singular values) of the K x P matrix of flattened ``weights``."""
    return torch.linalg.svdvals(torch.stack([w.reshape(-1) for w in weights])).sum()


class SoftSharing(ColumnNetwork):
    """K task networks with no feature exchange; :meth:`regularization` is the coupling penalty."""

    def __init__(
        self, tasks: Sequence[Task], input_shape: Sequence[int], penalty: str = "l2", weight: float = 1e-3, **kw
    ):
        if penalty not in PENALTIES:
            raise PolytaskError(f"soft_sharing: penalty must be one of {PENALTIES}, got {penalty!r}")
        if weight < 0:
            raise PolytaskError(f"soft_sharing: weight (λ) must be >= 0, got {weight}")
        super().__init__(tasks, input_shape, **kw)
        self.penalty, self.weight = penalty, float(weight)

    def coupled_weights(self) -> list[list[torch.Tensor]]:
        """Per layer, the K columns' convolution weights."""
        per_column = [[p for n, p in col.named_parameters() if p.dim() == 4] for col in self.columns]
        return [list(layer) for layer in zip(*per_column)]

    def regularization(self) -> torch.Tensor | None:
        if self.weight == 0 or len(self.columns) < 2:
            return None
        fn = l2_coupling if self.penalty == "l2" else trace_norm
        return self.weight * sum(fn(layer) for layer in self.coupled_weights())


@register(
    "soft_sharing",
    "Soft parameter sharing: one ResNet per task, l2 (Duong 2015) or trace-norm coupling",
    inputs=("image",),
    dense=True,
    baseline="hps_resnet",
)
def soft_sharing(
    tasks: Sequence[Task],
    input_shape: Sequence[int],
    penalty: str = "l2",
    weight: float = 1e-3,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    strides: Sequence[int] = DEFAULT_STRIDES,
    blocks: int = 2,
    width_factor: float = 1.0,
    head_hidden: int = 32,
) -> SoftSharing:
    return SoftSharing(
        tasks,
        input_shape,
        penalty,
        weight,
        widths=widths,
        strides=strides,
        blocks=blocks,
        width_factor=width_factor,
        head_hidden=head_hidden,
    )
