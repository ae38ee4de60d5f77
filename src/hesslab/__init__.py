"""hesslab: measure, track and shape the Hessian spectrum of neural networks."""

from hesslab.errors import (
    ConfigurationError,
    ConvergenceError,
    DataError,
    HesslabError,
    NonDeterminismError,
    OperatorInputError,
    ParameterSelectionError,
)
from hesslab.objective import BatchLoss, Objective, batch_loss
from hesslab.operators import (
    DenseOperator,
    GGNOperator,
    GradientMomentOperator,
    HessianOperator,
    LinearOperator,
    as_operator,
    ggn,
    gradient_moment,
    hessian,
)
from hesslab.params import ParamSpace, layer_groups, select_parameters

__version__ = "0.1.0"

__all__ = [
    "BatchLoss",
    "ConfigurationError",
    "ConvergenceError",
    "DataError",
    "DenseOperator",
    "GGNOperator",
    "GradientMomentOperator",
    "HessianOperator",
    "HesslabError",
    "LinearOperator",
    "NonDeterminismError",
    "Objective",
    "OperatorInputError",
    "ParamSpace",
    "ParameterSelectionError",
    "__version__",
    "as_operator",
    "batch_loss",
    "ggn",
    "gradient_moment",
    "hessian",
    "layer_groups",
    "select_parameters",
]
