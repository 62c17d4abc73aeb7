"""Meta Auxiliary Learning, MAXL (Liu, Davison & Johns, NeurIPS 2019).

A multi-task network f_θ has a primary head (C classes) and an auxiliary head (Σ_c ψ[c] classes); a
label-generation network g_φ proposes, for an input of primary class y, a distribution over the ψ[y]
auxiliary classes that belong to y (a softmax masked to those slots, computed as a masked log-softmax).
Both heads are trained with the reference's focal loss (γ = 2), −Σ_k t_k (1 − p_k)^γ log p_k, against
the one-hot primary label and the generated (soft) auxiliary label. Each epoch makes two passes over the
training set, as the reference does:

1. θ ← θ − lr ∇_θ (L_pri + L_aux), generated labels held fixed;
2. for each batch, one differentiable inner step θ⁺ = θ − α ∇_θ (L_pri + L_aux) (plain SGD, α = the
   network's learning rate, ``create_graph=True``: second order), then φ descends
   L_pri(f_{θ⁺}) + w_H Σ_k p̄_k log p̄_k, where p̄ is the batch mean of the generated distributions; the
   entropy term (w_H = 0.2) keeps the generator from collapsing onto few auxiliary classes.

``order=1`` replaces the second-order gradient by the reference's first-order (DARTS) finite difference,
−α [∇_φ L_train(θ + ε d) − ∇_φ L_train(θ − ε d)] / (2ε), d = ∇_{θ⁺} L_pri, ε = 0.01/‖d‖; as in the
reference this drops the entropy term's gradient (it does not depend on θ⁺).

The generator's optimiser is the reference's (``model_vgg_maxl.py``): SGD with weight decay 5e-4 and a
learning rate a tenth of the network's (1e-3 against 1e-2); ``generator_lr=None`` keeps that ratio for
any network learning rate, and ``generator_lr=0`` freezes the generator at its initialisation (the
control that tells whether learning the labels matters). :meth:`MAXL.generator_report` says how far the
generator moved against what its weight decay alone would have done, and how confident its labels are.

``aux="human"`` trains the same network with the true fine labels as auxiliary targets and
``aux="none"`` with the primary head alone: the two baselines of the paper.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from polytask.data.base import BatchLoader, MultiTaskData
from polytask.errors import PolytaskError
from polytask.models.base import mlp

AUX_MODES = ("maxl", "human", "none")
GENERATOR_LR_RATIO = 0.1  # reference: generator SGD lr 1e-3 against the network's 1e-2


def slot_mask(psi: Sequence[int]) -> torch.Tensor:
    """(C, Σψ) bool: row c is True on the auxiliary slots of primary class c."""
    starts = [sum(psi[:c]) for c in range(len(psi))]
    mask = torch.zeros(len(psi), sum(psi), dtype=torch.bool)
    for c, (s, n) in enumerate(zip(starts, psi)):
        mask[c, s : s + n] = True
    return mask


def masked_log_softmax(logits: torch.Tensor, primary: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log-softmax over the ψ[y] slots of each row's primary class y (−inf elsewhere: zero mass)."""
    allowed = mask.to(logits.device)[primary]
    return torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)


def focal_loss(log_probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean over rows of −Σ_k t_k (1 − p_k)^γ log p_k (``target``: probabilities, one-hot or soft)."""
    p = log_probs.exp()
    terms = target * (1 - p).pow(gamma) * log_probs.clamp_min(-1e4)
    return -terms.sum(-1).mean()


def entropy_regulariser(probs: torch.Tensor) -> torch.Tensor:
    """Σ_k p̄_k log p̄_k of the batch-mean distribution (minimising it spreads the generated labels)."""
    mean = probs.mean(0)
    return (mean * torch.log(mean.clamp_min(1e-12))).sum()


class MAXLNet(nn.Module):
    """An MLP trunk with a primary head (C) and an auxiliary head (Σψ), both log-softmax."""

    def __init__(self, in_features: int, hidden: Sequence[int], n_primary: int, n_aux: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Flatten(), mlp([in_features, *hidden], final_activation=True))
        self.primary = nn.Linear(hidden[-1], n_primary)
        self.aux = nn.Linear(hidden[-1], n_aux)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.trunk(x)
        return torch.log_softmax(self.primary(z), -1), torch.log_softmax(self.aux(z), -1)


class LabelGenerator(nn.Module):
    """g_φ: an MLP of the same size ending in Σψ logits, masked to the input's primary class."""

    def __init__(self, in_features: int, hidden: Sequence[int], psi: Sequence[int]):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), mlp([in_features, *hidden, sum(psi)]))
        self.register_buffer("mask", slot_mask(psi))

    def forward(self, x: torch.Tensor, primary: torch.Tensor) -> torch.Tensor:
        """Generated auxiliary distributions (rows sum to 1 over the ψ[y] slots)."""
        return masked_log_softmax(self.net(x), primary, self.mask).exp()


