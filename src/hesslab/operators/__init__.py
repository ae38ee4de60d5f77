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
from hesslab.operators.class_structure import (
    ClassStructure,
    LowRankOperator,
    WithinClassOperator,
    class_means,
    class_structure,
    subspace_fraction,
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
    "ClassStructure",
    "CurvatureOperator",
    "DeflatedOperator",
    "DenseOperator",
    "FunctionOperator",
    "GGNOperator",
    "GradientMomentOperator",
    "HessianOperator",
    "IdentityOperator",
    "LinearOperator",
    "LowRankOperator",
    "RestrictedOperator",
    "ScaledOperator",
    "ScipyOperator",
    "SumOperator",
    "WithinClassOperator",
    "as_operator",
    "class_means",
    "class_structure",
    "clear_mode_memo",
    "ggn",
    "gradient_moment",
    "hessian",
    "per_sample_gradients",
    "scale",
    "shift",
    "subspace_fraction",
]
