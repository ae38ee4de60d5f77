"""The look shared by every figure: size, resolution, colours, fonts, axes and legends.

Helpers of :mod:`hesslab.report.plots` (and :mod:`hesslab.plot`): a fresh figure on the
Agg canvas (never pyplot's global state), one axes style, and values prepared for log
and symmetric-log axes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from hesslab.errors import DataError
from hesslab.io import to_numpy
from hesslab.linalg.results import rounding_floor

__all__ = [
    "COLORS",
    "DPI",
    "RC",
    "add_legend",
    "as_vector",
    "log_axis_values",
    "new_figure",
    "rounding_zeros",
    "style_axes",
    "symlog_axis",
    "target_axes",
]

DPI = 150
"""Resolution (dots per inch) of saved PNG figures."""

COLORS = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]
RC = {
    "font.size": 9.5,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def new_figure(width: float = 6.4, height: float = 4.0, **subplot_kw: Any) -> tuple[Figure, Any]:
    """A figure on an Agg canvas with one axes (or a grid, see ``nrows``/``ncols``)."""
    import matplotlib

    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(**subplot_kw)
    return fig, axes


def target_axes(ax: Any | None, width: float = 6.4, height: float = 4.0) -> tuple[Figure, Any]:
    """``(figure, axes)``: the figure of a caller's ``ax``, or a fresh one (:func:`new_figure`)."""
    if ax is None:
        return new_figure(width, height)
    return ax.figure, ax


def style_axes(ax: Any, *, title: str | None, xlabel: str | None, ylabel: str | None) -> None:
    """Title, axis labels, a light major grid and no top/right spines."""
    if title:
        ax.set_title(title, fontsize=RC["axes.titlesize"])
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=RC["axes.labelsize"])
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=RC["axes.labelsize"])
    ax.grid(True, which="major", alpha=0.3, linewidth=0.6)
    ax.tick_params(labelsize=RC["font.size"])
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def add_legend(ax: Any) -> None:
    """A frameless legend, when any artist has a label."""
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=RC["legend.fontsize"], frameon=False)


def as_vector(x: Any, name: str) -> np.ndarray:
    """``x`` (tensor, array, list) as a float64 ``[T]`` array; ``[1, T]``/``[T, 1]`` are flattened.

    Raises:
        DataError: ``x`` is not one-dimensional; the message names it ``name``.
    """
    arr = np.atleast_1d(to_numpy(x).astype(np.float64, copy=False))
    if arr.ndim > 1 and arr.size == max(arr.shape):  # [1, T] or [T, 1]
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {tuple(arr.shape)}")
    return arr


def rounding_zeros(values: np.ndarray) -> np.ndarray:
    """Mask of the entries that are zero within float64 rounding of the largest one.

    ``|v| <= rounding_floor(max |v|, n)`` (:func:`hesslab.linalg.results.rounding_floor`):
    such an entry (an exact zero eigenvalue computed as ``±1e-17``, a loss at machine
    precision) has no meaningful sign or magnitude, and a log axis must not depend on it.
    """
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=bool)
    top = float(np.abs(values[finite]).max())
    return finite & (np.abs(values) <= rounding_floor(top, int(finite.sum())))


def log_axis_values(values: Any, *, shared_scale: bool = True) -> np.ndarray:
    """``values`` for a log axis: entries ``<= 0`` (within rounding) become NaN (not drawn).

    Matplotlib drops non-positive values on a log axis but draws a rounding residue such
    as ``+1e-17`` and stretches the axis down to it, so the picture would depend on the
    sign rounding happened to give. With ``shared_scale`` (values computed on one scale,
    e.g. per-layer curvatures or a loss landscape) entries that are zero within rounding
    of the largest (:func:`rounding_zeros`) are gaps too, whatever their sign; without it
    (a time series whose values each carry their own relative error, e.g. a loss curve
    falling over many decades) only entries ``<= 0`` are.
    """
    out = np.array(to_numpy(values), dtype=np.float64)
    zero = out <= 0
    if shared_scale:
        zero |= rounding_zeros(out)
    out[zero] = np.nan
    return out


def symlog_axis(ax: Any, values: np.ndarray) -> None:
    """Symmetric-log y axis with a decade-aligned linear region and ticks only at decades.

    The linear threshold is the decade at or below the smallest nonzero magnitude (but at
    most 4 decades below the largest), so tiny eigenvalues stay visible; ticks sit at 0
    and at ``±10^n`` outside the linear region, so labels never crowd around zero.
    Values that are zero within rounding (:func:`rounding_zeros`) count as 0.
    """
    finite = np.where(rounding_zeros(values), 0.0, values)[np.isfinite(values)]
    mags = np.abs(finite[finite != 0])
    if mags.size == 0:
        ax.set_yscale("symlog", linthresh=1.0)
        return
    top = math.floor(math.log10(mags.max()))
    low = max(math.floor(math.log10(mags.min())), top - 4)
    linthresh = 10.0**low
    ax.set_yscale("symlog", linthresh=linthresh, linscale=0.5)
    decades = [10.0**e for e in range(low, top + 2)]
    ticks = [0.0]
    if (finite > 0).any():
        ticks += decades
    if (finite < 0).any():
        ticks += [-d for d in decades]
    ax.yaxis.set_major_locator(FixedLocator(sorted(ticks)))
    ax.yaxis.set_minor_locator(NullLocator())
    hi = max(finite.max(), 0.0)
    lo = min(finite.min(), 0.0)
    ax.set_ylim(lo * 1.6 if lo < 0 else -0.3 * linthresh, hi * 1.6 if hi > 0 else 0.3 * linthresh)
