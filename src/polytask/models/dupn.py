"""DUPN (Ni et al. 2018, "Perceive Your Users in Depth: Learning Universal User Representations from
Multiple E-commerce Tasks"): behaviour sequence -> item and property embeddings -> LSTM -> query-aware
attention -> one user representation shared by several task heads.

From the paper's abstract: an LSTM over the user's behaviour sequence, an attention over it, and the
representation shared end to end across tasks. **The following details come from secondary sources
only (see ../shared/refs/recsys.md §2e), not from the paper's text:**

- each behaviour is an item part (here: item id + category embeddings, summed) and a property part
  (here: behaviour type + time-gap bucket embeddings, summed);
- property-gated LSTM: the properties enter the input, forget and output gates, the item part is the
  cell input: [i, f, o] = σ(W [x_t, p_t, h_{t−1}]), g = tanh(U [x_t, h_{t−1}]);
- the attention query is the search query (here: the query category's embedding; no user profile):
  a_t = vᵀ tanh(W_h h_t + W_p p_t + W_q q), α = softmax(a), r = [Σ_t α_t h_t, q].

``representation`` is r; every shared parameter reaches the heads through it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from polytask.errors import PolytaskError, TaskMismatchError
from polytask.features import SequenceSpec
from polytask.models.base import MultiTaskModel, mlp
from polytask.models.inputs import oov_ids
from polytask.models.registry import register
from polytask.tasks import Task

FIELDS = ("item", "category", "behaviour", "gap", "query")


class PropertyGatedLSTM(nn.Module):
    """LSTM whose gates also read a per-step property vector p_t (the cell input does not)."""

    def __init__(self, item_dim: int, prop_dim: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Linear(item_dim + prop_dim + hidden, 3 * hidden)
        self.cell = nn.Linear(item_dim + hidden, hidden)

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        h = x.new_zeros(n, self.hidden)
        c = x.new_zeros(n, self.hidden)
        outputs = []
        for t in range(length):
            i, f, o = torch.sigmoid(self.gates(torch.cat([x[:, t], p[:, t], h], dim=1))).chunk(3, dim=1)
            g = torch.tanh(self.cell(torch.cat([x[:, t], h], dim=1)))
            c = f * c + i * g
            h = o * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class DUPN(MultiTaskModel):
    """Sequence encoder (shared) and one MLP head per task on the user representation."""

    has_representation = True

    def __init__(
        self,
        tasks: Sequence[Task],
        spec: SequenceSpec,
        embed_dim: int = 32,
        hidden: int = 64,
        attention: int = 32,
        head_hidden: int = 32,
    ):
        super().__init__()
        if not isinstance(spec, SequenceSpec):
            raise PolytaskError(f"dupn needs behaviour-sequence inputs (a SequenceSpec), got {type(spec).__name__}")
        self.tasks = [t.name for t in tasks]
        self.spec = spec
        self.item = nn.Embedding(spec.n_items, embed_dim, padding_idx=0)
        self.category = nn.Embedding(spec.n_categories, embed_dim, padding_idx=0)
        self.behaviour = nn.Embedding(spec.n_behaviours, embed_dim // 2, padding_idx=0)
        self.gap = nn.Embedding(spec.n_gaps, embed_dim // 2, padding_idx=0)
        self.lstm = PropertyGatedLSTM(embed_dim, embed_dim // 2, hidden)
        self.att_h = nn.Linear(hidden, attention)
        self.att_p = nn.Linear(embed_dim // 2, attention, bias=False)
        self.att_q = nn.Linear(embed_dim, attention, bias=False)
        self.att_v = nn.Linear(attention, 1, bias=False)
        self.out_features = hidden + embed_dim
        self.heads = nn.ModuleDict({t.name: mlp([self.out_features, head_hidden, t.out_features]) for t in tasks})
        self.attention_weights: torch.Tensor | None = None

    def encode(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The shared user representation r (N, hidden + embed_dim)."""
        missing = [f for f in FIELDS if f not in x]
        if missing:
            raise TaskMismatchError(f"dupn inputs lack field(s) {missing}; expected {list(FIELDS)}")
        sizes = {"item": self.spec.n_items, "behaviour": self.spec.n_behaviours, "gap": self.spec.n_gaps}
        ids = {f: oov_ids(x[f], sizes.get(f, self.spec.n_categories)) for f in FIELDS}  # unseen -> padding/OOV
        item = self.item(ids["item"]) + self.category(ids["category"])
        prop = self.behaviour(ids["behaviour"]) + self.gap(ids["gap"])
        h = self.lstm(item, prop)
        q = self.category(ids["query"])
        scores = self.att_v(torch.tanh(self.att_h(h) + self.att_p(prop) + self.att_q(q)[:, None, :]))[..., 0]
        alpha = torch.softmax(scores, dim=1)
        self.attention_weights = alpha
        return torch.cat([(alpha[..., None] * h).sum(dim=1), q], dim=1)

    def forward(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        r = self.encode(x)
        self.representation = r
        return {t: head(r) for t, head in self.heads.items()}

    def encoder_modules(self) -> list[nn.Module]:
        return [
            self.item,
            self.category,
            self.behaviour,
            self.gap,
            self.lstm,
            self.att_h,
            self.att_p,
            self.att_q,
            self.att_v,
        ]

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        for module in self.encoder_modules():
            yield from module.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        self._check_task(task)
        return self.heads[task].parameters()

    def shared_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights (everything but the heads), to reuse the representation for a new task."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("heads.")}

    def load_shared(self, state: Mapping[str, torch.Tensor], freeze: bool = True) -> None:
        """Load an encoder from :meth:`shared_state_dict`; ``freeze`` stops its training."""
        missing, unexpected = self.load_state_dict(dict(state), strict=False)
        bad = [k for k in missing if not k.startswith("heads.")] + list(unexpected)
        if bad:
            raise PolytaskError(f"dupn: encoder state does not fit this model: {bad[:5]}")
        if freeze:
            for p in self.shared_parameters():
                p.requires_grad_(False)


@register(
    "dupn",
    "DUPN (Ni et al. 2018): behaviour sequence -> property-gated LSTM -> query attention -> heads",
    inputs=("sequence",),
    dense=False,
)
def dupn(
    tasks: Sequence[Task],
    input_shape: SequenceSpec,
    embed_dim: int = 32,
    hidden: int = 64,
    attention: int = 32,
    head_hidden: int = 32,
) -> DUPN:
    return DUPN(tasks, input_shape, embed_dim, hidden, attention, head_hidden)
