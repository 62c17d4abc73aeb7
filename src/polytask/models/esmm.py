"""ESMM (Ma et al. 2018, "Entire Space Multi-Task Model: An Effective Approach for Estimating Post-Click
Conversion Rate").

Shared embeddings feed a CTR tower and a CVR tower; pCTCVR = pCTR · pCVR. The two trained tasks are CTR
(label: click) and CTCVR (label: click and conversion), both over *all* impressions; there is no CVR loss,
so pCVR is learned over the entire space. pCVR of the last forward is kept in ``model.pcvr`` (and
:meth:`ESMM.predict_cvr` computes it) for evaluation on clicked impressions, as the paper scores it.

The CTCVR output is returned as a logit, logit(pCTR · pCVR) (:func:`product_logit`, computed in log
space), so the binary task's loss (BCE with logits) and metrics apply unchanged.
Defaults: towers (200, 80) after the paper's 360-200-80-2 MLP (the 360 is the embedding concatenation).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from polytask.errors import PolytaskError
from polytask.features import FeatureSpec
from polytask.models.base import MultiTaskModel
from polytask.models.experts import tower
from polytask.models.inputs import input_encoder
from polytask.models.registry import register
from polytask.tasks import Task


def product_logit(logit_a: torch.Tensor, logit_b: torch.Tensor) -> torch.Tensor:
    """logit(σ(a)·σ(b)) in log space: log p = log σ(a) + log σ(b) and, since
    1 − σ(a)σ(b) = σ(−a) + σ(a)σ(−b), log(1 − p) = logaddexp(log σ(−a), log σ(a) + log σ(−b));
    exact for very small or very large logits."""
    log_p = F.logsigmoid(logit_a) + F.logsigmoid(logit_b)
    log_1mp = torch.logaddexp(F.logsigmoid(-logit_a), F.logsigmoid(logit_a) + F.logsigmoid(-logit_b))
    return log_p - log_1mp


class ESMM(MultiTaskModel):
    """Tasks, in order: the CTR task and the CTCVR task (both binary). With one binary task it is the
    single-task baseline of the same design: the embeddings and one tower predicting that task directly."""

    has_representation = True

    def __init__(self, tasks: Sequence[Task], input_shape, towers: Sequence[int] = (200, 80)):
        super().__init__()
        if len(tasks) == 1 and tasks[0].kind == "binary":  # the single-task baseline: embeddings + one tower
            self.single = True
        elif len(tasks) != 2 or any(t.kind != "binary" for t in tasks):
            raise PolytaskError(
                "esmm needs exactly two binary tasks, in order: CTR (click) and CTCVR (click and conversion); "
                f"got {[(t.name, t.kind) for t in tasks]}"
            )
        else:
            self.single = False
        self.tasks = [t.name for t in tasks]
        self.ctr_task, self.ctcvr_task = self.tasks[0], self.tasks[-1]
        self.inputs = input_encoder(input_shape)
        d = self.inputs.out_features
        self.ctr_tower = tower(d, towers, tasks[0])
        self.cvr_tower = None if self.single else tower(d, towers, tasks[1])
        self.pcvr: torch.Tensor | None = None

    def forward(self, x) -> dict[str, torch.Tensor]:
        e = self.inputs(x)
        self.representation = e
        ctr_logit = self.ctr_tower(e)[:, 0]
        if self.single:
            return {self.ctr_task: ctr_logit}
        cvr_logit = self.cvr_tower(e)[:, 0]
        self.pcvr = torch.sigmoid(cvr_logit)
        return {self.ctr_task: ctr_logit, self.ctcvr_task: product_logit(ctr_logit, cvr_logit)}

    def predict_cvr(self, x) -> torch.Tensor:
        """pCVR for ``x`` (post-click conversion probability)."""
        if self.single:
            raise PolytaskError("a single-task esmm (the baseline network) has no CVR tower")
        return torch.sigmoid(self.cvr_tower(self.inputs(x))[:, 0])

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.inputs.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        self._check_task(task)
        return (self.ctr_tower if task == self.ctr_task or self.single else self.cvr_tower).parameters()


@register(
    "esmm",
    "ESMM (Ma et al. 2018): CTR and CVR towers on shared embeddings, pCTCVR = pCTR·pCVR",
    inputs=("vector", "tabular", "sequence"),
    dense=False,
)
def esmm(tasks: Sequence[Task], input_shape: Sequence[int] | FeatureSpec, towers: Sequence[int] = (200, 80)) -> ESMM:
    return ESMM(tasks, input_shape, tuple(towers))
