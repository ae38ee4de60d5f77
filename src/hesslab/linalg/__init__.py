"""Algorithms over any linear operator: eigenpairs, traces, densities, log-dets, bounds."""

from hesslab.linalg.results import (
    BoundsResult,
    DiagonalEstimate,
    EigenResult,
    LogdetEstimate,
    TraceEstimate,
)

__all__ = ["BoundsResult", "DiagonalEstimate", "EigenResult", "LogdetEstimate", "TraceEstimate"]
