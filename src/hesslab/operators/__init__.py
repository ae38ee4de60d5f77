"""Curvature operators: symmetric linear maps over the flat parameter vector."""

from hesslab.operators.base import (
    DeflatedOperator,
    DenseOperator,
    FunctionOperator,
    IdentityOperator,
    LinearOperator,
    ScaledOperator,
    ScipyOperator,
    SumOperator,
    as_operator,
    scale,
    shift,
)

__all__ = [
    "DeflatedOperator",
    "DenseOperator",
    "FunctionOperator",
    "IdentityOperator",
    "LinearOperator",
    "ScaledOperator",
    "ScipyOperator",
    "SumOperator",
    "as_operator",
    "scale",
    "shift",
]
