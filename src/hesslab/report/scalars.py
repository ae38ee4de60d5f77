"""Result dataclasses flattened into the scalar records of a run folder.

:meth:`hesslab.report.RunDir.add_result` turns a result into scalars by the rule
registered for its type (:func:`register_scalars`; the first match along the type's
MRO wins):

* :func:`value_scalar` (``TraceEstimate``, ``LogdetEstimate``, ``InvariantEstimate``,
  ``SharpnessResult``): one scalar ``name`` with the result's ``stderr``.
* :func:`indexed_scalars` (``EigenResult``, ``DiagonalEstimate``): scalars ``name[0]``,
  ``name[1]``, ... (when at most ``max_scalars``), each with its ``stderr`` entry,
  ``residual_norm`` and ``converged`` flag.
* :func:`field_scalars` (``BoundsResult``): one scalar ``name.<field>`` per numeric
  field, with ``<field>_stderr`` as its error and ``<field>_interval`` in its
  diagnostics.
* :func:`no_scalars` (``SpectralDensity``): arrays only.

A type with no registered rule (a mapping, another library's result) gets
:func:`guess_scalars`, which picks one of the first three rules from the fields it has.

Every scalar carries the result's diagnostics (:func:`result_diagnostics`): the fields
that say how the number was computed (``num_matvecs``, ``seconds``, ``method``, ``tol``,
...) and the scalar entries of ``info``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from hesslab.errors import ConfigurationError
from hesslab.io import to_numpy

__all__ = [
    "DIAGNOSTIC_FIELDS",
    "Scalar",
    "ScalarRule",
    "field_scalars",
    "flatten_result",
    "guess_scalars",
    "indexed_scalars",
    "is_array",
    "no_scalars",
    "register_scalars",
    "result_diagnostics",
    "result_fields",
    "scalar_value",
    "value_scalar",
]

#: Result fields that describe how a number was computed rather than being one.
DIAGNOSTIC_FIELDS = (
    "num_matvecs",
    "seconds",
    "method",
    "which",
    "tol",
    "norm_estimate",
    "num_restarts",
    "num_steps",
    "rank",
    "shift",
    "dimension",
    "peak_memory_bytes",
)


class Scalar(NamedTuple):
    """One scalar of a result: what :meth:`~hesslab.report.RunDir.add_scalar` records."""

    name: str
    value: Any
    stderr: Any
    diagnostics: dict[str, Any]


#: ``rule(name, fields, diagnostics, max_scalars) -> scalars`` of one result.
ScalarRule = Callable[[str, Mapping[str, Any], Mapping[str, Any], int], list[Scalar]]


def is_array(x: Any) -> bool:
    """A tensor or ndarray with at least one dimension."""
    return isinstance(x, (torch.Tensor, np.ndarray)) and x.ndim > 0


def scalar_value(x: Any, what: str) -> Any:
    """A Python bool/int/float/str/None from a number-like value.

    Raises:
        ConfigurationError: ``x`` is an array with more than one entry.
    """
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (torch.Tensor, np.ndarray)):
        numel = x.size if isinstance(x, np.ndarray) else x.numel()
        if numel == 1:
            return x.item()
        raise ConfigurationError(
            f"{what} must be a single number, got an array of shape {tuple(x.shape)}; "
            "use add_array (or add_result) for arrays"
        )
    return x


def result_fields(result: Any) -> dict[str, Any]:
    """The fields of a dataclass, mapping or object with attributes, by name."""
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    if isinstance(result, Mapping):
        return dict(result)
    if hasattr(result, "__dict__"):
        return {k: v for k, v in vars(result).items() if not k.startswith("_")}
    raise ConfigurationError(
        f"add_result needs a dataclass, mapping or object with attributes, got "
        f"{type(result).__name__}; use add_scalar or add_array instead"
    )


def result_diagnostics(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`DIAGNOSTIC_FIELDS` present, then the scalar entries of ``info``."""
    diag = {k: fields[k] for k in DIAGNOSTIC_FIELDS if k in fields and not is_array(fields[k])}
    info = fields.get("info")
    if isinstance(info, Mapping):
        for key, val in info.items():
            val = scalar_value(val, key) if not is_array(val) else None
            if isinstance(val, (bool, int, float, str)) and str(key) not in diag:
                diag[str(key)] = val
    return diag


def _flat(x: Any) -> np.ndarray | None:
    return to_numpy(x).reshape(-1) if is_array(x) else None


def value_scalar(
    name: str, fields: Mapping[str, Any], diag: Mapping[str, Any], max_scalars: int
) -> list[Scalar]:
    """One scalar ``name``: the field ``value`` with the field ``stderr``."""
    return [Scalar(name, fields.get("value"), fields.get("stderr"), dict(diag))]


