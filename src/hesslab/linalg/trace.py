"""Stochastic trace estimation: ``tr(A)`` and ``tr(A^2)`` from matrix-vector products.

Methods of :func:`trace` (``N = num_matvecs`` operator columns in all):

* ``"hutchinson"`` (Hutchinson, 1989): ``tr(A) ~ (1/N) sum_k v_k^T A v_k``. Error
  ``~ sqrt(2/N) ||A||_F``, whatever the spectrum.
* ``"hutch++"`` (Meyer, Musco, Musco & Woodruff, SOSA 2021): ``Q = orth(A S)`` from ``N/3``
  probes, ``tr(Q^T A Q)`` exactly (``N/3`` products), Hutchinson with ``N/3`` probes on the
  deflated remainder ``(I-QQ^T) A (I-QQ^T)``. Error ``~ ||A - A_{N/3}||_F / sqrt(N/3)``.
* ``"xtrace"`` (Epperly, Tropp & Webber, SIMAX 2024): ``N/2`` probes ``Omega``, ``Q =
  orth(A Omega)``; for each ``i`` the Hutch++ estimate whose sketch is ``A Omega`` without
  column ``i`` and whose Hutchinson probe is ``omega_i``, averaged over ``i`` (exchangeable
  leave-one-out). All ``N/2`` estimates come from ``A Omega`` and ``A Q`` by rank-one
  downdating of the QR factorisation, in ``O(P N^2)`` work.
* ``"krylov"`` (default; block-Krylov deflation, the ``f(A) = A`` case of Krylov-aware trace
  estimation, Chen & Hallman, SIMAX 2023; Meyer et al. 2021 §4): a block Krylov space
  ``K_q(A, Omega) = span[Omega, A Omega, ..., A^{q-1} Omega]`` of dimension ``d`` costs only
  ``d`` products (block Lanczos with full reorthogonalisation; ``tr(Q^T A Q)`` comes for free
  from the products that build the space), against ``2d`` for the Hutch++ sketch, and a
  Krylov space resolves outlying eigenvalues far better than one product ``A S``. The
  remainder is estimated by Hutchinson on ``(I-QQ^T) A (I-QQ^T)``. The split between ``d``
  and the ``N - d`` remainder probes is chosen adaptively: ``N/4`` remainder probes are drawn
  first (pilot), their products are re-deflated for free after every Krylov block (``A x =
  A v - (A Q)(Q^T v)``), and the space grows while the predicted variance
  ``s^2(d) / (N - d)`` of the final estimate decreases.
* ``"exact"``: ``sum_i e_i^T A e_i`` with ``P`` unit vectors (small ``P`` only).

Why ``"krylov"`` is the default: at 96 products, mean ``|rel. error|`` over seeds (and
RMS reported stderr / empirical std), Rademacher probes:

==========================  ===============  ===============  ===============  ===============
spectrum                    hutchinson       hutch++          xtrace           krylov
==========================  ===============  ===============  ===============  ===============
MLP Hessian, P=3466, loss   3.43% (1.18)     0.200% (0.92)    0.125% (0.76)    0.103% (1.03)
1e-3 (100 seeds)
MLP Hessian, P=3466, loss   3.32% (1.14)     0.145% (1.05)    0.110% (0.84)    0.096% (1.12)
0.12 (100 seeds)
synthetic spiked, P=200     3.64% (1.02)     0.199% (1.04)    0.171% (0.79)    0.161% (0.96)
(200 seeds, test suite)
synthetic flat, P=200       0.241% (0.97)    0.592% (1.02)    0.801% (0.64)    0.255% (1.03)
==========================  ===============  ===============  ===============  ===============

(MLP: 64-32-32-10 ReLU on sklearn digits, dense float64 Hessian.) ``"krylov"`` is the most
accurate on spiked spectra, loses only ~5% to Hutchinson on a flat one (the adaptive split
falls back to plain Hutchinson), and its stderr is calibrated; XTrace's leave-one-out
stderr is optimistic by 15-35%. Its cost: the Krylov blocks are applied one after the
other (``2 + d/b`` operator calls, about 9 of ``b = 8`` columns for ``N = 96``, against 2 wide
calls for XTrace), so where a wide block is much cheaper per column than a narrow one,
``"xtrace"`` is the faster choice at nearly the same accuracy.

Standard errors: for Hutchinson, Hutch++ and krylov the sample standard deviation of the
i.i.d. Hutchinson samples over ``sqrt(#samples)`` (the deflated part is exact, so this is the
whole error); for XTrace the paper's estimate, the standard deviation of the leave-one-out
estimates over ``sqrt(N/2)``.
The vector work (probes, bases, products) is float64 below :data:`FLOAT64_BELOW` parameters
and in the operator's dtype (at least float32) above it; every reduction is float64
(:func:`work_dtype`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from hesslab.errors import ConfigurationError
from hesslab.io import Checkpoint, as_checkpoint
from hesslab.linalg.basis import orthonormalize
from hesslab.linalg.memory import records_peak_memory
from hesslab.linalg.probes import (
    Engine,
    ProductReplay,
    check_positive_int,
    generator_digest,
)
from hesslab.linalg.results import TraceEstimate
from hesslab.linalg.trace_methods import (
    Deflated,
    XTrace,
    exact_part,
    exact_sum,
    krylov_deflation,
)
from hesslab.operators.base import LinearOperator, as_operator
from hesslab.validation import require_symmetric

__all__ = ["frobenius_sq", "trace"]

TraceMethod = Literal["krylov", "hutch++", "hutchinson", "xtrace", "exact"]
TRACE_METHODS: tuple[str, ...] = ("krylov", "hutch++", "hutchinson", "xtrace", "exact")
FROBENIUS_METHODS: tuple[str, ...] = ("krylov", "hutchinson", "exact")


#: Below this many parameters the estimators' vector work is float64 whatever the
#: operator's dtype (cheap there, and exact to round-off in the suite's dense-truth
#: checks); from it on, the operator's dtype (at least float32): see :func:`work_dtype`.
FLOAT64_BELOW = 2**18


def work_dtype(op: LinearOperator) -> torch.dtype:
    """The dtype of the probes, bases and product blocks of :func:`trace` on ``op``.

    float64 for a float64 operator or below :data:`FLOAT64_BELOW` parameters; above it the
    operator's dtype promoted to at least float32, so a float32 product's result is used
    as it comes (no float64 copies of every probe and product: at P = 1M and 96 products
    those conversions cost about a quarter of the vector work). Every reduction (samples,
    exact parts, the small matrices of XTrace) is still float64. The accuracy cost is
    the float32 rounding of ``x^T A x`` (chunked sums, ~1e-6 relative, far below a
    Hutchinson sample's spread): see ``tests/test_trace.py`` and ``bench/krylov_overhead.py``.
    """
    dtype = op.dtype
    P = op.shape[0]
    if dtype == torch.float64 or P < FLOAT64_BELOW:
        return torch.float64
    return torch.promote_types(dtype, torch.float32)


def _check_common(
    num_matvecs: int, method: str, methods: tuple[str, ...], rtol: float | None
) -> None:
    check_positive_int("num_matvecs", num_matvecs)
    if method not in methods:
        raise ConfigurationError(f"unknown method {method!r}; choose one of {methods}")
    if rtol is not None and not (isinstance(rtol, (int, float)) and rtol > 0):
        raise ConfigurationError(f"rtol must be a positive number or None, got {rtol!r}")


# --------------------------------------------------------------------------- public
@records_peak_memory
def trace(
    op: LinearOperator | Tensor,
    num_matvecs: int = 96,
    *,
    method: TraceMethod = "krylov",
    distribution: Literal["rademacher", "gaussian", "sphere"] = "rademacher",
    generator: torch.Generator | None = None,
    rtol: float | None = None,
    max_matvecs: int | None = None,
    block_size: int | None = None,
    krylov_block: int | None = None,
    callback: Callable[[TraceEstimate], None] | None = None,
    checkpoint: str | os.PathLike[str] | Checkpoint | None = None,
) -> TraceEstimate:
    """Estimate ``tr(A)`` of a symmetric operator from ``num_matvecs`` products.

    See the module docstring for the methods and their references. In short:
    ``"krylov"`` (default) = block-Krylov deflation + Hutchinson on the remainder, with an
    adaptive split (Chen & Hallman, 2023); ``"hutch++"`` (Meyer et al., 2021); ``"xtrace"``
    (Epperly, Tropp & Webber, 2024); ``"hutchinson"`` (Hutchinson, 1989); ``"exact"``.

    Args:
        op: the operator ``A`` (``[P, P]``), or anything :func:`~hesslab.as_operator` takes.
        num_matvecs: budget ``N`` of operator columns (the initial budget in adaptive mode).
            At least 3 for ``"krylov"``/``"hutch++"``, 4 for ``"xtrace"``. Ignored by
            ``"exact"`` (which applies ``P`` unit vectors).
        method: ``"krylov"``, ``"hutch++"``, ``"hutchinson"``, ``"xtrace"`` or ``"exact"``.
        distribution: probe distribution, ``"rademacher"``, ``"gaussian"`` or ``"sphere"``.
            For Gaussian/spherical probes the deflated estimators use the rotation-invariant
            normalisation ``n x^T A x / ||x||^2`` of the XTrace paper.
        generator: source of randomness (``None``: fresh entropy-seeded generator).
        rtol: adaptive mode: after the initial budget keep adding probes in blocks until
            ``stderr <= rtol * |value|`` or ``max_matvecs`` products have been used. For
            ``"krylov"``/``"hutch++"`` the deflation space is kept and only remainder probes
            are added; for ``"xtrace"`` each block adds probes and their sketch columns.
        max_matvecs: cap on products in adaptive mode (default ``10 * num_matvecs``).
        block_size: at most this many columns per operator call (memory bound; default all
            at once); also the number of probes per adaptive round (default ``N/4``).
        krylov_block: block width ``b`` of the Krylov space for ``"krylov"`` (default
            ``round(N/12)`` clipped to ``[1, 16]``: 8 for ``N = 96``).
        callback: called with the current :class:`TraceEstimate` after the initial budget
            and after every adaptive round.
        checkpoint: a file path (or a :class:`hesslab.io.Checkpoint`; a read-only one
            resumes without writing, as the non-zero ranks of a torchrun job do). The
            generator's state at entry and every operator call's product are saved there
            (``<file>.<i>`` per call of at most ``block_size`` columns, the index ``<file>``
            atomically after each; see :class:`~hesslab.linalg.probes.ProductReplay`). A
            later call with the same arguments and the same file reads the saved products
            back instead of recomputing them and returns bit-identical results to an
            uninterrupted run, ``seconds`` counting both runs. The files are removed when
            the call returns normally. ``block_size`` sets the granularity: at most that
            many columns are lost to an interruption.

    Returns:
        :class:`~hesslab.linalg.results.TraceEstimate` with ``value``, ``stderr``,
        ``num_matvecs``, ``seconds``, ``method``, the per-probe (or leave-one-out)
        ``samples`` behind the standard error (float64, CPU), and ``info`` (``krylov_dim``,
        ``rtol_met``, ...).

    Raises:
        ConfigurationError: unknown method or distribution, a budget too small, or a
            checkpoint written by a call with other arguments or another generator.

    Example:
        >>> est = trace(H, 96, generator=torch.Generator().manual_seed(0))
        >>> est.value, est.stderr
    """
    return _run(
        op, num_matvecs, "trace", method, TRACE_METHODS, distribution, generator, rtol,
        max_matvecs, block_size, krylov_block, callback, checkpoint,
    )  # fmt: skip


@records_peak_memory
def frobenius_sq(
    op: LinearOperator | Tensor,
    num_matvecs: int = 96,
    *,
    method: Literal["krylov", "hutchinson", "exact"] = "krylov",
    distribution: Literal["rademacher", "gaussian", "sphere"] = "rademacher",
    generator: torch.Generator | None = None,
    rtol: float | None = None,
    max_matvecs: int | None = None,
    block_size: int | None = None,
    krylov_block: int | None = None,
    callback: Callable[[TraceEstimate], None] | None = None,
    checkpoint: str | os.PathLike[str] | Checkpoint | None = None,
) -> TraceEstimate:
    """Estimate ``tr(A^2) = ||A||_F^2 = sum_i lambda_i^2`` of a symmetric operator.

    * ``"hutchinson"``: ``tr(A^2) = E ||A v||^2`` for ``E[v v^T] = I``; the samples are
      ``||A v_k||^2`` and the standard error is their std over ``sqrt(N)``.
    * ``"krylov"`` (default): with a block Krylov basis ``Q`` and ``Z = A Q`` (``d``
      products), ``||A||_F^2 = ||A Q||_F^2 + ||A (I - Q Q^T)||_F^2``; the first term is exact,
      the second is Hutchinson on ``||A (I - QQ^T) v||^2`` with ``A (I-QQ^T) v = A v - Z Q^T v``
      (same adaptive split as :func:`trace`). Far lower variance on spiked spectra, where
      ``||A||_F^2`` is dominated by a few outliers.
    * ``"exact"``: ``sum_i ||A e_i||^2`` over the ``P`` unit vectors.

    Arguments and return value as in :func:`trace` (``method`` is ``"krylov"``,
    ``"hutchinson"`` or ``"exact"``). This is the ``tr(A^2)`` input of the
    Wolkowicz–Styan bounds (:func:`hesslab.linalg.bounds.wolkowicz_styan`).
    """
    return _run(
        op, num_matvecs, "frobenius", method, FROBENIUS_METHODS, distribution, generator,
        rtol, max_matvecs, block_size, krylov_block, callback, checkpoint,
    )  # fmt: skip


def _run(
    op,
    num_matvecs: int,
    kind: str,
    method: str,
    methods: tuple[str, ...],
    distribution: str,
    generator,
    rtol,
    max_matvecs,
    block_size,
    krylov_block,
    callback,
    checkpoint,
) -> TraceEstimate:
    """The estimator behind :func:`trace` and :func:`frobenius_sq`: checks, engine,
    checkpoint, the method's initial estimate, then the adaptive rounds."""
    t0 = time.perf_counter()
    _check_common(num_matvecs, method, methods, rtol)
    entry = generator_digest(generator)
    op = as_operator(op)
    engine = Engine(
        op, distribution=distribution, generator=generator, block_size=block_size,
        work_dtype=work_dtype(op),
    )  # fmt: skip
    if kind == "frobenius" or method not in ("hutchinson", "exact"):  # these need A = A^T
        require_symmetric(engine.op, f"{kind} estimation (method={method!r})")
    if krylov_block is not None:
        krylov_block = check_positive_int("krylov_block", krylov_block)
    N = num_matvecs
    cap = 10 * N if max_matvecs is None else check_positive_int("max_matvecs", max_matvecs)
    info: dict = {"distribution": distribution, "kind": kind}
    checkpoint = as_checkpoint(checkpoint)
    if checkpoint is not None:
        key = {
            "estimator": kind, "method": method, "P": engine.P,
            "dtype": str(engine.op.dtype), "num_matvecs": N, "distribution": distribution,
            "rtol": rtol, "max_matvecs": cap, "block_size": block_size,
            "krylov_block": krylov_block, "generator": entry,
        }  # fmt: skip
        name = "trace" if kind == "trace" else "frobenius_sq"
        engine.replay = ProductReplay(checkpoint, key, engine.generator, name)

    def snapshot(value: float, stderr: float, samples: Tensor | None) -> TraceEstimate:
        replay = engine.replay
        return TraceEstimate(
            value=float(value),
            stderr=float(stderr),
            num_matvecs=engine.num_matvecs,
            seconds=time.perf_counter() - t0 if replay is None else replay.seconds,
            method=method,
            samples=None if samples is None else samples.detach().to("cpu", torch.float64),
            info=dict(info),
        )

    if method == "xtrace" and engine.space.distributed:
        raise ConfigurationError(
            "method='xtrace' does not run on sharded operators yet; use 'krylov' (the "
            "default), 'hutch++' or 'hutchinson'"
        )
    if method == "exact":
        result = snapshot(exact_sum(engine, kind), 0.0, None)
    else:
        if method == "xtrace":
            rounds = _xtrace_rounds(engine, N, info)
        else:
            rounds = _deflated_rounds(engine, method, N, kind, krylov_block, info)
        step = block_size if block_size is not None else max(2, N // 4)
        value, stderr, samples = _adaptive(rounds, engine, rtol, cap, step, snapshot, callback)
        if rtol is not None:
            info["rtol"] = rtol
            info["rtol_met"] = bool(stderr <= rtol * abs(value))
        result = snapshot(value, stderr, samples)
    if engine.replay is not None:
        engine.replay.remove()
    if callback is not None and method != "exact":
        callback(result)
    return result


class _Rounds:
    """A method's state for :func:`_adaptive`: ``estimate() -> (value, stderr, samples)``,
    ``extend(k)`` (spend about ``k`` more products), and the fewest products an extension
    needs (``cost``)."""

    def __init__(self, estimate: Callable, extend: Callable[[int], None], cost: int) -> None:
        self.estimate, self.extend, self.cost = estimate, extend, cost


def _xtrace_rounds(engine: Engine, N: int, info: dict) -> _Rounds:
    if N < 4:
        raise ConfigurationError(f"xtrace needs num_matvecs >= 4, got {N}")
    xt = XTrace(engine)
    xt.add(min(N // 2, engine.P))

    def estimate():
        v, se, est = xt.estimate()
        info["path"] = xt.path
        info["num_probes"] = xt.Omega.shape[1]
        return v, se, est

    return _Rounds(estimate, lambda k: xt.add(max(1, k // 2)), 2)


def _deflated_rounds(
    engine: Engine, method: str, N: int, kind: str, krylov_block: int | None, info: dict
) -> _Rounds:
    """Hutchinson, Hutch++ or krylov: the deflation (if any) and the first probes."""
    if method == "hutchinson":
        empty = engine.zeros()
        st = Deflated(engine, empty, empty, 0.0, kind)
        st.draw(N)
    elif method == "hutch++":
        if N < 3:
            raise ConfigurationError(f"hutch++ needs num_matvecs >= 3, got {N}")
        S = engine.probes(min(N // 3, engine.P))
        Q = orthonormalize(engine.apply(S), space=engine.space)
        Z = engine.apply(Q)
        st = Deflated(engine, Q, Z, exact_part(Q, Z, "trace", engine), kind)
        st.draw(N - engine.num_matvecs)
        info["sketch_dim"] = Q.shape[1]
    else:  # krylov
        if N < 3:
            raise ConfigurationError(f"krylov needs num_matvecs >= 3, got {N}")
        st, kinfo = krylov_deflation(engine, N, kind, krylov_block)
        info.update(kinfo)

    def estimate():
        v, se = st.estimate()
        info["num_samples"] = st.samples.numel()
        return v, se, st.samples

    return _Rounds(estimate, st.draw, 1)


def _adaptive(
    rounds: _Rounds,
    engine: Engine,
    rtol: float | None,
    cap: int,
    step: int,
    snapshot: Callable,
    callback: Callable | None,
) -> tuple[float, float, Tensor]:
    """The initial estimate, then (with ``rtol``) rounds of ``step`` products until
    ``stderr <= rtol |value|`` or the cap; ``callback`` sees every unfinished estimate."""
    value, stderr, samples = rounds.estimate()
    if rtol is None:
        return value, stderr, samples
    if callback is not None:
        callback(snapshot(value, stderr, samples))
    while stderr > rtol * abs(value):
        k = min(step, cap - engine.num_matvecs)
        if k < rounds.cost:
            break
        rounds.extend(k)
        value, stderr, samples = rounds.estimate()
        if callback is not None and stderr > rtol * abs(value):
            callback(snapshot(value, stderr, samples))
    return value, stderr, samples
