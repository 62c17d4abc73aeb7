"""NDDR-CNN (Gao et al., CVPR 2019): neural discriminative dimensionality reduction.

One network per task; after every stage the K features are concatenated along channels and, for each
task i, reduced back to C channels by a 1x1 convolution (no bias) -> BatchNorm (momentum 0.05, as the
reference) -> ReLU. The 1x1 weight is initialised to [β I, ..., α I, ..., β I], α on task i's own block,
β = (1 − α)/(K − 1) on the others (paper: α 0.9, β 0.1 for two tasks). With zero off-diagonal blocks and
diagonal blocks diag(a) it computes a cross-stitch unit (then BN and ReLU): NDDR generalises Cross-Stitch
from per-channel scalars to full channel mixing. ``unit_lr_mult``: learning-rate multiple of the NDDR
layers (reference: 100x under SGD; default 1 under Adam).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from polytask.errors import PolytaskError
from polytask.models.columns import ColumnNetwork
from polytask.models.conv import DEFAULT_STRIDES, DEFAULT_WIDTHS
from polytask.models.cross_stitch import stitch_init
from polytask.models.registry import register
from polytask.tasks import Task


class NDDRLayer(nn.Module):
    """K 1x1 conv-BN-ReLU reductions of the concatenated task features."""

    def __init__(self, k: int, channels: int, alpha: float = 0.9):
        super().__init__()
        self.reduce = nn.ModuleList(nn.Conv2d(k * channels, channels, 1, bias=False) for _ in range(k))
        self.bn = nn.ModuleList(nn.BatchNorm2d(channels, momentum=0.05) for _ in range(k))
        coeff = stitch_init(k, alpha)
        eye = torch.eye(channels)
        with torch.no_grad():
            for i, conv in enumerate(self.reduce):
                blocks = [coeff[i, j] * eye for j in range(k)]
                conv.weight.copy_(torch.cat(blocks, dim=1)[:, :, None, None])

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        x = torch.cat(feats, dim=1)
        return [torch.relu(bn(conv(x))) for conv, bn in zip(self.reduce, self.bn)]


class NDDR(ColumnNetwork):
    def __init__(
        self, tasks: Sequence[Task], input_shape: Sequence[int], alpha: float = 0.9, unit_lr_mult: float = 1.0, **kw
    ):
        if not 0.0 <= alpha <= 1.0:
            raise PolytaskError(f"nddr: alpha must be in [0, 1], got {alpha}")
        if unit_lr_mult <= 0:
            raise PolytaskError(f"nddr: unit_lr_mult must be > 0, got {unit_lr_mult}")
        super().__init__(tasks, input_shape, **kw)
        self.unit_lr_mult = float(unit_lr_mult)
        self.fusions = nn.ModuleList(NDDRLayer(len(tasks), w, alpha) for w in self.widths)


@register(
    "nddr",
    "NDDR-CNN (Gao 2019): one ResNet per task, 1x1 conv-BN-ReLU fusion of the concatenated features",
    inputs=("image",),
    dense=True,
    baseline="hps_resnet",
)
def nddr(
    tasks: Sequence[Task],
    input_shape: Sequence[int],
    alpha: float = 0.9,
    unit_lr_mult: float = 1.0,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    strides: Sequence[int] = DEFAULT_STRIDES,
    blocks: int = 2,
    width_factor: float = 1.0,
    head_hidden: int = 32,
) -> NDDR:
    return NDDR(
        tasks,
        input_shape,
        alpha,
        unit_lr_mult,
        widths=widths,
        strides=strides,
        blocks=blocks,
        width_factor=width_factor,
        head_hidden=head_hidden,
    )
