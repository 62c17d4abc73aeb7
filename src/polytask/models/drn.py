"""Deep Relationship Networks (Long, Cao, Wang & Yu, NIPS 2017; "Multilinear Relationship Networks").

A shared trunk; task-specific top layers (a conv3x3-BN-ReLU block and the head's hidden layer per task).
For each task-specific layer the K tasks' weights, flattened to D1 (fan-in) x D2 (fan-out), are stacked
into W ∈ R^{D1 x D2 x K} with a tensor-normal prior; its negative log-likelihood adds

    λ vec(W)ᵀ (Σ_1 ⊗ Σ_2 ⊗ Σ_3)^{-1} vec(W)          (Σ_3 = Σ_task, K x K)

to the loss. The covariances are re-estimated in closed form every ``update_every`` training steps
(flip-flop, the paper's Eq. 9): Σ_m = W_(m) (⊗_{n≠m} Σ_n)^{-1} W_(m)ᵀ / Π_{n≠m} D_n + ε I, each scaled to
trace D_m (the scale is not identifiable). The reference code updates only Σ_task and keeps the feature
covariances at the identity; ``feature_covariances=True`` updates all three. ``task_covariances()``
returns the learned Σ_task per layer: the task relationships.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from polytask.errors import PolytaskError
from polytask.models.base import MultiTaskModel
from polytask.models.conv import DEFAULT_STRIDES, DEFAULT_WIDTHS, ResTrunk, check_image_shape, conv_bn_relu, task_head
from polytask.models.registry import register
from polytask.tasks import Task


def tensor_normal_penalty(w: torch.Tensor, inverses: Sequence[torch.Tensor]) -> torch.Tensor:
    """vec(W)ᵀ (Σ_1 ⊗ Σ_2 ⊗ Σ_3)^{-1} vec(W) for W (D1, D2, K), given the three inverse covariances."""
    a, b, c = inverses
    return torch.einsum("ijk,il,jm,kn,lmn->", w, a, b, c, w)


def update_covariance(w: torch.Tensor, inverses: Sequence[torch.Tensor], mode: int, eps: float) -> torch.Tensor:
    """Closed-form flip-flop estimate of Σ_mode from W and the other modes' inverse covariances, plus
    ε I, scaled to trace D_mode."""
    others = [m for m in range(3) if m != mode]
    moved = w.permute(mode, *others)  # (D_mode, D_p, D_q)
    p, q = (inverses[m] for m in others)
    sigma = torch.einsum("ijk,jl,km,nlm->in", moved, p, q, moved) / (moved.shape[1] * moved.shape[2])
    sigma = sigma + eps * torch.eye(sigma.shape[0], dtype=sigma.dtype, device=sigma.device)
    return sigma * (sigma.shape[0] / torch.trace(sigma))


class TensorNormalPrior(nn.Module):
    """The prior of one stacked layer: three covariances (buffers, identity at start)."""

    def __init__(self, d1: int, d2: int, k: int):
        super().__init__()
        for i, d in enumerate((d1, d2, k)):
            self.register_buffer(f"sigma{i}", torch.eye(d))
            self.register_buffer(f"inverse{i}", torch.eye(d))  # kept in step with sigma{i}

    @property
    def inverses(self) -> list[torch.Tensor]:
        return [self.inverse0, self.inverse1, self.inverse2]

    def penalty(self, w: torch.Tensor) -> torch.Tensor:
        return tensor_normal_penalty(w, self.inverses)

    @torch.no_grad()
    def update(self, w: torch.Tensor, modes: Sequence[int], eps: float) -> None:
        for mode in modes:
            sigma = update_covariance(w.detach(), self.inverses, mode, eps)
            getattr(self, f"sigma{mode}").copy_(sigma)
            getattr(self, f"inverse{mode}").copy_(torch.linalg.inv(sigma))


@register(
    "drn",
    "Deep Relationship Networks (Long 2017): shared ResNet, task layers under a tensor-normal prior",
    inputs=("image",),
    dense=True,
    baseline="hps_resnet",
)
class DRN(MultiTaskModel):
    """A shared residual trunk (its output z is the representation), then per task a residual block and a
    head; the task blocks' and heads' weights are under the tensor-normal prior."""

    has_representation = True

    def __init__(
        self,
        tasks: Sequence[Task],
        input_shape: Sequence[int],
        weight: float = 1e-3,
        update_every: int = 100,
        feature_covariances: bool = False,
        eps: float = 1e-3,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        strides: Sequence[int] = DEFAULT_STRIDES,
        blocks: int = 2,
        head_hidden: int = 32,
    ):
        super().__init__()
        c, h, w = check_image_shape(input_shape, "drn")
        if weight < 0 or update_every < 1 or eps <= 0:
            raise PolytaskError("drn: weight >= 0, update_every >= 1 and eps > 0 are required")
        if head_hidden < 1:
            raise PolytaskError("drn: the prior covers the heads' hidden layer, so head_hidden must be >= 1")
        self.tasks = [t.name for t in tasks]
        self.weight, self.update_every, self.eps = float(weight), int(update_every), float(eps)
        self.modes = (0, 1, 2) if feature_covariances else (2,)
        self.trunk = ResTrunk(c, widths, strides, blocks)
        cin = self.trunk.out_channels
        self.task_layers = nn.ModuleDict({t: conv_bn_relu(cin, cin) for t in self.tasks})
        self.heads = nn.ModuleDict({t.name: task_head(t, cin, (h, w), head_hidden) for t in tasks})
        shapes = [tuple(w.shape) for w in self._layer_weights(self.tasks[0])]
        self.priors = nn.ModuleList(
            TensorNormalPrior(s[1] * (s[2] * s[3] if len(s) == 4 else 1), s[0], len(self.tasks)) for s in shapes
        )
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def _layer_weights(self, task: str) -> list[torch.Tensor]:
        """The task-specific weights under the prior: the task block's conv and the head's hidden layer."""
        head_hidden = next(m for m in self.heads[task].modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        return [self.task_layers[task][0].weight, head_hidden.weight]

    def stacked_weights(self) -> list[torch.Tensor]:
        """Per prior layer, W (D1 = fan-in, D2 = fan-out, K)."""
        per_task = [self._layer_weights(t) for t in self.tasks]
        return [torch.stack([w.reshape(w.shape[0], -1).T for w in layer], dim=-1) for layer in zip(*per_task)]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.trunk(x)
        self.representation = z
        return {t: self.heads[t](self.task_layers[t](z)) for t in self.tasks}

    def regularization(self) -> torch.Tensor | None:
        """λ Σ_layers of the tensor-normal penalty; every ``update_every`` calls in training the
        covariances are re-estimated first."""
        if self.weight == 0 or len(self.tasks) < 2:
            return None
        stacked = self.stacked_weights()
        if self.training:
            if int(self.steps) % self.update_every == 0 and int(self.steps) > 0:
                for prior, w in zip(self.priors, stacked):
                    prior.update(w, self.modes, self.eps)
            self.steps += 1
        return self.weight * sum(prior.penalty(w) for prior, w in zip(self.priors, stacked))

    def task_covariances(self) -> list[torch.Tensor]:
        """The current Σ_task (K x K) of each prior layer."""
        return [prior.sigma2.clone() for prior in self.priors]

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.trunk.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        self._check_task(task)
        yield from self.task_layers[task].parameters()
        yield from self.heads[task].parameters()
