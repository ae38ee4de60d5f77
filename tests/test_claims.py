"""The one verdict rule of every reproduction (hesslab.experiments._claims)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hesslab.errors import ConfigurationError
from hesslab.experiments._claims import all_of, decide, decide_equal, decide_estimate


def test_paired_difference_decides_by_its_standard_error():
    a, b = [1.0, 1.2, 1.1, 1.3], [0.5, 0.6, 0.55, 0.7]
    v = decide(a, b, rule="paired")
    d = np.subtract(a, b)
    assert v.estimate == pytest.approx(d.mean())
    assert v.stderr == pytest.approx(d.std(ddof=1) / 2)
    assert v.holds is True and v.agree == 4 and v.n == 4
    assert decide(b, a, rule="paired").holds is False  # the opposite, beyond 2 s.e.
    assert "± = s.e." in v.text and "holds" in v.text


def test_one_percent_with_one_seed_agreeing_is_not_a_confirmation():
    """The displacement case: mean IPR 0.0114 vs 0.0113, one seed of three agreeing."""
    adam, sgd = [0.0100, 0.0126, 0.0116], [0.0110, 0.0112, 0.0117]
    v = decide(adam, sgd, rule="paired")
    assert v.holds is None and v.agree == 1
    assert decide(adam, sgd, rule="fraction").holds is False  # 1/3 agree


def test_welch_on_overlapping_spreads_is_undecided():
    g = np.random.default_rng(0)
    a, b = 40.6 + 8.3 * g.standard_normal(5), 55.9 + 11 * g.standard_normal(5)
    v = decide(a, b, rule="welch", direction="less")
    se = math.sqrt(a.var(ddof=1) / 5 + b.var(ddof=1) / 5)
    assert v.stderr == pytest.approx(se)
    assert v.holds is (True if v.statistic >= 2 else None)


def test_fewer_than_three_seeds_and_non_finite():
    assert decide([1.0, 2.0], rule="mean").holds is None
    v = decide([1.0, 1.1, float("nan"), 0.9, float("inf")], rule="mean")
    assert v.n == 3 and v.excluded == 2 and v.holds is True and "2 non-finite" in v.text
    assert decide_estimate(-1.0, 0.1, 3, direction="less").holds is True
    assert decide_estimate(-1.0, 0.1, 2, direction="less").holds is None
    assert decide_equal(1e-12, 0.0, 10, tol=1e-9).holds is True
    assert decide_equal(0.5, 0.1, 10, tol=0.1).holds is False


def test_fraction_thresholds_and_conjunction():
    assert decide([1, 1, 0], rule="fraction", margin=0.5).holds is True  # 2/3
    assert decide([1, 0, 0], rule="fraction", margin=0.5).holds is False  # 1/3
    assert decide([1, 1, 0, 0], rule="fraction", margin=0.5).holds is None
    yes, no, und = (decide([1, 1, 1], rule="fraction", margin=0.5),
                    decide([0, 0, 0], rule="fraction", margin=0.5),
                    decide([1, 1, 0, 0], rule="fraction", margin=0.5))  # fmt: skip
    assert all_of(yes, yes) is True and all_of(yes, no) is False and all_of(yes, und) is None


def test_bad_rules():
    with pytest.raises(ConfigurationError):
        decide([1.0, 2.0, 3.0], rule="median")
    with pytest.raises(ConfigurationError):
        decide([1.0, 2.0, 3.0], [1.0, 2.0], rule="paired")
    with pytest.raises(ConfigurationError):
        decide([1.0, 2.0, 3.0], rule="welch")
    with pytest.raises(ConfigurationError):
        decide([1.0, 2.0, 3.0], direction="up")
