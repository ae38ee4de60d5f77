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
    "NonDeterminismError",
    "OperatorInputError",
    "ParameterSelectionError",
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
