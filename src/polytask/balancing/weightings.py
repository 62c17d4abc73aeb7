"""Loss weightings (one backward each), as SPEC.md section 3 defines them.

Each method is a pure function (losses or statistics -> weights), tested by hand, plus a thin stateful
:class:`~polytask.balancing.base.LossWeighting` that keeps its history and registers it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from polytask.balancing.base import LossWeighting, global_losses
from polytask.balancing.registry import register
from polytask.errors import PolytaskError

_EPS = 1e-12


# =================================================================== pure weighting functions
def dwa_weights(prev: torch.Tensor, prev2: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """DWA (Liu et al. 2019): w_k = K exp(r_k/T) / Σ_i exp(r_i/T), r_k = L_k(t−1) / L_k(t−2)."""
    r = prev / prev2.clamp_min(_EPS)
    return len(r) * torch.softmax(r / temperature, dim=0)


def _last_two(history: list[list[float]]) -> tuple[list[float], list[float]]:
    """Per task, its last two finite epoch losses L(t−1), L(t−2) (NaN: an epoch without a labelled sample
    of that task); a task with fewer than two gets r = 1 (1, 1), as every task does in the first epochs."""
    prev, prev2 = [], []
    for k in range(len(history[0])):
        seen = [h[k] for h in history if h[k] == h[k]][-2:]
        a, b = (seen[1], seen[0]) if len(seen) == 2 else (1.0, 1.0)
        prev.append(a)
        prev2.append(b)
    return prev, prev2


def _same_tasks(present: torch.Tensor | None, other: torch.Tensor | None) -> bool:
    if present is None or other is None:
        return present is None and other is None
    return bool((present == other).all())


def dtp_weights(kpi_ema: torch.Tensor, gamma: torch.Tensor | float = 1.0) -> torch.Tensor:
    """DTP (Guo et al. 2018): w_k = −(1 − κ̄_k)^{γ_k} log κ̄_k, κ̄_k in (0, 1]; low KPI -> large weight."""
    k = kpi_ema.clamp(_EPS, 1.0)
    return -((1.0 - k) ** gamma) * torch.log(k)


def lbtw_weights(losses: torch.Tensor, initial: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """LBTW (Liu et al. 2019): w_k = (L_k(t) / L_k(0))^α."""
    return (losses / initial.clamp_min(_EPS)) ** alpha


def initial_losses(initial: list[float | None] | None, losses: list[float]) -> tuple[list[float | None], list[float]]:
    """L_k(0) of the methods that divide by the initial loss (LBTW, GradNorm): per task, the first
    positive loss seen so far (None while every loss seen was 0). Returns that state and the divisors
    for this step (a task still without L_k(0) divides by its current loss: ratio 1, or 0 at 0)."""
    state = [v if i is None and v > 0 else i for i, v in zip(initial or [None] * len(losses), losses)]
    return state, [v if i is None else i for i, v in zip(state, losses)]


def gls_weights(losses: torch.Tensor) -> torch.Tensor:
    """GLS (Chennupati et al. 2019): ∂/∂L_k (Π_i L_i)^{1/K} = (Π_i L_i)^{1/K} / (K L_k)."""
    logl = torch.log(losses.clamp_min(_EPS))
    return torch.exp(logl.mean()) / (len(losses) * losses.clamp_min(_EPS))


def rlw_weights(eps: torch.Tensor) -> torch.Tensor:
    """RLW (Lin et al. 2022): w = softmax(ε), ε ~ N(0, I) drawn every step."""
    return torch.softmax(eps, dim=0)


def famo_weights(losses: torch.Tensor, logits: torch.Tensor, min_losses: torch.Tensor | float = 0.0) -> torch.Tensor:
    """FAMO (Liu et al. 2023): gradient weights of Σ_k c z_k log(L_k − b_k), z = softmax(ξ),
    c = (Σ_k z_k / (L_k − b_k))^{−1}:  w_k = c z_k / (L_k − b_k)."""
    z = torch.softmax(logits, dim=0)
    gap = (losses - min_losses).clamp_min(_EPS)
    c = 1.0 / (z / gap).sum()
    return c * z / gap


def famo_logit_step(logits: torch.Tensor, delta: torch.Tensor, lr: float = 0.025, gamma: float = 0.001) -> torch.Tensor:
    """FAMO's update ξ ← ξ − β(∇_ξ zᵀδ + γξ), with ∇_ξ zᵀδ = z ⊙ (δ − zᵀδ) (softmax Jacobian)."""
    z = torch.softmax(logits, dim=0)
    grad = z * (delta - (z * delta).sum())
    return logits - lr * (grad + gamma * logits)


