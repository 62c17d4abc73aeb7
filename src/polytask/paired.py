"""Paired comparisons over seeds, for the reproduction scripts: two models trained with the same seed see
the same data and initialisation, so their per-seed differences are the quantity to test.

For differences d_1..d_n (in the direction the claim says is better): mean, sample std, a Student-t
confidence interval mean ± t_{n−1, (1+level)/2} · std/√n, the two-sided paired t-test's p-value, and wins
out of n. The verdict on a claim "A is better than B" is

- ``reproduced`` when the whole interval lies on the better side of 0,
- ``not reproduced`` when the whole interval lies on the other side, or inside ±``margin`` (a
  difference too small to matter, when a margin is given),
- ``inconclusive at n seeds`` otherwise.

A claim that two models are *about equal* (``equivalent=True``, with a margin > 0) is ``reproduced`` when
the whole interval lies inside ±margin (two one-sided tests at the same level), ``not reproduced`` when it
lies wholly outside, and inconclusive otherwise (at least as strict as two one-sided t-tests at level
(1 − level)/2 each).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from polytask.errors import PolytaskError


@dataclass(frozen=True)
class PairedResult:
    """The paired comparison of ``a`` against ``b`` (differences oriented so that > 0 favours ``a``)."""

    a: str
    b: str
    n: int
    mean: float
    std: float
    low: float
    high: float
    p_value: float
    wins: int
    level: float
    margin: float
    equivalent: bool = False

    @property
    def verdict(self) -> str:
        if self.equivalent:
            if -self.margin < self.low and self.high < self.margin:
                return "reproduced"
            if self.low >= self.margin or self.high <= -self.margin:
                return "not reproduced"
            return f"inconclusive at {self.n} seeds"
        if self.low > 0 and not (self.margin > 0 and self.high < self.margin):
            return "reproduced"
        if self.high < 0 or (self.margin > 0 and -self.margin < self.low and self.high < self.margin):
            return "not reproduced"
        return f"inconclusive at {self.n} seeds"

    def line(self, claim: str, digits: int = 4) -> str:
        """One line: the claim, the mean difference with its interval, wins, p and the verdict."""
        f = f"{{:+.{digits}f}}"
        interval = f"[{f.format(self.low)}, {f.format(self.high)}]"
        return (
            f"{claim}: {self.a} − {self.b} = {f.format(self.mean)} ± {self.std:.{digits}f} (std), "
            f"{round(100 * self.level)}% CI {interval}, wins {self.wins}/{self.n}, paired t p = {self.p_value:.3g}"
            + (f", equivalence margin ±{self.margin:.{digits}f}" if self.equivalent else "")
            + f" -> {self.verdict}"
        )


def paired(
    a_values: Sequence[float],
    b_values: Sequence[float],
    higher_is_better: bool,
    a: str = "A",
    b: str = "B",
    level: float = 0.95,
    margin: float = 0.0,
    equivalent: bool = False,
) -> PairedResult:
    """The paired comparison of per-seed values ``a_values`` and ``b_values`` (same seeds, same order);
    ``equivalent=True`` tests "about equal" (within ±``margin``) instead of "a is better than b"."""
    from scipy import stats

    if len(a_values) != len(b_values):
        raise PolytaskError(f"paired: {len(a_values)} values of {a} against {len(b_values)} of {b}; pair them by seed")
    if len(a_values) < 2:
        raise PolytaskError("paired: an interval needs at least 2 seeds")
    if not 0 < level < 1:
        raise PolytaskError(f"paired: level must be in (0, 1), got {level}")
    if margin < 0 or (equivalent and margin == 0):
        raise PolytaskError(f"paired: margin must be >= 0, and > 0 for an equivalence claim; got {margin}")
    sign = 1.0 if higher_is_better else -1.0
    diffs = [sign * (x - y) for x, y in zip(a_values, b_values)]
    if not all(math.isfinite(d) for d in diffs):
        raise PolytaskError(f"paired: non-finite values in {a} or {b}: {list(a_values)}, {list(b_values)}")
    n = len(diffs)
    mean, std = statistics.fmean(diffs), statistics.stdev(diffs)
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * std / math.sqrt(n)
    if std > 0:
        p_value = float(2 * stats.t.sf(abs(mean) / (std / math.sqrt(n)), n - 1))
    else:
        p_value = 1.0 if mean == 0 else 0.0
    wins = sum(d > 0 for d in diffs)
    return PairedResult(a, b, n, mean, std, mean - half, mean + half, p_value, wins, level, margin, equivalent)
