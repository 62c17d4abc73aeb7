"""Sluice networks (Ruder, Bingel, Augenstein & Søgaard, AAAI 2019), for convolutional columns.

One network per task; each stage's output is split into S channel subspaces. After every stage a
learnable α ∈ R^{KS x KS} mixes all tasks' subspaces (x̃_{k,s} = Σ_{j,r} α_{(k,s),(j,r)} x_{j,r}); a
learnable layer-stitch β_k ∈ R^L mixes column k's stage outputs for task k's head (h_k = Σ_l β_{k,l}
x̃_{k,l}, earlier stages average-pooled to the last stage's resolution, so the stages must have equal
widths); and an orthogonality penalty Σ_{k,l} Σ_{s<r} ‖F_{k,l,s}ᵀ F_{k,l,r} / M‖²_F / (C/S)² pushes the
subspaces of each column apart (F: the M x C/S matrix of a subspace's activations over the batch's M
positions; the normalisation, ours, makes it the mean squared cross-covariance entry, independent of
batch, image size and width).

Initialisation follows the reference code's defaults: α "balanced" (every entry 1/(KS)) and β
"imbalanced" (0.9 on the last stage, 0.1/(L − 1) on the others). ``alpha_init="imbalanced"`` starts near
independent columns instead: identity on a task's own subspaces, 0.1/((K − 1)S) from other tasks'. The
reference applies the orthogonality term to its LSTM weight matrices with weight 0 by default; we follow
the paper (activations) with weight ``ortho_weight`` (default 0.01, our choice).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from polytask.errors import PolytaskError
from polytask.models.columns import ColumnNetwork
from polytask.models.conv import DEFAULT_STRIDES
from polytask.models.registry import register
from polytask.tasks import Task

ALPHA_INITS = ("balanced", "imbalanced")


def alpha_init(k: int, s: int, mode: str) -> torch.Tensor:
    """The KS x KS subspace-mixing matrix at initialisation (rows sum to 1)."""
    n = k * s
    if mode == "balanced" or k == 1:
        return torch.full((n, n), 1.0 / n) if mode == "balanced" else torch.eye(n)
    a = torch.full((n, n), 0.1 / ((k - 1) * s))
    for t in range(k):
        a[t * s : (t + 1) * s, t * s : (t + 1) * s] = 0.9 * torch.eye(s)
    return a


def beta_init(layers: int) -> torch.Tensor:
    """0.9 on the last layer, 0.1/(L − 1) on the others (all on the last layer when L = 1)."""
    if layers == 1:
        return torch.ones(1)
    b = torch.full((layers,), 0.1 / (layers - 1))
    b[-1] = 0.9
    return b


def orthogonality(feature: torch.Tensor, subspaces: int) -> torch.Tensor:
    """Σ_{s<r} ‖F_sᵀ F_r / M‖²_F / (C/S)² over the channel subspaces of an (N, C, H, W) feature: the mean
    squared entry of the subspaces' (uncentred) cross-covariance, independent of batch, image and width."""
    n, c, h, w = feature.shape
    m, width = n * h * w, c // subspaces
    parts = feature.reshape(n, subspaces, width, h * w).permute(1, 0, 3, 2).reshape(subspaces, m, -1)
    total = feature.new_zeros(())
    for s in range(subspaces):
        for r in range(s + 1, subspaces):
            total = total + (parts[s].T @ parts[r] / m).pow(2).sum() / width**2
    return total


class SubspaceStitch(nn.Module):
    """x̃_{k,s} = Σ_{j,r} α_{(k,s),(j,r)} x_{j,r} over the K tasks' S channel subspaces."""

    def __init__(self, k: int, subspaces: int, mode: str):
        super().__init__()
        self.k, self.s = k, subspaces
        self.alpha = nn.Parameter(alpha_init(k, subspaces, mode))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        x = torch.stack(feats)  # (K, N, C, H, W)
        k, n, c, h, w = x.shape
        sub = x.reshape(k, n, self.s, c // self.s, h, w).transpose(1, 2).reshape(k * self.s, n, c // self.s, h, w)
        mixed = torch.einsum("ij,jnchw->inchw", self.alpha, sub)
        out = mixed.reshape(k, self.s, n, c // self.s, h, w).transpose(1, 2).reshape(k, n, c, h, w)
        return list(out.unbind(0))


class Sluice(ColumnNetwork):
    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: Sequence[int],
        subspaces: int = 2,
        alpha_mode: str = "balanced",
        ortho_weight: float = 0.01,
        **kw,
    ):
        if alpha_mode not in ALPHA_INITS:
            raise PolytaskError(f"sluice: alpha_init must be one of {ALPHA_INITS}, got {alpha_mode!r}")
        if ortho_weight < 0:
            raise PolytaskError(f"sluice: ortho_weight must be >= 0, got {ortho_weight}")
        super().__init__(tasks, input_shape, **kw)
        if len(set(self.widths)) != 1:
            raise PolytaskError(
                f"sluice: the layer-stitch mixes stage outputs, so all widths must be equal, got {self.widths}"
            )
        if subspaces < 1 or self.widths[0] % subspaces:
            raise PolytaskError(f"sluice: subspaces ({subspaces}) must divide the width {self.widths[0]}")
        self.subspaces, self.ortho_weight = subspaces, float(ortho_weight)
        self.fusions = nn.ModuleList(SubspaceStitch(len(tasks), subspaces, alpha_mode) for _ in self.widths)
        self.betas = nn.ParameterDict({t: nn.Parameter(beta_init(len(self.widths))) for t in self.tasks})
        self._ortho: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = [col.stem(x) for col in self.columns]
        per_stage: list[list[torch.Tensor]] = []
        ortho = x.new_zeros(())
        for j in range(len(self.widths)):
            feats = [col.stages[j](f) for col, f in zip(self.columns, feats)]
            if self.ortho_weight > 0 and self.subspaces > 1 and self.training:
                ortho = ortho + sum(orthogonality(f, self.subspaces) for f in feats)
            feats = self.fusions[j](feats)
            per_stage.append(feats)
        self._ortho = ortho
        size = per_stage[-1][0].shape[-2:]
        out = {}
        for k, t in enumerate(self.tasks):
            layers = [f[k] if f[k].shape[-2:] == size else F.adaptive_avg_pool2d(f[k], size) for f in per_stage]
            mixed = torch.einsum("l,lnchw->nchw", self.betas[t], torch.stack(layers))
            out[t] = self.heads[t](mixed)
        return out

    def regularization(self) -> torch.Tensor | None:
        """``ortho_weight`` x the orthogonality penalty of the last training forward pass."""
        if self.ortho_weight == 0 or self._ortho is None or not self._ortho.requires_grad:
            return None
        return self.ortho_weight * self._ortho

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        yield from super().task_parameters(task)
        yield self.betas[task]


@register(
    "sluice",
    "Sluice networks (Ruder 2019): one ResNet per task, subspace mixing α, layer-stitch β, orthogonality",
    inputs=("image",),
    dense=True,
    baseline="hps_resnet",
)
def sluice(
    tasks: Sequence[Task],
    input_shape: Sequence[int],
    subspaces: int = 2,
    alpha_init: str = "balanced",
    ortho_weight: float = 0.01,
    width: int = 32,
    strides: Sequence[int] = DEFAULT_STRIDES,
    blocks: int = 2,
    head_hidden: int = 32,
) -> Sluice:
    return Sluice(
        tasks,
        input_shape,
        subspaces,
        alpha_init,
        ortho_weight,
        widths=(width,) * len(strides),
        strides=strides,
        blocks=blocks,
        head_hidden=head_hidden,
    )
