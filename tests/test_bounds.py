"""Wolkowicz–Styan bounds: valid for every symmetric matrix, tight for one outlier."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hesslab.errors import ConfigurationError
from hesslab.linalg.bounds import wolkowicz_styan, ws_bounds
from hesslab.linalg.results import BoundsResult
from hesslab.linalg.trace import frobenius_sq, trace


def with_spectrum(lam: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = lam.numel()
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    A = (Q * lam) @ Q.T
    return 0.5 * (A + A.T)


@settings(max_examples=60, deadline=None)
@given(
    P=st.integers(min_value=2, max_value=40),
    seed=st.integers(min_value=0, max_value=10**6),
    scale=st.floats(min_value=1e-3, max_value=1e3),
    shift=st.floats(min_value=-10.0, max_value=10.0),
)
def test_bounds_hold_for_random_matrices(P, seed, scale, shift):
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(P, P, generator=g, dtype=torch.float64)
    A = scale * (B + B.T) / 2 + shift * torch.eye(P, dtype=torch.float64)
    lam = torch.linalg.eigvalsh(A)
    b = wolkowicz_styan(A)
    tol = 1e-9 * (float(lam.abs().max()) + 1.0)
    assert b.lambda_max_lower - tol <= float(lam[-1]) <= b.lambda_max_upper + tol
    assert b.lambda_min_lower - tol <= float(lam[0]) <= b.lambda_min_upper + tol
    assert b.trace_stderr == 0.0 and b.lambda_max_upper_interval is None
    assert b.num_matvecs == P


@pytest.mark.parametrize("P", [2, 10, 100])
def test_tight_for_one_outlier_and_equal_rest(P):
    lam = torch.full((P,), 0.5, dtype=torch.float64)
    lam[0] = 7.0
    b = wolkowicz_styan(with_spectrum(lam))
    assert b.lambda_max_upper == pytest.approx(7.0, rel=1e-10)
    # and the mirror case is tight for lambda_min
    b = wolkowicz_styan(with_spectrum(-lam))
    assert b.lambda_min_lower == pytest.approx(-7.0, rel=1e-10)


def test_formulas_and_tuple_input():
    lam = torch.tensor([3.0, 1.0, -2.0, 0.5], dtype=torch.float64)
    P = 4
    tr, tr2 = float(lam.sum()), float((lam**2).sum())
    b = wolkowicz_styan((tr, tr2, P))
    m = tr / P
    s = math.sqrt(tr2 / P - m * m)
    assert b.mean == pytest.approx(m) and b.std == pytest.approx(s)
    assert b.lambda_max_upper == pytest.approx(m + s * math.sqrt(P - 1))
    assert b.lambda_max_lower == pytest.approx(m + s / math.sqrt(P - 1))
    assert b.lambda_min_lower == pytest.approx(m - s * math.sqrt(P - 1))
    assert b.lambda_min_upper == pytest.approx(m - s / math.sqrt(P - 1))
    assert isinstance(b, BoundsResult) and b.notes == ()


def test_negative_variance_is_clamped_with_a_note():
    b = wolkowicz_styan((10.0, 0.5, 10))  # tr^2/P = 1 > tr(A^2)/P... s^2 < 0
    assert b.std == 0.0 and b.notes
    assert b.lambda_max_upper == b.lambda_min_lower == pytest.approx(1.0)


def test_intervals_contain_true_bounds_with_estimated_traces():
    g = torch.Generator().manual_seed(0)
    lam = torch.cat(
        [torch.tensor([40.0, 20.0, 9.0]), 0.3 * torch.randn(297, generator=g, dtype=torch.float64)]
    ).to(torch.float64)
    A = with_spectrum(lam)
    P = A.shape[0]
    true = ws_bounds(float(lam.sum()), float((lam**2).sum()), P)
    covered = 0
    for seed in range(40):
        gen = torch.Generator().manual_seed(seed)
        t = trace(A, 96, generator=gen)
        q = frobenius_sq(A, 96, generator=gen)
        b = wolkowicz_styan((t, q, P), z=2.0)
        assert b.trace_stderr == t.stderr > 0
        assert b.num_matvecs == t.num_matvecs + q.num_matvecs
        ivs = [
            b.lambda_max_lower_interval,
            b.lambda_max_upper_interval,
            b.lambda_min_lower_interval,
            b.lambda_min_upper_interval,
        ]
        point = [b.lambda_max_lower, b.lambda_max_upper, b.lambda_min_lower, b.lambda_min_upper]
        for (lo, hi), p in zip(ivs, point, strict=True):
            assert lo <= p <= hi
        t_in = abs(t.value - float(lam.sum())) <= 2 * t.stderr
        q_in = abs(q.value - float((lam**2).sum())) <= 2 * q.stderr
        if t_in and q_in:
            covered += 1
            for (lo, hi), v in zip(ivs, true[:4], strict=True):
                assert lo - 1e-9 <= v <= hi + 1e-9
    assert covered >= 30  # the 2-stderr box holds the truth most of the time


def test_estimated_from_operator():
    lam = torch.linspace(-1.0, 5.0, 600, dtype=torch.float64)
    A = with_spectrum(lam)
    b = wolkowicz_styan(A, num_matvecs=64, generator=torch.Generator().manual_seed(0))
    assert b.num_matvecs == 128 and b.trace_stderr > 0
    assert b.lambda_max_upper_interval is not None
    lo, hi = b.lambda_max_upper_interval
    assert lo <= b.lambda_max_upper <= hi
    exact = wolkowicz_styan(A, exact=True)
    assert exact.trace == pytest.approx(float(lam.sum()), rel=1e-10, abs=1e-9)
    assert exact.num_matvecs == 600


@pytest.mark.parametrize("arg", [(1.0, 2.0), (1.0, 2.0, 0), (1.0, "x", 3), (1.0, 2.0, 2.5)])
def test_bad_input(arg):
    with pytest.raises(ConfigurationError):
        wolkowicz_styan(arg)


def test_bad_z():
    with pytest.raises(ConfigurationError):
        wolkowicz_styan((1.0, 2.0, 3), z=-1.0)


def test_intervals_when_only_one_trace_is_estimated():
    """An exact ``tr A`` with an estimated ``tr A^2`` (or the reverse) still has a
    standard error, so the bound ranges are reported and contain the bounds."""
    lam = torch.linspace(-1.0, 5.0, 200, dtype=torch.float64)
    A = with_spectrum(lam)
    g = torch.Generator().manual_seed(1)
    t_est, q_est = trace(A, 48, generator=g), frobenius_sq(A, 48, generator=g)
    exact_t, exact_q = float(lam.sum()), float((lam**2).sum())
    for pair in ((exact_t, q_est), (t_est, exact_q)):
        b = wolkowicz_styan((*pair, 200))
        for name in ("lambda_max_lower", "lambda_max_upper", "lambda_min_lower"):
            interval = getattr(b, f"{name}_interval")
            assert interval is not None, name
            assert interval[0] < getattr(b, name) < interval[1], name
