"""Paired comparisons over seeds (issue 20's shared helper), checked by hand."""

import math

import pytest

from polytask.errors import PolytaskError
from polytask.paired import paired


def test_interval_and_p_value_by_hand():
    # differences (lower is better, so b − a): 0.02, 0.01, 0.03, 0.02 -> mean 0.02, std 0.008165
    a = [0.10, 0.11, 0.09, 0.10]
    b = [0.12, 0.12, 0.12, 0.12]
    r = paired(a, b, higher_is_better=False, a="mmoe", b="omoe")
    assert r.mean == pytest.approx(0.02) and r.std == pytest.approx(math.sqrt(2 / 3) / 100)
    half = 3.182446305284263 * r.std / 2  # t_{3, 0.975} · s/√4
    assert (r.low, r.high) == (pytest.approx(0.02 - half), pytest.approx(0.02 + half))
    assert r.p_value == pytest.approx(0.01628, abs=1e-5)  # t = 0.02/(0.008165/2) = 4.899, 3 dof (tables: 0.0163)
    assert r.wins == 4 and r.verdict == "reproduced"
    assert "mmoe − omoe = +0.0200" in r.line("MMoE beats OMoE") and r.line("x").endswith("-> reproduced")


def test_verdicts():
    assert paired([1, 2, 3], [2, 3, 4.1], higher_is_better=True).verdict == "not reproduced"  # clearly worse
    assert paired([1, 2, 3], [1.1, 1.9, 3.05], higher_is_better=True).verdict == "inconclusive at 3 seeds"
    tiny = paired([1.001, 2.0, 3.0005], [1, 1.9995, 3], higher_is_better=True, margin=0.01)
    assert tiny.verdict == "not reproduced"  # inside ±margin: too small to matter


def test_errors():
    with pytest.raises(PolytaskError, match="pair them by seed"):
        paired([1, 2], [1], higher_is_better=True)
    with pytest.raises(PolytaskError, match="at least 2 seeds"):
        paired([1], [1], higher_is_better=True)
    with pytest.raises(PolytaskError, match="non-finite"):
        paired([1, float("nan")], [1, 2], higher_is_better=True)


def test_equivalence_claims():
    same = paired(
        [1.0, 2.0, 3.0, 4.0], [1.001, 1.999, 3.002, 3.999], higher_is_better=True, margin=0.01, equivalent=True
    )
    assert same.verdict == "reproduced" and "margin ±0.0100" in same.line("about equal")
    apart = paired([1.1, 2.1, 3.1, 4.1], [1.0, 2.0, 3.0, 4.001], higher_is_better=True, margin=0.01, equivalent=True)
    assert apart.verdict == "not reproduced"  # interval wholly above +margin
    wide = paired([1.0, 2.05, 3.0, 4.0], [1.0, 2.0, 3.03, 4.0], higher_is_better=True, margin=0.01, equivalent=True)
    assert wide.verdict == "inconclusive at 4 seeds"
    with pytest.raises(PolytaskError, match="margin"):
        paired([1, 2], [1, 2], higher_is_better=True, equivalent=True)
