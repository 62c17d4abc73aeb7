"""Choosing networks under an inference budget (Standley, Zamir, Chen, Guibas, Malik & Savarese, ICML 2020).

A candidate network serves a subset of the tasks at a cost (1 = one full network). A solution is a set of
candidates whose costs sum to at most the budget and that together serve every task; each task is then
served by the chosen network that does it best, and the solution's score is Σ_t min_{n ∋ t} L_t(n)
(lower is better; networks may overlap). :func:`best_networks` finds the optimum exhaustively with the
reference's pruning (candidates over the remaining budget, and candidates that improve no task over the
running per-task best, are skipped); :func:`higher_order_estimates` fills in groups of three or more
tasks from pair results (task t's loss in group S = mean over j ∈ S \\ {t} of its loss in the pair {t, j}).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from polytask.errors import PolytaskError


@dataclass(frozen=True)
class Candidate:
    """A network serving ``tasks`` at ``cost`` with per-task ``losses`` (lower is better)."""

    tasks: frozenset[str]
    losses: Mapping[str, float] = field(hash=False, compare=False)
    cost: float = 1.0

    def __post_init__(self) -> None:
        missing = [t for t in self.tasks if t not in self.losses]
        if missing or not self.tasks:
            raise PolytaskError(
                f"candidate {sorted(self.tasks)}: needs a loss for every task it serves (missing {missing})"
            )
        if self.cost <= 0:
            raise PolytaskError(f"candidate {sorted(self.tasks)}: cost must be > 0, got {self.cost}")


def score(chosen: Iterable[Candidate], tasks: Sequence[str]) -> float:
    """Σ_t min over the chosen networks serving t of L_t (inf when a task is not served)."""
    chosen = list(chosen)
    total = 0.0
    for t in tasks:
        served = [c.losses[t] for c in chosen if t in c.tasks]
        if not served:
            return math.inf
        total += min(served)
    return total


def best_networks(
    candidates: Sequence[Candidate], tasks: Sequence[str], budget: float
) -> tuple[list[Candidate], float]:
    """The lowest-score set of candidates within ``budget`` that serves every task, and its score."""
    tasks = list(tasks)
    unknown = {t for c in candidates for t in c.tasks} - set(tasks)
    if unknown:
        raise PolytaskError(f"candidates serve unknown task(s) {sorted(unknown)}; tasks: {tasks}")
    if any(not any(t in c.tasks for c in candidates) for t in tasks):
        raise PolytaskError("some task is served by no candidate network")
    index = {t: i for i, t in enumerate(tasks)}
    order = sorted(candidates, key=lambda c: (c.cost, sorted(c.tasks)))
    best: dict[str, object] = {"score": math.inf, "chosen": []}

    def recurse(start: int, left: float, current: list[float], chosen: list[Candidate]) -> None:
        if all(math.isfinite(v) for v in current):
            total = sum(current)
            if total < best["score"] - 1e-12:
                best["score"], best["chosen"] = total, list(chosen)
        for i in range(start, len(order)):
            c = order[i]
            if c.cost > left + 1e-9:
                continue
            improved = [index[t] for t in c.tasks if c.losses[t] < current[index[t]]]
            if not improved:  # dominated by what is already chosen
                continue
            nxt = list(current)
            for k in improved:
                nxt[k] = c.losses[tasks[k]]
            chosen.append(c)
            recurse(i + 1, left - c.cost, nxt, chosen)
            chosen.pop()

    recurse(0, budget, [math.inf] * len(tasks), [])
    if not best["chosen"]:
        raise PolytaskError(f"no set of networks within budget {budget} serves every task")
    return best["chosen"], float(best["score"])  # type: ignore[return-value]


def served_partition(chosen: Sequence[Candidate], tasks: Sequence[str]) -> list[list[str]]:
    """The grouping a solution implies: each task goes to the chosen network that serves it best, and
    tasks served by the same network form a group (so a network added only to serve one task well,
    overlapping others, does not merge them)."""
    served: dict[int, list[str]] = {}
    for t in tasks:
        options = [(c.losses[t], i) for i, c in enumerate(chosen) if t in c.tasks]
        if not options:
            raise PolytaskError(f"task {t!r} is served by no chosen network")
        served.setdefault(min(options)[1], []).append(t)
    return sorted(served.values(), key=lambda g: list(tasks).index(g[0]))


def brute_force(candidates: Sequence[Candidate], tasks: Sequence[str], budget: float) -> float:
    """The optimum by enumerating every subset of candidates (for checking :func:`best_networks`)."""
    best = math.inf
    for r in range(1, len(candidates) + 1):
        for subset in itertools.combinations(candidates, r):
            if sum(c.cost for c in subset) <= budget + 1e-9:
                best = min(best, score(subset, tasks))
    return best


def higher_order_estimates(
    singles: Mapping[str, float],
    pairs: Mapping[frozenset, Mapping[str, float]],
    tasks: Sequence[str],
    cost: float = 1.0,
) -> list[Candidate]:
    """Measured singles and pairs, plus every larger group with the pair-average estimate (HOA)."""
    out = [Candidate(frozenset([t]), {t: singles[t]}, cost) for t in tasks]
    out += [Candidate(frozenset(p), dict(v), cost) for p, v in pairs.items()]
    for r in range(3, len(tasks) + 1):
        for group in itertools.combinations(tasks, r):
            losses = {}
            for t in group:
                values = [pairs[frozenset((t, j))][t] for j in group if j != t]
                losses[t] = sum(values) / len(values)
            out.append(Candidate(frozenset(group), losses, cost))
    return out


def affinity_candidates(
    affinity: Mapping[tuple[str, str], float], tasks: Sequence[str], allow_singletons: bool = True, cost: float = 1.0
) -> list[Candidate]:
    """TAG's group selection as a budgeted search: group S scores task a by the mean inter-task affinity
    onto it, (1/(|S|−1)) Σ_{b∈S\\a} Z_{b→a}, and the search minimises the negated total. A singleton scores
    0 (no transfer) or, with ``allow_singletons=False`` as in the reference notebook, is not allowed."""
    out = []
    for r in range(1 if allow_singletons else 2, len(tasks) + 1):
        for group in itertools.combinations(tasks, r):
            if r == 1:
                losses = {group[0]: 0.0}
            else:
                losses = {a: -sum(affinity[(b, a)] for b in group if b != a) / (r - 1) for a in group}
            out.append(Candidate(frozenset(group), losses, cost))
    return out
