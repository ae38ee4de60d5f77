"""Frozen result dataclasses returned by the algorithms in :mod:`hesslab.linalg`.

Every result carries its own diagnostics: how many operator columns were applied
(``num_matvecs``; a block product with ``K`` columns counts ``K``), the wall time
(``seconds``), and its accuracy (residual norms and converged flags, or a standard error).
Tensors in results are float64 on the CPU unless stated otherwise. ``peak_memory_bytes``
is the call's peak memory beyond its start (CUDA allocated tensors, or CPU resident set;
:mod:`hesslab.linalg.memory` says what exactly), ``None`` for a result made by hand or
inside another measured call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "ROUNDING_FACTOR",
    "BoundsResult",
    "DiagonalEstimate",
    "EigenResult",
    "LogdetEstimate",
    "TraceEstimate",
    "rounding_floor",
]

#: Safety factor ``c`` of :func:`rounding_floor` (measured: a zero eigenvalue of a dense
#: float64 test matrix, P = 24..400, comes out within ``0.65 sqrt(P) eps ||A||`` of 0).
ROUNDING_FACTOR = 10.0


def rounding_floor(norm: float, size: int, dtype: torch.dtype = torch.float64) -> float:
    """Rounding error of an eigenvalue computed from products with a ``[P, P]`` operator.

    A computed product is ``(A + E) x`` with ``||E|| ~ sqrt(P) eps ||A||`` (the typical
    norm-wise rounding error of a length-``P`` inner product, Higham 2002, "Accuracy and
    Stability of Numerical Algorithms", sec. 3.1); the eigenvalues of ``A + E`` lie within
    ``||E||`` of those of ``A`` (Weyl), and no residual computed from the products can see
    ``E``. Returns ``c sqrt(P) eps(dtype) norm`` with ``c =`` :data:`ROUNDING_FACTOR`.

    Args:
        norm: ``||A||_2`` or an estimate of it.
        size: ``P``.
        dtype: the dtype the products are computed in.
    """
    return ROUNDING_FACTOR * math.sqrt(max(int(size), 1)) * torch.finfo(dtype).eps * abs(norm)


@dataclass(frozen=True)
class EigenResult:
    """Eigenpairs of a symmetric operator.

    Attributes:
        values: ``[k]`` eigenvalue estimates (Ritz values), ordered as requested by
            ``which`` (largest first for ``"largest"``/``"magnitude"``, smallest first for
            ``"smallest"``).
        vectors: ``[P, k]`` unit-norm eigenvector estimates, in the operator's dtype and on
            the operator's device (``None`` if not requested).
        residual_norms: ``[k]`` ``||A v - lambda v||`` for each pair (true or Ritz residual,
            see ``method``).
        converged: ``[k]`` bool, ``residual_norms <= tol * norm_estimate``.
        num_matvecs: operator columns applied.
        seconds: wall time.
        method: the algorithm, e.g. ``"lanczos"``, ``"block-lanczos"``, ``"power"``.
        which: ``"largest"``, ``"smallest"`` or ``"magnitude"``.
        tol: requested relative residual tolerance.
        norm_estimate: estimate of ``||A||_2`` used to scale ``tol``.
        num_restarts: restarts performed.
        info: free-form extra diagnostics.
    """

    values: Tensor
    vectors: Tensor | None
    residual_norms: Tensor
    converged: Tensor
    num_matvecs: int
    seconds: float
    method: str
    which: str
    tol: float
    norm_estimate: float
    num_restarts: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    #: Peak memory of the call beyond its start, bytes (see :mod:`hesslab.linalg.memory`).
    peak_memory_bytes: int | None = None

    @property
    def all_converged(self) -> bool:
        """True when every requested pair met the tolerance."""
        return bool(self.converged.all())

    def error_bounds(self, size: int, dtype: torch.dtype = torch.float64) -> Tensor:
        """``[k]`` absolute error bounds of ``values``: ``residual_i + rounding_floor``.

        For a symmetric ``A`` every interval ``[theta_i - r_i, theta_i + r_i]`` (``r_i`` the
        residual norm) holds an eigenvalue of the operator the products computed
        (Parlett, 1998, "The Symmetric Eigenvalue Problem", Thm. 4.5.1); the products'
        own rounding adds :func:`rounding_floor` (``||A||`` estimated by
        ``norm_estimate``). A value with ``|theta_i| <= bound_i`` is zero within its error.

        Args:
            size: ``P``, the operator's size.
            dtype: the dtype of the operator's products.
        """
        floor = rounding_floor(self.norm_estimate, size, dtype)
        return self.residual_norms.to(torch.float64).abs() + floor


@dataclass(frozen=True)
class TraceEstimate:
    """A stochastic (or exact) estimate of a trace-like scalar, ``tr(A)`` or ``tr(A^2)``.

    Attributes:
        value: the estimate.
        stderr: its standard error (0 for exact results).
        num_matvecs: operator columns applied.
        seconds: wall time.
        method: ``"hutchinson"``, ``"hutch++"``, ``"xtrace"``, ``"exact"``, ...
        samples: per-probe (or per-leave-one-out) values used for ``stderr``, if any.
        info: free-form extra diagnostics.
    """

    value: float
    stderr: float
    num_matvecs: int
    seconds: float
    method: str
    samples: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    #: Peak memory of the call beyond its start, bytes (see :mod:`hesslab.linalg.memory`).
    peak_memory_bytes: int | None = None

    @property
    def relative_stderr(self) -> float:
        """``stderr / |value|`` (``inf`` when the value is 0)."""
        return self.stderr / abs(self.value) if self.value != 0 else math.inf

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """Normal-approximation confidence interval ``value +- z * stderr``."""
        return (self.value - z * self.stderr, self.value + z * self.stderr)


@dataclass(frozen=True)
class DiagonalEstimate:
    """An estimate of ``diag(A)``: ``values`` and per-entry ``stderr``, both ``[P]``."""

    values: Tensor
    stderr: Tensor
    num_matvecs: int
    seconds: float
    method: str
    info: dict[str, Any] = field(default_factory=dict)
    #: Peak memory of the call beyond its start, bytes (see :mod:`hesslab.linalg.memory`).
    peak_memory_bytes: int | None = None


@dataclass(frozen=True)
class LogdetEstimate:
    """An estimate of a log-determinant.

    ``method == "eigenpairs"``: ``sum(log(values))`` over the top-``rank`` eigenvalues
    (``values`` holds them); ``method == "slq"``: ``tr log(A + shift I)`` by stochastic
    Lanczos quadrature with its standard error.
    """

    value: float
    stderr: float
    num_matvecs: int
    seconds: float
    method: str
    rank: int | None = None
    shift: float = 0.0
    values: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    #: Peak memory of the call beyond its start, bytes (see :mod:`hesslab.linalg.memory`).
    peak_memory_bytes: int | None = None


@dataclass(frozen=True)
class BoundsResult:
    """Wolkowicz–Styan bounds on the extreme eigenvalues from ``tr A`` and ``tr A^2``.

    With ``m = tr(A)/P`` and ``s^2 = tr(A^2)/P - m^2`` (Wolkowicz & Styan, 1980):
    ``m + s/sqrt(P-1) <= lambda_max <= m + s sqrt(P-1)`` and
    ``m - s sqrt(P-1) <= lambda_min <= m - s/sqrt(P-1)``.

    ``*_interval`` fields give each bound's range when the traces carry a standard error
    (``z`` standard errors on each trace), so the effect of estimation error is explicit.
    """

    lambda_max_lower: float
    lambda_max_upper: float
    lambda_min_lower: float
    lambda_min_upper: float
    mean: float
    std: float
    dimension: int
    trace: float
    trace_sq: float
    trace_stderr: float = 0.0
    trace_sq_stderr: float = 0.0
    lambda_max_upper_interval: tuple[float, float] | None = None
    lambda_max_lower_interval: tuple[float, float] | None = None
    lambda_min_lower_interval: tuple[float, float] | None = None
    lambda_min_upper_interval: tuple[float, float] | None = None
    num_matvecs: int = 0
    seconds: float = 0.0
    #: Warnings about the inputs, e.g. ``s^2 < 0`` from noisy traces clamped to 0.
    notes: tuple[str, ...] = ()
    #: Peak memory of the call beyond its start, bytes (see :mod:`hesslab.linalg.memory`).
    peak_memory_bytes: int | None = None


def to_cpu64(x: Tensor) -> Tensor:
    """Detach and move a tensor to float64 on the CPU (the dtype of result fields)."""
    return x.detach().to(device="cpu", dtype=torch.float64)


# Short notebook-friendly reprs (key numbers, not the tensors): see hesslab.display.
from hesslab import display as _display  # noqa: E402

_display.attach(EigenResult, _display.eigen_summary)
_display.attach(TraceEstimate, _display.scalar_summary)
_display.attach(DiagonalEstimate, _display.diagonal_summary)
_display.attach(LogdetEstimate, _display.logdet_summary)
_display.attach(BoundsResult, _display.bounds_summary)
