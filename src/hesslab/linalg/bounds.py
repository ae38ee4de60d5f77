"""Wolkowicz–Styan bounds on the extreme eigenvalues from ``tr A`` and ``tr A^2``.

For a symmetric ``A`` of size ``P`` with eigenvalues ``lambda_1 >= ... >= lambda_P``, let
``m = tr(A)/P`` and ``s^2 = tr(A^2)/P - m^2`` (mean and variance of the eigenvalues). Then
(Wolkowicz & Styan, "Bounds for eigenvalues using traces", Linear Algebra Appl. 29, 1980):

    m + s / sqrt(P-1) <= lambda_max <= m + s sqrt(P-1),
    m - s sqrt(P-1)   <= lambda_min <= m - s / sqrt(P-1).

The upper bound on ``lambda_max`` is attained by a matrix with one outlier and ``P-1``
equal eigenvalues. Only two traces are needed, so the bounds are cheap even for large
``P`` when the traces are estimated (:func:`hesslab.linalg.trace.trace` and
:func:`hesslab.linalg.trace.frobenius_sq`); the ``*_interval`` fields of the result then
give the range of each bound when each trace moves by ``z`` standard errors.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from hesslab.errors import ConfigurationError
from hesslab.linalg.memory import records_peak_memory
from hesslab.linalg.probes import Engine
from hesslab.linalg.results import BoundsResult, TraceEstimate
from hesslab.linalg.trace import frobenius_sq, trace
from hesslab.operators.base import LinearOperator, as_operator
from hesslab.validation import require_symmetric

__all__ = ["wolkowicz_styan", "ws_bounds"]

#: Largest ``P`` for which :func:`wolkowicz_styan` computes the traces exactly by default.
EXACT_MAX_SIZE = 512


def ws_bounds(tr: float, tr_sq: float, P: int) -> tuple[float, float, float, float, float, float]:
    """The four Wolkowicz–Styan bounds from the two traces (``s^2`` clamped at 0).

    Returns:
        ``(lambda_max_lower, lambda_max_upper, lambda_min_lower, lambda_min_upper, m, s)``.
        For ``P = 1`` all four equal ``tr``.
    """
    m = tr / P
    s = math.sqrt(max(tr_sq / P - m * m, 0.0))
    if P == 1:
        return m, m, m, m, m, 0.0
    r = math.sqrt(P - 1)
    return m + s / r, m + s * r, m - s * r, m - s / r, m, s


def _bound_ranges(
    tr: float, tr_sq: float, P: int, se: float, se_sq: float, z: float
) -> list[tuple[float, float]]:
    """Range of each bound over ``tr in [tr +- z se]``, ``tr_sq in [tr_sq +- z se_sq]``.

    Each bound is ``g(t, q) = t/P + c sqrt(max(q/P - t^2/P^2, 0))`` with a constant ``c``; it
    is monotone in ``q`` and, for fixed ``q``, has at most one interior extremum in ``t``,
    at ``t/P = sign(c) sqrt((q/P) / (1 + c^2))``. The range over the box is therefore
    attained at the corners, at those points, or where the ``max(., 0)`` clamp switches;
    all of these are evaluated (plus a grid of 65 values of ``t`` for safety).
    """
    tlo, thi = tr - z * se, tr + z * se
    qlo, qhi = max(tr_sq - z * se_sq, 0.0), tr_sq + z * se_sq
    if P == 1:
        return [(tlo, thi)] * 4
    r = math.sqrt(P - 1)
    cs = [1.0 / r, r, -r, -1.0 / r]
    out = []
    for c in cs:
        vals = []
        for q in (qlo, qhi):
            ts = torch.linspace(tlo, thi, 65, dtype=torch.float64).tolist()
            a = q / P
            for sgn in (1.0, -1.0):
                tm = sgn * P * math.sqrt(a / (1.0 + c * c))
                if tlo <= tm <= thi:
                    ts.append(tm)
                tb = sgn * P * math.sqrt(a)  # where the variance clamp switches
                if tlo <= tb <= thi:
                    ts.append(tb)
            for t in ts:
                m = t / P
                vals.append(m + c * math.sqrt(max(a - m * m, 0.0)))
        out.append((min(vals), max(vals)))
    return out


def _as_value(x: float | TraceEstimate, name: str) -> tuple[float, float]:
    if isinstance(x, TraceEstimate):
        return float(x.value), float(x.stderr)
    if isinstance(x, (int, float)) or (isinstance(x, Tensor) and x.numel() == 1):
        return float(x), 0.0
    raise ConfigurationError(
        f"{name} must be a float or a TraceEstimate, got {type(x).__name__}; pass "
        "(trace, trace_sq, P) or an operator"
    )


@records_peak_memory
def wolkowicz_styan(
    op_or_traces: LinearOperator | Tensor | tuple,
    *,
    num_matvecs: int = 96,
    generator: torch.Generator | None = None,
    z: float = 2.0,
    exact: bool | None = None,
    method: str = "krylov",
) -> BoundsResult:
    """Wolkowicz–Styan lower and upper bounds on ``lambda_max`` and ``lambda_min``.

    Args:
        op_or_traces: either an operator (anything :func:`~hesslab.as_operator` takes), whose
            traces are then computed here, or a tuple ``(trace, trace_sq, P)`` where the
            traces are floats or :class:`~hesslab.linalg.results.TraceEstimate` objects
            (estimates carry a standard error, which fills the ``*_interval`` fields).
        num_matvecs: budget for each of the two estimated traces (``2 * num_matvecs`` in
            all) when an operator is given and the traces are not computed exactly.
        generator: source of randomness for estimated traces.
        z: half-width of the box, in standard errors, over which each bound's range is
            reported (``*_interval`` fields; ``None`` when both traces are exact).
        exact: compute ``tr A = sum_i e_i^T A e_i`` and ``tr A^2 = sum_i ||A e_i||^2`` with
            ``P`` unit vectors. Default: exact when ``P <= 512``.
        method: estimator for both traces when not exact (``"krylov"`` or ``"hutchinson"``).

    Returns:
        :class:`~hesslab.linalg.results.BoundsResult`. When estimation noise makes
        ``s^2 = tr(A^2)/P - m^2`` negative, ``s`` is clamped to 0 (all four bounds collapse
        to ``m``) and the clamp is logged in ``notes``.

    Raises:
        ConfigurationError: malformed tuple, ``P < 1``, ``z < 0`` or an unknown method.

    Example:
        >>> b = wolkowicz_styan(H)                      # exact for small P
        >>> b = wolkowicz_styan((trace(H), frobenius_sq(H), H.shape[0]))  # with intervals
    """
    t0 = time.perf_counter()
    if not (isinstance(z, (int, float)) and z >= 0):
        raise ConfigurationError(f"z must be a non-negative number, got {z!r}")
    if isinstance(op_or_traces, tuple):
        tr, se, tr_sq, se_sq, P, num_matvecs_used = _given_traces(op_or_traces)
    else:
        tr, se, tr_sq, se_sq, P, num_matvecs_used = _operator_traces(
            op_or_traces, num_matvecs, generator, exact, method
        )

    notes: list[str] = []
    var = tr_sq / P - (tr / P) ** 2
    if var < 0:
        notes.append(
            f"s^2 = tr(A^2)/P - (tr A/P)^2 = {var:.3e} < 0 (estimation noise); clamped to 0"
        )
    lmax_lo, lmax_hi, lmin_lo, lmin_hi, m, s = ws_bounds(tr, tr_sq, P)
    intervals: list[tuple[float, float] | None] = [None] * 4
    if se > 0 or se_sq > 0:
        if math.isfinite(se) and math.isfinite(se_sq):
            intervals = list(_bound_ranges(tr, tr_sq, P, se, se_sq, float(z)))
        else:
            intervals = [(-math.inf, math.inf)] * 4
    return BoundsResult(
        lambda_max_lower=lmax_lo,
        lambda_max_upper=lmax_hi,
        lambda_min_lower=lmin_lo,
        lambda_min_upper=lmin_hi,
        mean=m,
        std=s,
        dimension=P,
        trace=tr,
        trace_sq=tr_sq,
        trace_stderr=se,
        trace_sq_stderr=se_sq,
        lambda_max_lower_interval=intervals[0],
        lambda_max_upper_interval=intervals[1],
        lambda_min_lower_interval=intervals[2],
        lambda_min_upper_interval=intervals[3],
        num_matvecs=num_matvecs_used,
        seconds=time.perf_counter() - t0,
        notes=tuple(notes),
    )


def _given_traces(traces: tuple) -> tuple[float, float, float, float, int, int]:
    """``(tr, se, tr_sq, se_sq, P, products)`` from a ``(trace, trace_sq, P)`` tuple."""
    if len(traces) != 3:
        raise ConfigurationError(
            f"pass the traces as a tuple (trace, trace_sq, P), got {len(traces)} elements"
        )
    t_in, q_in, P = traces
    if isinstance(P, bool) or not isinstance(P, int) or P < 1:
        raise ConfigurationError(f"P (the dimension) must be a positive integer, got {P!r}")
    tr, se = _as_value(t_in, "trace")
    tr_sq, se_sq = _as_value(q_in, "trace_sq")
    used = sum(est.num_matvecs for est in (t_in, q_in) if isinstance(est, TraceEstimate))
    return tr, se, tr_sq, se_sq, P, used


def _operator_traces(
    op: Any, num_matvecs: int, generator: torch.Generator | None, exact: bool | None, method: str
) -> tuple[float, float, float, float, int, int]:
    """``(tr, se, tr_sq, se_sq, P, products)`` of an operator.

    Exact with ``P`` unit vectors (default for ``P <= 512``), else two estimates of
    ``num_matvecs`` products each.
    """
    op = as_operator(op)
    require_symmetric(op, "wolkowicz_styan")
    P = op.shape[0]
    if exact is None:
        exact = P <= EXACT_MAX_SIZE
    if exact:
        engine = Engine(op, distribution="rademacher", generator=None, block_size=None)
        tr = tr_sq = 0.0
        for start in range(0, P, 256):
            E = engine.unit_block(start, min(P, start + 256))
            AE = engine.apply(E)
            tr += float((E * AE).sum())
            tr_sq += float((AE * AE).sum())
        return tr, 0.0, tr_sq, 0.0, P, engine.num_matvecs
    if method not in ("krylov", "hutchinson"):
        raise ConfigurationError(f"method must be 'krylov' or 'hutchinson', got {method!r}")
    t_est = trace(op, num_matvecs, method=method, generator=generator)
    q_est = frobenius_sq(op, num_matvecs, method=method, generator=generator)
    used = t_est.num_matvecs + q_est.num_matvecs
    return t_est.value, t_est.stderr, q_est.value, q_est.stderr, P, used
