"""hesslab: measure, track and shape the Hessian spectrum of neural networks."""

from hesslab.errors import (
    ConfigurationError,
    ConvergenceError,
    DataError,
    HesslabError,
    MemoryLimitError,
    NonDeterminismError,
    NonDifferentiableError,
    NonFiniteError,
    NonSymmetricError,
    OperatorInputError,
    ParameterSelectionError,
    SharedModuleError,
    TargetError,
)
from hesslab.linalg import (
    BoundsResult,
    DiagonalEstimate,
    EigenResult,
    LogdetEstimate,
    SpectralDensity,
    TraceEstimate,
    diagonal,
    eigenpairs,
    frobenius_sq,
    logdet,
    logdet_slq,
    power_iteration,
    spectral_density,
    trace,
    wasserstein1,
    wolkowicz_styan,
)
from hesslab.measures import count_outliers, effective_rank
from hesslab.objective import BatchLoss, LossValue, Objective, batch_loss, derivative_context
from hesslab.operators import (
    ClassStructure,
    DenseOperator,
    GGNOperator,
    GradientMomentOperator,
    HessianOperator,
    LinearOperator,
    as_operator,
    class_structure,
    ggn,
    gradient_moment,
    hessian,
)
from hesslab.params import ParamSpace, layer_groups, select_parameters

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """Lazy exports: ``load_run`` and ``plot`` (they import matplotlib)."""
    if name == "load_run":
        from hesslab.runs import load_run

        return load_run
    if name == "plot":
        import importlib

        return importlib.import_module("hesslab.plot")
    raise AttributeError(f"module 'hesslab' has no attribute {name!r}")


__all__ = [
    "BatchLoss",
    "BoundsResult",
    "ClassStructure",
    "ConfigurationError",
    "ConvergenceError",
    "DataError",
    "DenseOperator",
    "DiagonalEstimate",
    "EigenResult",
    "GGNOperator",
    "GradientMomentOperator",
    "HessianOperator",
    "HesslabError",
    "LinearOperator",
    "LogdetEstimate",
    "LossValue",
    "MemoryLimitError",
    "NonDeterminismError",
    "NonDifferentiableError",
    "NonFiniteError",
    "NonSymmetricError",
    "Objective",
    "OperatorInputError",
    "ParamSpace",
    "ParameterSelectionError",
    "SharedModuleError",
    "SpectralDensity",
    "TargetError",
    "TraceEstimate",
    "__version__",
    "as_operator",
    "batch_loss",
    "class_structure",
    "count_outliers",
    "derivative_context",
    "diagonal",
    "effective_rank",
    "eigenpairs",
    "frobenius_sq",
    "ggn",
    "gradient_moment",
    "hessian",
    "layer_groups",
    "load_run",
    "logdet",
    "logdet_slq",
    "plot",
    "power_iteration",
    "select_parameters",
    "spectral_density",
    "trace",
    "wasserstein1",
    "wolkowicz_styan",
]
