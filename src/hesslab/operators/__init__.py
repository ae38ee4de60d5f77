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
from hesslab.operators.curvature import (
    BlockDiagonalOperator,
    CurvatureOperator,
    RestrictedOperator,
)
from hesslab.operators.ggn import GGNOperator, ggn
from hesslab.operators.hessian import HESSIAN_MODES, HessianOperator, clear_mode_memo, hessian
from hesslab.operators.moment import (
    GradientMomentOperator,
    gradient_moment,
    per_sample_gradients,
)

__all__ = [
    "HESSIAN_MODES",
    "BlockDiagonalOperator",
    "CurvatureOperator",
    "DeflatedOperator",
    "DenseOperator",
    "FunctionOperator",
    "GGNOperator",
    "GradientMomentOperator",
    "HessianOperator",
    "IdentityOperator",
    "LinearOperator",
    "RestrictedOperator",
    "ScaledOperator",
    "ScipyOperator",
    "SumOperator",
    "as_operator",
    "clear_mode_memo",
    "ggn",
    "gradient_moment",
    "hessian",
    "per_sample_gradients",
    "scale",
    "shift",
]
