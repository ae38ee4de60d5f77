"""Exceptions raised by hesslab.

Every error hesslab raises on bad input is a :class:`HesslabError` subclass whose
message says what went wrong *and what to do about it*.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "ConvergenceError",
    "DataError",
    "HesslabError",
    "MemoryLimitError",
    "NonDeterminismError",
    "NonDifferentiableError",
    "NonFiniteError",
    "NonSymmetricError",
    "OperatorInputError",
    "ParameterSelectionError",
    "SharedModuleError",
    "TargetError",
]


class HesslabError(Exception):
    """Base class of every error raised by hesslab."""


class ConfigurationError(HesslabError, ValueError):
    """An argument has an invalid value or combination of values."""


class OperatorInputError(HesslabError, ValueError):
    """A vector or block passed to an operator has the wrong shape, dtype or device."""


class ParameterSelectionError(HesslabError, ValueError):
    """A parameter selection (names, glob patterns, modules) matched nothing or is invalid."""


class DataError(HesslabError, ValueError):
    """Data passed to hesslab cannot be used (empty, wrong batch format, bad file)."""


class NonDeterminismError(HesslabError, RuntimeError):
    """The objective is not a deterministic function of the parameters.

    Raised by :class:`hesslab.Objective`'s determinism check when two passes over the
    data at the same parameters disagree, or when the model has train-mode BatchNorm or
    active dropout.
    """


class ConvergenceError(HesslabError, RuntimeError):
    """An iterative method was asked to fail loudly and did not converge.

    Raised by :func:`hesslab.eigenpairs` with ``on_nonconvergence="raise"`` when some
    wanted pair missed the tolerance within the budget; the partial result (what the
    default ``"return"`` would have returned) is the ``result`` attribute.
    """

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class TargetError(DataError):
    """Targets do not fit a built-in loss: labels out of range, or a shape that would broadcast."""


class NonFiniteError(HesslabError, FloatingPointError):
    """A loss, gradient, product or tensor holds NaN or inf (the message names where)."""


class NonDifferentiableError(ConfigurationError):
    """The loss is not a differentiable function of the selected parameters.

    Raised when the gradient graph is disconnected (an ``argmax``, a ``.detach()``, integer
    outputs, ...): every curvature would silently be zero.
    """


class NonSymmetricError(ConfigurationError):
    """A method for symmetric operators was given an operator known to be non-symmetric."""


class MemoryLimitError(ConfigurationError):
    """An operation would allocate more memory than its limit (the message gives the size)."""


class SharedModuleError(ConfigurationError):
    """A module or parameter is used at several places of a model where that is unsupported."""