# =================================================================== methods
@register("ew")
class EqualWeighting(LossWeighting):
    """Equal weighting: w_k = 1, the usual baseline."""

    name = "ew"

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(losses)


@register("uw")
class UncertaintyWeighting(LossWeighting):
    """Uncertainty weighting (Kendall, Gal, Cipolla 2018).

    Learnable s_k = log σ_k²; objective Σ_k c_k e^{−s_k} L_k + ½ s_k with c_k = ½ (regression form,
    optimum σ_k² = L_k) or c_k = 1 (classification form, optimum σ_k² = 2 L_k). The effective weight on
    L_k is c_k e^{−s_k}. Add ``balancer.parameters()`` to the optimizer (the paper used Adam; with SGD it
    rarely converges). ``init`` is the initial s (0; MTAN's reference code uses −0.5).
    """

    name = "uw"
    loss_use = "minimises e^{-s} L + s/2 over s, which has no minimum when L < 0 (the weight e^{-s} diverges)"

    def __init__(self, tasks: Sequence[str] | int, form: str | Sequence[str] = "regression", init: float = 0.0):
        super().__init__(tasks)
        forms = [form] * self.num_tasks if isinstance(form, str) else list(form)
        if len(forms) != self.num_tasks or any(f not in ("regression", "classification") for f in forms):
            raise PolytaskError(
                f"uw: form must be 'regression'/'classification' or one per task ({self.num_tasks}), got {form!r}"
            )
        self.forms = forms
        self.register_buffer("scale", torch.tensor([0.5 if f == "regression" else 1.0 for f in forms]))
        self.log_vars = nn.Parameter(torch.full((self.num_tasks,), float(init)))

    def objective(self, losses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.log_vars.to(losses.dtype)
        w = self.scale.to(losses.dtype) * torch.exp(-s) * self.present_mask(losses)
        return (w * losses + 0.5 * s * self.present_mask(losses)).sum(), w


@register("imtl_l")
class IMTLL(LossWeighting):
    """IMTL-L (Liu et al. 2021): learnable scales s_k, objective Σ_k e^{s_k} L_k − s_k (its optimum makes
    every scaled loss e^{s_k} L_k equal to 1); effective weight e^{s_k}. Add ``balancer.parameters()`` to
    the optimizer."""

    name = "imtl_l"
    loss_use = "minimises e^{s} L - s over s, which has no minimum when L < 0 (the scale e^{s} diverges)"

    def __init__(self, tasks: Sequence[str] | int):
        super().__init__(tasks)
        self.log_scales = nn.Parameter(torch.zeros(self.num_tasks))

    def objective(self, losses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.log_scales.to(losses.dtype)
        present = self.present_mask(losses)
        w = torch.exp(s) * present
        return (w * losses - s * present).sum(), w


@register("gls")
class GeometricLossStrategy(LossWeighting):
    """Geometric loss strategy (Chennupati et al. 2019): minimise (Π_k L_k)^{1/K}; weights ∂GLS/∂L_k."""

    name = "gls"
    loss_use = "takes the geometric mean of the losses (the log of each)"

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        return self.on_present(gls_weights, losses)


@register("dwa")
class DynamicWeightAverage(LossWeighting):
    """Dynamic weight average (Liu, Johns, Davison 2019), T = 2; w = 1 for the first two epochs.

    Feed epoch-average training losses through ``epoch_end(losses=...)`` after every epoch.
    """

    name = "dwa"
    loss_use = "divides each task's epoch-average loss by the one of the epoch before"

    def __init__(self, tasks: Sequence[str] | int, temperature: float = 2.0):
        super().__init__(tasks)
        if temperature <= 0:
            raise PolytaskError(f"dwa: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.history: list[list[float]] = []

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        if len(self.history) < 2:
            return torch.ones_like(losses)
        prev, prev2 = (torch.tensor(h, dtype=losses.dtype, device=losses.device) for h in _last_two(self.history))
        return self.on_present(lambda a, b: dwa_weights(a, b, self.temperature), prev, prev2)

    def epoch_end(self, losses: Mapping[str, float] | None = None, kpis: Mapping[str, float] | None = None) -> None:
        if losses is None:
            raise PolytaskError("dwa: epoch_end needs the epoch-average training losses (losses={task: value})")
        self.history.append([float(losses[t]) for t in self.tasks])  # NaN: no labelled sample that epoch

    def get_extra_state(self) -> Any:
        return {"history": self.history}

    def set_extra_state(self, state: Any) -> None:
        self.history = [list(h) for h in state["history"]]


@register("dtp")
class DynamicTaskPrioritization(LossWeighting):
    """Dynamic task prioritization (Guo et al. 2018): w_k = −(1 − κ̄_k)^{γ_k} log κ̄_k.

    κ̄_k ← α κ_k + (1 − α) κ̄_k is an EMA of task k's KPI (a metric in [0, 1], e.g. accuracy), fed
    through ``epoch_end(kpis=...)`` (the Trainer passes the epoch's mean training-batch KPI; the paper
    updates per iteration, which ``epoch_end`` also allows). w = 1 until the first KPI arrives.
    ``gamma``: focusing parameter, a float or one per task. Defaults α = 0.9, γ = 1 are ours (the paper
    tunes them per task).
    """

    name = "dtp"
    needs_kpis = True

    def __init__(self, tasks: Sequence[str] | int, gamma: float | Sequence[float] = 1.0, alpha: float = 0.9):
        super().__init__(tasks)
        if not 0.0 < alpha <= 1.0:
            raise PolytaskError(f"dtp: alpha must be in (0, 1], got {alpha}")
        g = [float(gamma)] * self.num_tasks if isinstance(gamma, (int, float)) else [float(x) for x in gamma]
        if len(g) != self.num_tasks:
            raise PolytaskError(f"dtp: gamma needs one value per task ({self.num_tasks}), got {gamma!r}")
        self.alpha = float(alpha)
        self.register_buffer("gamma", torch.tensor(g))
        self.kpi_ema: list[float | None] = [None] * self.num_tasks

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        if any(k is None for k in self.kpi_ema):
            return torch.ones_like(losses)
        kpi = torch.tensor(self.kpi_ema, dtype=losses.dtype, device=losses.device)
        return dtp_weights(kpi, self.gamma.to(losses))

    def epoch_end(self, losses: Mapping[str, float] | None = None, kpis: Mapping[str, float] | None = None) -> None:
        if kpis is None:
            raise PolytaskError("dtp: epoch_end needs the tasks' KPIs (kpis={task: value in [0, 1]})")
        for k, task in enumerate(self.tasks):
            value = float(kpis[task])
            if not 0.0 <= value <= 1.0:
                if value != value:  # NaN: no labelled sample this epoch; keep the average
                    continue
                raise PolytaskError(f"dtp: KPI of task {task!r} must be in [0, 1], got {value}")
            prev = self.kpi_ema[k]
            self.kpi_ema[k] = value if prev is None else self.alpha * value + (1 - self.alpha) * prev

    def get_extra_state(self) -> Any:
        return {"kpi_ema": self.kpi_ema}

    def set_extra_state(self, state: Any) -> None:
        self.kpi_ema = list(state["kpi_ema"])


@register("lbtw")
class LossBalancedTaskWeighting(LossWeighting):
    """Loss-balanced task weighting (Liu et al. 2019): w_k = (L_k(t) / L_k(0))^α, α = 0.5, L_k(0) from
    the first batch seen with a positive loss of task k (a task without a labelled sample in the first
    batch has loss 0, which is no initial loss to divide by); weights are constants in the backward."""

    name = "lbtw"
    loss_use = "raises the ratio L_k(t) / L_k(0) to the power alpha"

    def __init__(self, tasks: Sequence[str] | int, alpha: float = 0.5):
        super().__init__(tasks)
        self.alpha = float(alpha)
        self.initial: list[float] | None = None

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        self.initial, initial = initial_losses(self.initial, losses.tolist())
        return lbtw_weights(losses, torch.tensor(initial, dtype=losses.dtype, device=losses.device), self.alpha)

    def get_extra_state(self) -> Any:
        return {"initial": self.initial}

    def set_extra_state(self, state: Any) -> None:
        self.initial = state["initial"]


@register("rlw")
class RandomLossWeighting(LossWeighting):
    """Random loss weighting (Lin et al. 2022): w = softmax(ε), ε ~ N(0, I) drawn every step from
    torch's global generator (seeded and checkpointed by the Trainer)."""

    name = "rlw"

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        eps = torch.randn(self.num_tasks).to(device=losses.device, dtype=losses.dtype)
        return self.on_present(rlw_weights, eps)


@register("famo")
class FAMO(LossWeighting):
    """Fast adaptive multitask optimisation (Liu, Liu, Jin, Stone, Liu 2023).

    Step on Σ_k c z_k log(L_k − b_k) with z = softmax(ξ), c = (Σ_k z_k/(L_k − b_k))^{−1} (one backward);
    after the optimizer step, ``post_step(new_losses)`` on the same batch sets
    δ_k = log(L_k(θ_t) − b_k) − log(L_k(θ_{t+1}) − b_k) and ξ ← ξ − β(∇_ξ zᵀδ + γξ), β = 0.025,
    γ = 0.001, as in the paper's Algorithm 1 (the reference code applies the same gradient through Adam
    with weight decay γ; not offered here). ``min_losses`` b_k default 0.
    """

    name = "famo"
    needs_post_step_losses = True
    loss_use = "takes log(L_k - min_losses_k)"
    loss_floor_hint = "pass min_losses= a lower bound of each task's loss (default 0)"

    def __init__(
        self,
        tasks: Sequence[str] | int,
        lr: float = 0.025,
        gamma: float = 0.001,
        min_losses: float | Sequence[float] = 0.0,
    ):
        super().__init__(tasks)
        self.lr, self.gamma = float(lr), float(gamma)
        b = [float(min_losses)] * self.num_tasks if isinstance(min_losses, (int, float)) else list(min_losses)
        if len(b) != self.num_tasks:
            raise PolytaskError(f"famo: min_losses needs one value per task ({self.num_tasks})")
        self.register_buffer("min_losses", torch.tensor(b))
        self.register_buffer("logits", torch.zeros(self.num_tasks))
        self._prev_losses: torch.Tensor | None = None
        self._prev_present: torch.Tensor | None = None

    def loss_floor(self) -> torch.Tensor:
        return self.min_losses

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        self._prev_losses = losses.detach().clone()
        self._prev_present = self.present
        return self.on_present(famo_weights, losses, self.logits.to(losses), self.min_losses.to(losses))

    def post_step(self, losses) -> None:
        if self._prev_losses is None:
            raise PolytaskError("famo: post_step() called before backward()")
        new = global_losses(self.stack_losses(losses, need_grad=False)).to(self._prev_losses)
        if not _same_tasks(self.present, self._prev_present):
            raise PolytaskError(
                "famo: post_step() got losses for other tasks than backward() (give the same tasks None)"
            )
        b = self.min_losses.to(new)
        delta = torch.log((self._prev_losses - b).clamp_min(_EPS)) - torch.log((new - b).clamp_min(_EPS))
        step = self.on_present(
            lambda x, d: famo_logit_step(x, d, self.lr, self.gamma), self.logits, delta.to(self.logits)
        )  # an absent task's logit stays: on_present left it 0 in ``step``
        self.logits.copy_(torch.where(self.present_mask(self.logits).bool(), step, self.logits))
        self._prev_losses = self._prev_present = None
