"""Algorithms over any linear operator: eigenpairs, traces, densities, log-dets, bounds.

Every function accepts a :class:`hesslab.LinearOperator`, a square tensor or array, or a
SciPy linear operator, and returns a frozen result carrying its own diagnostics.
"""

from hesslab.linalg.bounds import wolkowicz_styan
from hesslab.linalg.density import SpectralDensity, spectral_density, wasserstein1
from hesslab.linalg.diagonal import diagonal
from hesslab.linalg.lanczos import eigenpairs
from hesslab.linalg.logdet import logdet, logdet_slq
from hesslab.linalg.power import power_iteration
from hesslab.linalg.results import (
    BoundsResult,
    DiagonalEstimate,
    EigenResult,
    LogdetEstimate,
    TraceEstimate,
)
from hesslab.linalg.trace import frobenius_sq, trace

__all__ = [
    "BoundsResult",
    "DiagonalEstimate",
    "EigenResult",
    "LogdetEstimate",
    "SpectralDensity",
    "TraceEstimate",
    "diagonal",
    "eigenpairs",
    "frobenius_sq",
    "logdet",
    "logdet_slq",
    "power_iteration",
    "spectral_density",
    "trace",
    "wasserstein1",
    "wolkowicz_styan",
]