@dataclass
class MAXLResult:
    test_accuracy: float
    val_accuracy: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)


class MAXL:
    """Train MAXL (or a baseline) on a dataset with tasks ``primary`` and ``digit``-style fine labels
    (``data.info["psi"]``); see the module docstring."""

    def __init__(
        self,
        data: MultiTaskData,
        aux: str = "maxl",
        hidden: Sequence[int] = (128, 128),
        lr: float = 0.01,
        generator_lr: float | None = None,
        generator_weight_decay: float = 5e-4,
        entropy_weight: float = 0.2,
        gamma: float = 2.0,
        order: int = 2,
        primary: str = "primary",
        auxiliary: str = "digit",
    ):
        if aux not in AUX_MODES:
            raise PolytaskError(f"MAXL: aux must be one of {AUX_MODES}, got {aux!r}")
        if order not in (1, 2):
            raise PolytaskError(f"MAXL: order must be 1 (finite difference) or 2 (second order), got {order}")
        generator_lr = GENERATOR_LR_RATIO * lr if generator_lr is None else generator_lr
        if lr <= 0 or generator_lr < 0 or generator_weight_decay < 0:
            raise PolytaskError(
                f"MAXL: needs lr > 0, generator_lr >= 0 and generator_weight_decay >= 0; got {lr}, {generator_lr}, "
                f"{generator_weight_decay}"
            )
        if "psi" not in data.info:
            raise PolytaskError(f"MAXL: dataset {data.name!r} has no hierarchy info['psi'] (e.g. use digits_aux)")
        self.data, self.aux, self.order = data, aux, order
        self.psi = list(data.info["psi"])
        self.primary, self.auxiliary = primary, auxiliary
        in_features = int(torch.tensor(data.input_shape).prod())
        self.net = MAXLNet(in_features, hidden, len(self.psi), sum(self.psi))
        self.generator = LabelGenerator(in_features, hidden, self.psi)
        self.lr, self.entropy_weight, self.gamma = lr, entropy_weight, gamma
        self.net_opt = torch.optim.SGD(self.net.parameters(), lr=lr)
        self.generator_lr, self.generator_weight_decay = generator_lr, generator_weight_decay
        self.gen_opt = torch.optim.SGD(
            self.generator.parameters(), lr=generator_lr, weight_decay=generator_weight_decay
        )
        self._generator_init = [p.detach().clone() for p in self.generator.parameters()]
        self.generator_steps = 0

    # ------------------------------------------------------------------ losses
    def _targets(self, x: torch.Tensor, y: torch.Tensor, fine: torch.Tensor) -> torch.Tensor | None:
        if self.aux == "maxl":
            return self.generator(x, y)
        if self.aux == "human":
            return F.one_hot(fine, sum(self.psi)).float()
        return None

    def training_loss(self, outputs, y: torch.Tensor, aux_target: torch.Tensor | None) -> torch.Tensor:
        log_pri, log_aux = outputs
        loss = focal_loss(log_pri, F.one_hot(y, len(self.psi)).float(), self.gamma)
        if aux_target is not None:
            loss = loss + focal_loss(log_aux, aux_target, self.gamma)
        return loss

    # ------------------------------------------------------------------ the two passes
    def network_pass(self, batches) -> float:
        total = 0.0
        for x, t in batches:
            y, fine = t[self.primary], t[self.auxiliary]
            with torch.no_grad():
                target = self._targets(x, y, fine)
            loss = self.training_loss(self.net(x), y, target)
            self.net_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.net_opt.step()
            total += float(loss.detach())
        return total

    def generator_pass(self, batches) -> None:
        names = [n for n, _ in self.net.named_parameters()]
        for x, t in batches:
            y = t[self.primary]
            params = [p for _, p in self.net.named_parameters()]
            target = self.generator(x, y)
            inner = self.training_loss(self.net(x), y, target)
            if self.order == 2:
                grads = torch.autograd.grad(inner, params, create_graph=True)
                fast = {n: p - self.lr * g for n, p, g in zip(names, params, grads)}
                log_pri, _ = functional_call(self.net, fast, (x,))
                meta = focal_loss(log_pri, F.one_hot(y, len(self.psi)).float(), self.gamma)
                loss = meta + self.entropy_weight * entropy_regulariser(target)
                self.gen_opt.zero_grad(set_to_none=True)
                self.net.zero_grad(set_to_none=True)
                loss.backward()
            else:
                self._first_order_step(x, y, names, params, inner)
            self.gen_opt.step()
            self.generator_steps += 1
            self.net.zero_grad(set_to_none=True)

    def _first_order_step(self, x, y, names, params, inner) -> None:
        grads = torch.autograd.grad(inner, params)
        fast = {n: (p - self.lr * g).detach().requires_grad_(True) for n, p, g in zip(names, params, grads)}
        log_pri, _ = functional_call(self.net, fast, (x,))
        meta = focal_loss(log_pri, F.one_hot(y, len(self.psi)).float(), self.gamma)
        d = torch.autograd.grad(meta, list(fast.values()), allow_unused=True)
        d = [torch.zeros_like(p) if g is None else g for p, g in zip(params, d)]  # the auxiliary head: unused
        eps = 0.01 / torch.sqrt(sum(g.pow(2).sum() for g in d)).clamp_min(1e-12)
        hessian_terms = []
        for sign in (1.0, -1.0):
            moved = {n: (p + sign * eps * g).detach() for (n, p), g in zip(zip(names, params), d)}
            loss = self.training_loss(functional_call(self.net, moved, (x,)), y, self.generator(x, y))
            hessian_terms.append(torch.autograd.grad(loss, list(self.generator.parameters())))
        self.gen_opt.zero_grad(set_to_none=True)
        for p, gp, gm in zip(self.generator.parameters(), *hessian_terms):
            p.grad = -self.lr * (gp - gm) / (2 * eps)

    # ------------------------------------------------------------------ fit
    @torch.no_grad()
    def accuracy(self, split) -> float:
        self.net.eval()
        log_pri, _ = self.net(split.inputs)
        self.net.train()
        return float((log_pri.argmax(-1) == split.targets[self.primary]).float().mean())

    def fit(self, epochs: int = 60, batch_size: int = 100, seed: int = 0, progress: bool = False) -> MAXLResult:
        """Train; the primary task's validation accuracy selects the epoch whose test accuracy is reported."""
        best = (-1.0, 0, None)
        history = []
        for epoch in tqdm(range(epochs), desc=f"MAXL ({self.aux})", disable=not progress):
            loss = self.network_pass(BatchLoader(self.data.train, batch_size, shuffle=True, seed=seed + epoch))
            if self.aux == "maxl" and self.generator_lr > 0:
                self.generator_pass(BatchLoader(self.data.train, batch_size, shuffle=True, seed=seed + 10_000 + epoch))
            val = self.accuracy(self.data.val)
            history.append({"epoch": epoch + 1, "train_loss": loss, "val_accuracy": val})
            if val > best[0]:
                best = (val, epoch + 1, copy.deepcopy(self.net.state_dict()))
        self.net.load_state_dict(best[2])
        return MAXLResult(self.accuracy(self.data.test), best[0], best[1], history)

    @torch.no_grad()
    def generator_report(self) -> dict[str, float]:
        """How much the generator learnt: ``drift`` ‖φ − φ_0‖/‖φ_0‖; ``weight_decay_drift`` the drift that
        weight decay alone gives over the same steps, 1 − (1 − lr·wd)^steps (meta-gradients that cancel
        out leave drift ≈ weight_decay_drift); ``top_prob`` the mean largest generated probability on the
        training images against ``uniform_top_prob``, the mean 1/ψ[y] of labels spread evenly."""
        params = list(self.generator.parameters())
        moved = torch.sqrt(sum(((p - q) ** 2).sum() for p, q in zip(params, self._generator_init)))
        size = torch.sqrt(sum((q**2).sum() for q in self._generator_init))
        decay = 1 - (1 - self.generator_lr * self.generator_weight_decay) ** self.generator_steps
        primary = self.data.train.targets[self.primary]
        psi = torch.tensor(self.psi, dtype=torch.float32)
        return {
            "drift": float(moved / size),
            "weight_decay_drift": float(decay),
            "top_prob": float(self.generated_labels().max(-1).values.mean()),
            "uniform_top_prob": float((1 / psi[primary]).mean()),
            "steps": self.generator_steps,
        }

    @torch.no_grad()
    def generated_labels(self, split=None) -> torch.Tensor:
        """(N, Σψ) generated auxiliary distributions of ``split`` (default: training) inputs."""
        split = split or self.data.train
        return self.generator(split.inputs, split.targets[self.primary])


def save_label_grid(maxl: MAXL, path, per_class: int = 8) -> None:
    """A PNG grid: one row per auxiliary class (slot), the training images the generator assigns to it
    most confidently (the inspection the paper shows for its generated labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = maxl.generated_labels()
    images = maxl.data.train.inputs
    n_slots = probs.shape[1]
    fig, axes = plt.subplots(n_slots, per_class, figsize=(0.9 * per_class, 0.9 * n_slots), squeeze=False)
    for slot in range(n_slots):
        top = probs[:, slot].argsort(descending=True)[:per_class]
        for k, ax in enumerate(axes[slot]):
            ax.imshow(images[top[k]].reshape(images.shape[-2:]).numpy(), cmap="gray_r")
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                ax.set_ylabel(f"{slot}\n{float(probs[top[0], slot]):.2f}", fontsize=7)
    fig.suptitle("generated auxiliary classes: most confident training images per class", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
