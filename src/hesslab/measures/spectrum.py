"""Measures of a spectrum: number of outliers beyond the bulk, and effective rank.

The Hessian of a trained classifier has a bulk of eigenvalues near zero and a few large
outliers, about one per class (``k`` or ``k - 1`` for ``k`` classes; Sagun et al., 2017;
Papyan, 2018). :func:`count_outliers` counts them from eigenvalues (top-``k`` from
:func:`hesslab.eigenpairs` or a full ``eigvalsh``) or from a spectral density;
:func:`effective_rank` summarises how many directions carry the spectrum's mass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from hesslab.errors import ConfigurationError
from hesslab.linalg.results import rounding_floor

__all__ = ["OutlierCount", "count_outliers", "effective_rank"]

#: Consistency constant that turns a MAD into a standard deviation for Gaussian data.
MAD_TO_STD = 1.4826


@dataclass(frozen=True)
class OutlierCount:
    """Result of :func:`count_outliers`.

    Attributes:
        count: number of eigenvalues above the bulk.
        threshold: eigenvalues ``> threshold`` are the outliers (``"gap"``: midpoint of the
            chosen gap; ``"edge"``: the bulk edge ``median + c * MAD``).
        method: ``"gap"`` or ``"edge"``.
        gaps: ``"gap"``: the ratios ``lambda_i / max(lambda_{i+1}, floor)`` of the candidates,
            largest eigenvalue first; ``"edge"``: the distances of the top values above the
            edge in units of the bulk scale. float64 CPU tensor.
        values: the eigenvalues examined, sorted in decreasing order (float64, CPU).
        info: rule parameters (``min_ratio``, ``rel_floor``, ``c``, ``scale``, ...).
    """

    count: int
    threshold: float
    method: str
    gaps: Tensor
    values: Tensor
    info: dict[str, Any]

    def __int__(self) -> int:
        return self.count


def _as_values(x: Any) -> Tensor:
    if isinstance(x, Tensor):
        v = x.detach().to("cpu", torch.float64)
    elif isinstance(x, np.ndarray) or isinstance(x, (list, tuple)):
        v = torch.as_tensor(np.asarray(x, dtype=np.float64))
    else:
        raise ConfigurationError(
            f"expected eigenvalues as a tensor, array or list, got {type(x).__name__}"
        )
    v = v.reshape(-1)
    if v.numel() == 0:
        raise ConfigurationError("got no eigenvalues; pass at least two values")
    if not bool(torch.isfinite(v).all()):
        raise ConfigurationError("eigenvalues contain NaN or inf; check the eigensolver's result")
    return v


def _density_to_values(density: Any, dimension: int | None) -> Tensor:
    """Quantiles of a spectral density (nodes + weights) as ``P`` representative values."""
    if isinstance(density, tuple) and len(density) == 2:
        nodes, weights = density
    else:
        nodes, weights = getattr(density, "nodes", None), getattr(density, "weights", None)
    if nodes is None or weights is None:
        raise ConfigurationError(
            "pass eigenvalues (tensor/array), a (nodes, weights) pair, or a density object "
            "with .nodes and .weights"
        )
    x = torch.as_tensor(nodes).detach().to("cpu", torch.float64).reshape(-1)
    w = torch.as_tensor(weights).detach().to("cpu", torch.float64).reshape(-1)
    if x.shape != w.shape or x.numel() == 0:
        raise ConfigurationError(f"nodes and weights must match, got {x.shape} and {w.shape}")
    P = dimension
    if P is None:
        P = getattr(density, "dimension", None) or getattr(density, "P", None)
    if P is None:
        raise ConfigurationError("counting outliers from a density needs dimension=P")
    order = torch.argsort(x)
    x, w = x[order], w.clamp_min(0)[order]
    cdf = torch.cumsum(w, 0) / w.sum()
    q = (torch.arange(int(P), dtype=torch.float64) + 0.5) / int(P)
    idx = torch.searchsorted(cdf, q).clamp_max(x.numel() - 1)
    return x[idx]


def count_outliers(
    values_or_density: Tensor | np.ndarray | Any,
    *,
    method: Literal["gap", "edge"] = "gap",
    min_ratio: float = 2.0,
    rel_floor: float = 1e-3,
    max_count: int | None = None,
    c: float = 10.0,
    dimension: int | None = None,
) -> OutlierCount:
    """Count the eigenvalues that stand out above the bulk of a spectrum.

    Only the top of the spectrum is examined (outliers are large positive eigenvalues).

    ``method="gap"`` (default; a log-scale eigengap rule). Sort ``lambda_1 >= lambda_2 >=
    ...``, let ``floor = rel_floor * lambda_1`` and, for every candidate ``i`` with
    ``lambda_i > floor`` (and ``i <= max_count``), the ratio
    ``r_i = lambda_i / max(lambda_{i+1}, floor)``. The count is ``argmax_i r_i`` (the number
    of eigenvalues above the widest gap on a log scale) if ``max_i r_i >= min_ratio``, and 0
    otherwise. The floor keeps the ratio finite near zero, where relative gaps in the bulk
    are meaningless; it also means outliers smaller than ``rel_floor * lambda_1`` are not
    counted. Works on top-``k`` eigenvalues as long as at least one bulk value is included
    (pass ``k`` larger than the count you expect). On the Hessian of a trained 64-32-32-10
    MLP on digits (10 classes) it returns 9, the ``k - 1`` outliers of softmax
    cross-entropy; on Sagun-like spectra with ``k`` outliers it returns ``k``.

    ``method="edge"`` (bulk-edge rule). With the median ``mu`` and the scaled median absolute
    deviation ``sigma = 1.4826 * MAD`` of all values (the bulk dominates both), the count
    is the number of values ``> mu + c * sigma``. Needs the full spectrum (or a density with
    ``dimension``); suits compact bulks (random-matrix-like, as in Sagun et al. 2017's
    synthetic studies). Real Hessian bulks are heavy-tailed at the scale of their MAD, so
    ``"edge"`` over-counts there; use ``"gap"``.

    Args:
        values_or_density: eigenvalues (tensor, array or list; any order), or a spectral
            density as a ``(nodes, weights)`` pair or an object with ``.nodes``/``.weights``
            (then ``P`` quantiles of the density are used as the values).
        method: ``"gap"`` or ``"edge"``.
        min_ratio: ``"gap"``: smallest ratio that counts as a gap (default 2).
        rel_floor: ``"gap"``: floor relative to ``lambda_1`` (default 1e-3).
        max_count: ``"gap"``: largest count considered (default: all candidates).
        c: ``"edge"``: edge at ``median + c * 1.4826 * MAD`` (default 10).
        dimension: ``P``, needed when a density is given without a ``dimension`` attribute.

    Returns:
        :class:`OutlierCount` (``int(result)`` is the count).

    Raises:
        ConfigurationError: empty or non-finite input, or bad parameters.
    """
    if isinstance(values_or_density, (Tensor, np.ndarray, list)):
        v = _as_values(values_or_density)
    else:
        v = _density_to_values(values_or_density, dimension)
    v = torch.sort(v, descending=True).values
    n = v.numel()
    if method == "gap":
        if not (min_ratio > 1.0 and rel_floor > 0):
            raise ConfigurationError("need min_ratio > 1 and rel_floor > 0")
        top = float(v[0])
        info = {"min_ratio": min_ratio, "rel_floor": rel_floor}
        if top <= 0 or n < 2:
            return OutlierCount(0, top, "gap", torch.zeros(0, dtype=torch.float64), v, info)
        floor = rel_floor * top
        k = int((v[:-1] > floor).sum())
        if max_count is not None:
            k = min(k, int(max_count))
        ratios = v[:k] / v[1 : k + 1].clamp_min(floor)
        if k == 0 or float(ratios.max()) < min_ratio:
            return OutlierCount(0, top, "gap", ratios, v, info | {"floor": floor})
        count = int(torch.argmax(ratios)) + 1
        threshold = 0.5 * (float(v[count - 1]) + float(v[count]))
        return OutlierCount(count, threshold, "gap", ratios, v, info | {"floor": floor})
    if method == "edge":
        if not c > 0:
            raise ConfigurationError(f"c must be positive, got {c}")
        mu = float(v.median())
        sigma = MAD_TO_STD * float((v - mu).abs().median())
        edge = mu + c * sigma
        count = int((v > edge).sum())
        scale = sigma if sigma > 0 else math.inf
        dist = (v[: max(count, 1)] - edge) / scale
        info = {"c": c, "median": mu, "scale": sigma}
        return OutlierCount(count, edge, "edge", dist, v, info)
    raise ConfigurationError(f"unknown method {method!r}; choose 'gap' or 'edge'")


def effective_rank(
    values: Tensor | np.ndarray,
    *,
    method: Literal["entropy", "participation", "threshold"] = "entropy",
    negative: Literal["abs", "clip"] = "abs",
    rtol: float = 1e-3,
    atol: float | None = None,
) -> float:
    """Effective rank of a spectrum ``lambda_1..lambda_n`` (any order).

    Negative eigenvalues are handled explicitly by ``negative``: ``"abs"`` (default) uses
    ``|lambda_i|`` (curvature magnitude in every direction), ``"clip"`` uses
    ``max(lambda_i, 0)`` (positive curvature only). Values that are zero within their
    error, ``|lambda_i| <= atol``, count as exactly 0 (their sign and size are rounding:
    an exact zero eigenvalue computed as ``±1e-17``). With ``w_i`` the resulting weights:

    * ``"entropy"`` (Roy & Vetterli, EUSIPCO 2007): ``exp(-sum_i p_i log p_i)`` with
      ``p_i = w_i / sum_j w_j``; equals ``r`` for ``r`` equal nonzero values.
    * ``"participation"``: participation ratio ``(sum_i w_i)^2 / sum_i w_i^2``; also ``r``
      for ``r`` equal values, and more dominated by the largest ones.
    * ``"threshold"``: number of ``w_i > rtol * max_j w_j`` (an integer, as a float).

    Returns 0.0 when every weight is 0.

    Args:
        values: the eigenvalues (tensor, array or list).
        method: ``"entropy"``, ``"participation"`` or ``"threshold"``.
        negative: ``"abs"`` or ``"clip"``.
        rtol: ``"threshold"``: relative cut.
        atol: absolute error bound of the values, e.g. ``res.error_bounds(P).max()`` of
            an :class:`~hesslab.linalg.results.EigenResult`; default: the float64
            rounding of the largest, ``rounding_floor(max |lambda|, n)`` (which removes
            rounding residues next to a nonzero top, but cannot tell that a spectrum
            that is all rounding noise is zero: pass ``atol`` then).

    Raises:
        ConfigurationError: empty or non-finite input, unknown method or handling, or a
            negative ``atol``.
    """
    v = _as_values(values)
    if atol is None:
        atol = rounding_floor(float(v.abs().max()), v.numel())
    if not atol >= 0:
        raise ConfigurationError(f"atol must be a non-negative error bound, got {atol}")
    v = torch.where(v.abs() <= atol, torch.zeros_like(v), v)
    if negative == "abs":
        w = v.abs()
    elif negative == "clip":
        w = v.clamp_min(0.0)
    else:
        raise ConfigurationError(f"negative must be 'abs' or 'clip', got {negative!r}")
    total = float(w.sum())
    if total == 0.0:
        return 0.0
    if method == "entropy":
        p = w / total
        p = p[p > 0]
        return float(torch.exp(-(p * p.log()).sum()))
    if method == "participation":
        return total * total / float((w * w).sum())
    if method == "threshold":
        if not rtol > 0:
            raise ConfigurationError(f"rtol must be positive, got {rtol}")
        return float((w > rtol * float(w.max())).sum())
    raise ConfigurationError(
        f"unknown method {method!r}; choose 'entropy', 'participation' or 'threshold'"
    )


# Short notebook-friendly reprs (key numbers, not the tensors): see hesslab.display.
from hesslab import display as _display  # noqa: E402

_display.attach(OutlierCount, _display.outlier_summary)
