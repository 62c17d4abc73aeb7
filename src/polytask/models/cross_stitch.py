"""Cross-Stitch networks (Misra et al., CVPR 2016).

One network per task; after every stage a cross-stitch unit mixes the K tasks' features channel by
channel: x̃_i[c] = Σ_j a_ij[c] x_j[c], a learnable K x K matrix per channel (the per-channel unit of
Vandenhende et al.'s reference code; ``per_channel=False`` gives one K x K matrix per stage, the paper's
unit). Initialised as in the paper: a_ii = α, a_ij = β = (1 − α)/(K − 1) (α 0.9, β 0.1 for two tasks,
rows summing to 1). With α = 1 it equals K independent networks. The reference trains the units with
SGD at 100x the base learning rate; ``unit_lr_mult`` sets that multiple (default 1: under Adam, whose
steps are normalised per parameter, no multiple is needed).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from polytask.errors import PolytaskError
from polytask.models.columns import ColumnNetwork
from polytask.models.conv import DEFAULT_STRIDES, DEFAULT_WIDTHS
from polytask.models.registry import register
from polytask.tasks import Task


def stitch_init(k: int, alpha: float) -> torch.Tensor:
    """K x K matrix with α on the diagonal and (1 − α)/(K − 1) elsewhere (identity for K = 1)."""
    if k == 1:
        return torch.ones(1, 1)
    beta = (1.0 - alpha) / (k - 1)
    return torch.full((k, k), beta) + (alpha - beta) * torch.eye(k)


class CrossStitchUnit(nn.Module):
    """x̃_i = Σ_j a_ij ⊙ x_j with a (K, K, C) (per channel) or (K, K, 1)."""

    def __init__(self, k: int, channels: int, alpha: float = 0.9, per_channel: bool = True):
        super().__init__()
        c = channels if per_channel else 1
        self.weight = nn.Parameter(stitch_init(k, alpha)[:, :, None].repeat(1, 1, c))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        x = torch.stack(feats)  # (K, N, C, H, W)
        mixed = torch.einsum("ijc,jnchw->inchw", self.weight.expand(-1, -1, x.shape[2]), x)
        return list(mixed.unbind(0))


class CrossStitch(ColumnNetwork):
    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: Sequence[int],
        alpha: float = 0.9,
        per_channel: bool = True,
        unit_lr_mult: float = 1.0,
        **kw,
    ):
        if not 0.0 <= alpha <= 1.0:
            raise PolytaskError(f"cross_stitch: alpha must be in [0, 1], got {alpha}")
        if unit_lr_mult <= 0:
            raise PolytaskError(f"cross_stitch: unit_lr_mult must be > 0, got {unit_lr_mult}")
        super().__init__(tasks, input_shape, **kw)
        self.unit_lr_mult = float(unit_lr_mult)
        self.fusions = nn.ModuleList(CrossStitchUnit(len(tasks), w, alpha, per_channel) for w in self.widths)


@register(
    "cross_stitch",
    "Cross-Stitch networks (Misra 2016): one ResNet per task, per-channel stitch units",
    inputs=("image",),
    dense=True,
    baseline="hps_resnet",
)
def cross_stitch(
    tasks: Sequence[Task],
    input_shape: Sequence[int],
    alpha: float = 0.9,
    per_channel: bool = True,
    unit_lr_mult: float = 1.0,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    strides: Sequence[int] = DEFAULT_STRIDES,
    blocks: int = 2,
    width_factor: float = 1.0,
    head_hidden: int = 32,
) -> CrossStitch:
    return CrossStitch(
        tasks,
        input_shape,
        alpha,
        per_channel,
        unit_lr_mult,
        widths=widths,
        strides=strides,
        blocks=blocks,
        width_factor=width_factor,
        head_hidden=head_hidden,
    )