def indexed_scalars(
    name: str, fields: Mapping[str, Any], diag: Mapping[str, Any], max_scalars: int
) -> list[Scalar]:
    """Scalars ``name[i]`` of the array ``values`` (none when it has more than ``max_scalars``).

    Entry ``i`` takes ``stderr[i]`` as its error and ``residual_norms[i]`` and
    ``converged[i]`` (when those arrays exist) as the diagnostics ``residual_norm`` and
    ``converged``.
    """
    values = _flat(fields.get("values"))
    if values is None or values.size > max_scalars:
        return []
    err = _flat(fields.get("stderr"))
    res = _flat(fields.get("residual_norms"))
    conv = _flat(fields.get("converged"))
    out = []
    for i, vi in enumerate(values):
        d = dict(diag)
        if res is not None and i < res.size:
            d["residual_norm"] = res[i]
        if conv is not None and i < conv.size:
            d["converged"] = bool(conv[i])
        e = err[i] if err is not None and i < err.size else None
        out.append(Scalar(f"{name}[{i}]", vi, e, d))
    return out


def field_scalars(
    name: str, fields: Mapping[str, Any], diag: Mapping[str, Any], max_scalars: int
) -> list[Scalar]:
    """One scalar ``name.<field>`` per numeric, non-diagnostic field.

    ``<field>_stderr`` is its error and ``<field>_interval`` goes into its diagnostics
    as ``interval``; booleans, text and ``info`` are skipped.
    """
    out = []
    for key, val in fields.items():
        if key in diag or key.endswith(("_stderr", "_interval")) or key == "info":
            continue
        if isinstance(val, bool) or not isinstance(val, (int, float, np.number)):
            continue
        d = dict(diag)
        interval = fields.get(f"{key}_interval")
        if interval is not None:
            d["interval"] = interval
        out.append(Scalar(f"{name}.{key}", val, fields.get(f"{key}_stderr"), d))
    return out


def no_scalars(
    name: str, fields: Mapping[str, Any], diag: Mapping[str, Any], max_scalars: int
) -> list[Scalar]:
    """No scalars: the result is kept as its arrays and summary only."""
    return []


def guess_scalars(
    name: str, fields: Mapping[str, Any], diag: Mapping[str, Any], max_scalars: int
) -> list[Scalar]:
    """The rule for an unregistered type, chosen from its fields.

    A scalar ``value`` gives :func:`value_scalar`, an array ``values``
    :func:`indexed_scalars`, anything else :func:`field_scalars`.
    """
    value, values = fields.get("value"), fields.get("values")
    if value is not None and not is_array(value):
        return value_scalar(name, fields, diag, max_scalars)
    if values is not None and is_array(values):
        return indexed_scalars(name, fields, diag, max_scalars)
    return field_scalars(name, fields, diag, max_scalars)


_RULES: dict[type, ScalarRule] = {}


def register_scalars(cls: type, rule: ScalarRule) -> None:
    """Flatten results of type ``cls`` (and its subclasses) with ``rule``.

    Example::

        register_scalars(MyResult, value_scalar)
    """
    if not isinstance(cls, type) or not callable(rule):
        raise ConfigurationError(
            f"register_scalars needs a class and a rule function, got {cls!r} and {rule!r}"
        )
    _RULES[cls] = rule


@functools.cache
def _register_builtin() -> None:
    # Imported here: the result modules need not load with the report package.
    from hesslab.linalg.density import SpectralDensity
    from hesslab.linalg.results import (
        BoundsResult,
        DiagonalEstimate,
        EigenResult,
        LogdetEstimate,
        TraceEstimate,
    )
    from hesslab.measures.sharpness import InvariantEstimate, SharpnessResult

    builtin: dict[type, ScalarRule] = {
        EigenResult: indexed_scalars,
        DiagonalEstimate: indexed_scalars,
        TraceEstimate: value_scalar,
        LogdetEstimate: value_scalar,
        InvariantEstimate: value_scalar,
        SharpnessResult: value_scalar,
        BoundsResult: field_scalars,
        SpectralDensity: no_scalars,
    }
    for cls, rule in builtin.items():
        _RULES.setdefault(cls, rule)


def _rule_for(result: Any) -> ScalarRule:
    _register_builtin()
    for cls in type(result).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    return guess_scalars


def flatten_result(
    result: Any, name: str, *, fields: Mapping[str, Any] | None = None, max_scalars: int = 32
) -> list[Scalar]:
    """The scalars of ``result`` under ``name``, by the rule registered for its type.

    Args:
        result: a result dataclass, mapping or object with attributes.
        name: the name of the result in its section (the scalars' name prefix).
        fields: ``result_fields(result)`` when the caller has it already.
        max_scalars: the most entries an array-valued result is split into.
    """
    fields = result_fields(result) if fields is None else fields
    return _rule_for(result)(name, fields, result_diagnostics(fields), max_scalars)
