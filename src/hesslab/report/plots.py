"""Pure plotting functions: arrays in, :class:`matplotlib.figure.Figure` out.

These draw from numbers (tensors, arrays, lists); :mod:`hesslab.plot` draws from hesslab
results (densities, eigenpairs, monitor measurements, run folders) by calling them.

Each function builds a fresh figure on the Agg canvas (or draws into a caller's ``ax=``
where it takes one) without touching pyplot's global
state (no current figure, no backend switch), so they are safe in libraries, threads and
headless servers. Inputs may be torch tensors, numpy arrays or lists. Save a figure with
:meth:`hesslab.report.RunDir.add_figure` or ``fig.savefig(path, dpi=150)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from hesslab.errors import DataError
from hesslab.io import to_numpy
from hesslab.linalg.results import rounding_floor

__all__ = [
    "DPI",
    "log_axis_values",
    "plot_density",
    "plot_eigenvalues",
    "plot_heatmap",
    "plot_layer_summary",
    "plot_line_scan",
    "plot_quantile_bands",
    "plot_series",
    "plot_spectra_comparison",
]

DPI = 150
"""Resolution (dots per inch) of saved PNG figures."""

_COLORS = [
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
_RC = {
    "font.size": 9.5,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def _figure(width: float = 6.4, height: float = 4.0, **subplot_kw: Any) -> tuple[Figure, Any]:
    """A figure on an Agg canvas with one axes (or a grid, see ``nrows``/``ncols``)."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(**subplot_kw)
    return fig, axes


def _target(ax: Any | None, width: float = 6.4, height: float = 4.0) -> tuple[Figure, Any]:
    """``(figure, axes)``: the figure of a caller's ``ax``, or a fresh one (:func:`_figure`)."""
    if ax is None:
        return _figure(width, height)
    return ax.figure, ax


def _style(ax: Any, *, title: str | None, xlabel: str | None, ylabel: str | None) -> None:
    if title:
        ax.set_title(title, fontsize=_RC["axes.titlesize"])
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=_RC["axes.labelsize"])
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=_RC["axes.labelsize"])
    ax.grid(True, which="major", alpha=0.3, linewidth=0.6)
    ax.tick_params(labelsize=_RC["font.size"])
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _legend(ax: Any) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=_RC["legend.fontsize"], frameon=False)


def _vector(x: Any, name: str) -> np.ndarray:
    arr = np.atleast_1d(to_numpy(x).astype(np.float64, copy=False))
    if arr.ndim > 1 and arr.size == max(arr.shape):  # [1, T] or [T, 1]
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {tuple(arr.shape)}")
    return arr


def _rounding_zeros(values: np.ndarray) -> np.ndarray:
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
    of the largest (:func:`_rounding_zeros`) are gaps too, whatever their sign; without it
    (a time series whose values each carry their own relative error, e.g. a loss curve
    falling over many decades) only entries ``<= 0`` are.
    """
    out = np.array(to_numpy(values), dtype=np.float64)
    zero = out <= 0
    if shared_scale:
        zero |= _rounding_zeros(out)
    out[zero] = np.nan
    return out


def _symlog(ax: Any, values: np.ndarray) -> None:
    """Symmetric-log y axis with a decade-aligned linear region and ticks only at decades.

    The linear threshold is the decade at or below the smallest nonzero magnitude (but at
    most 4 decades below the largest), so tiny eigenvalues stay visible; ticks sit at 0
    and at ``±10^n`` outside the linear region, so labels never crowd around zero.
    Values that are zero within rounding (:func:`_rounding_zeros`) count as 0.
    """
    finite = np.where(_rounding_zeros(values), 0.0, values)[np.isfinite(values)]
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


def plot_density(
    grid: Any,
    density: Any,
    *,
    eigenvalues: Any | None = None,
    outliers: Any | None = None,
    outliers_label: str = "top eigenvalues",
    edge: float | None = None,
    edge_label: str = "bulk edge",
    log_scale: bool = True,
    title: str | None = "Spectral density",
    xlabel: str = "eigenvalue λ",
    label: str = "density estimate",
    bins: int = 60,
    ax: Any | None = None,
) -> Figure:
    """Plot an eigenvalue density, e.g. from stochastic Lanczos quadrature.

    Args:
        grid: ``[T]`` eigenvalue grid.
        density: ``[T]`` density on the grid (integrates to about 1).
        eigenvalues: optional exact eigenvalues, overlaid as a normalised histogram and
            a rug of ticks along the bottom.
        outliers: optional eigenvalues to mark with dashed vertical lines (e.g. Lanczos
            top-k or deflated top-r eigenvalues: not necessarily outliers).
        outliers_label: legend label of those lines, say what they are (the count is
            appended).
        edge: optional bulk edge (e.g. :attr:`hesslab.measures.OutlierCount.threshold`),
            a solid vertical line.
        edge_label: legend label of the edge line.
        log_scale: logarithmic density axis (the bulk near zero dwarfs the outliers).
        title: axes title.
        xlabel: x-axis label.
        label: legend label of the density curve.
        bins: histogram bins for ``eigenvalues``.
        ax: draw into this matplotlib axes (default: a new figure); its figure is returned.
    """
    x = _vector(grid, "grid")
    y = _vector(density, "density")
    if x.shape != y.shape:
        raise DataError(f"grid and density must have the same length, got {x.size} and {y.size}")
    fig, ax = _target(ax)
    positive = y[np.isfinite(y) & (y > 0)]
    floor = positive.max() * 1e-7 if positive.size else 1e-12
    y_plot = np.clip(y, floor, None) if log_scale else y
    if eigenvalues is not None:
        _exact_histogram(
            ax, _vector(eigenvalues, "eigenvalues"), bins, 0.0 if not log_scale else floor
        )
    ax.plot(x, y_plot, color=_COLORS[1], linewidth=1.5, label=label)
    if not log_scale:
        ax.fill_between(x, 0, y_plot, color=_COLORS[1], alpha=0.12)
    if outliers is not None:
        _vertical_marks(ax, _vector(outliers, "outliers"), outliers_label)
    if edge is not None and math.isfinite(edge):
        ax.axvline(edge, color=_COLORS[2], linestyle="-", linewidth=1.2, label=edge_label)
    if log_scale:
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
    _style(ax, title=title, xlabel=xlabel, ylabel="density" + (" (log)" if log_scale else ""))
    _legend(ax)
    return fig


def _exact_histogram(ax: Any, ev: np.ndarray, bins: int, rug_y: float) -> None:
    """The finite ``ev`` as a normalised histogram and a rug of ticks at height ``rug_y``."""
    ev = ev[np.isfinite(ev)]
    if not ev.size:
        return
    ax.hist(
        ev,
        bins=bins,
        density=True,
        color="#9ecae1",
        edgecolor="#6baed6",
        alpha=0.7,
        label=f"exact eigenvalues (n={ev.size})",
    )
    ax.plot(ev, np.full_like(ev, rug_y), "|", color="#08519c", markersize=8, alpha=0.6)


def _vertical_marks(ax: Any, values: np.ndarray, label: str) -> None:
    """Dashed vertical lines at the finite ``values``, one legend entry ``label (n)``."""
    for i, value in enumerate(values[np.isfinite(values)]):
        ax.axvline(
            value,
            color=_COLORS[3],
            linestyle="--",
            linewidth=0.9,
            label=f"{label} ({values.size})" if i == 0 else None,
        )


def plot_eigenvalues(
    values: Any,
    *,
    errors: Any | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = "Eigenvalues by rank",
    ylabel: str = "eigenvalue λ",
    symlog: bool = True,
    ax: Any | None = None,
) -> Figure:
    """Ranked stem plot of eigenvalues (largest first), on a symmetric-log axis.

    Args:
        values: ``[k]`` eigenvalues; plotted in the given order, ranks ``1..k``.
        errors: optional ``[k]`` error bars (standard errors or residual norms).
        labels: optional ``[k]`` tick labels (default: the ranks).
        title: axes title.
        ylabel: y-axis label.
        symlog: symmetric-log y axis, which shows signs and magnitudes together.
        ax: draw into this matplotlib axes (default: a new figure); its figure is returned.
    """
    v = _vector(values, "values")
    k = v.size
    fig, ax = _target(ax, width=max(6.4, min(10.0, 3.5 + 0.18 * k)))
    ranks = np.arange(1, k + 1)
    markerline, stemlines, _ = ax.stem(ranks, v, basefmt=" ")
    markerline.set_color(_COLORS[0])
    markerline.set_markersize(5)
    stemlines.set_color(_COLORS[0])
    stemlines.set_linewidth(1.2)
    if errors is not None:
        err = np.abs(_vector(errors, "errors"))
        if err.size != k:
            raise DataError(f"errors must have {k} entries like values, got {err.size}")
        ax.errorbar(ranks, v, yerr=err, fmt="none", ecolor=_COLORS[1], capsize=3, lw=1)
    ax.axhline(0.0, color="black", linewidth=0.6)
    if symlog:
        _symlog(ax, v if errors is None else np.concatenate([v, v + err, v - err]))
    if labels is not None:
        if len(labels) != k:
            raise DataError(f"labels must have {k} entries like values, got {len(labels)}")
        ax.set_xticks(ranks, [str(s) for s in labels], rotation=45 if k > 8 else 0, ha="right")
    elif k <= 30:
        ax.set_xticks(ranks)
    _style(ax, title=title, xlabel="rank", ylabel=ylabel + (" (symlog)" if symlog else ""))
    return fig


def plot_spectra_comparison(
    spectra: Mapping[str, Any],
    *,
    title: str | None = "Spectra compared",
    ylabel: str = "eigenvalue λ",
    top_k: int | None = None,
    symlog: bool = True,
    ax: Any | None = None,
) -> Figure:
    """Compare several ranked spectra side by side (e.g. Hessian vs Gauss–Newton top-k).

    Args:
        spectra: name -> ``[k]`` eigenvalues (each plotted in the given order).
        title: axes title.
        ylabel: y-axis label.
        top_k: plot only the first ``top_k`` values of each spectrum.
        symlog: symmetric-log y axis.
        ax: draw into this matplotlib axes (default: a new figure); its figure is returned.
    """
    if not spectra:
        raise DataError("spectra is empty; pass at least one name -> eigenvalues entry")
    series = {name: _vector(v, f"spectra[{name!r}]") for name, v in spectra.items()}
    if top_k is not None:
        series = {name: v[:top_k] for name, v in series.items()}
    k = max(v.size for v in series.values())
    n = len(series)
    fig, ax = _target(ax, width=max(6.4, min(10.0, 3.5 + 0.2 * k * max(1, n / 2))))
    width = 0.8 / n
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    for j, (name, v) in enumerate(series.items()):
        x = np.arange(1, v.size + 1) + (j - (n - 1) / 2) * width
        color = _COLORS[j % len(_COLORS)]
        ax.vlines(x, 0, v, color=color, linewidth=1.2, alpha=0.8)
        ax.plot(x, v, markers[j % len(markers)], color=color, markersize=5, label=name)
    ax.axhline(0.0, color="black", linewidth=0.6)
    all_values = np.concatenate(list(series.values()))
    if symlog:
        _symlog(ax, all_values)
    if k <= 30:
        ax.set_xticks(np.arange(1, k + 1))
    _style(ax, title=title, xlabel="rank", ylabel=ylabel + (" (symlog)" if symlog else ""))
    _legend(ax)
    return fig


def _series_parts(
    name: str, spec: Any, steps: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if isinstance(spec, tuple) and len(spec) == 3:
        x, values, err = spec
        x = _vector(x, f"series[{name!r}] steps")
    elif isinstance(spec, tuple) and len(spec) == 2:
        values, err = spec
        x = steps
    else:
        values, err = spec, None
        x = steps
    y = _vector(values, f"series[{name!r}]")
    if x is None:
        x = np.arange(y.size, dtype=np.float64)
    if x.size != y.size:
        raise DataError(f"series {name!r} has {y.size} values but {x.size} steps")
    e = None if err is None else np.abs(_vector(err, f"series[{name!r}] stderr"))
    if e is not None and e.size != y.size:
        raise DataError(f"series {name!r} has {y.size} values but {e.size} stderr entries")
    return x, y, e


def plot_series(
    steps: Any | None,
    series: Mapping[str, Any],
    *,
    title: str | None = None,
    xlabel: str = "step",
    ylabel: str | None = None,
    log_y: bool = False,
    z: float = 1.0,
    ax: Any | None = None,
) -> Figure:
    """Plot quantities over training, with shaded error bands.

    Args:
        steps: ``[T]`` x values shared by all series (``None``: ``0..T-1``).
        series: name -> ``values``, ``(values, stderr_or_None)`` or
            ``(steps, values, stderr_or_None)`` for series with their own x values.
        title: axes title.
        xlabel: x-axis label.
        ylabel: y-axis label.
        log_y: logarithmic y axis.
        z: band half-width in standard errors (1 → ± stderr).
        ax: draw into this matplotlib axes (default: a new figure); its figure is returned.
    """
    if not series:
        raise DataError("series is empty; pass at least one name -> values entry")
    x_shared = None if steps is None else _vector(steps, "steps")
    fig, ax = _target(ax)
    for j, (name, spec) in enumerate(series.items()):
        x, y, e = _series_parts(name, spec, x_shared)
        y = log_axis_values(y, shared_scale=False) if log_y else y
        color = _COLORS[j % len(_COLORS)]
        ax.plot(
            x, y, color=color, linewidth=1.5, marker="o" if y.size <= 30 else None, ms=3, label=name
        )
        if e is not None:
            ax.fill_between(x, y - z * e, y + z * e, color=color, alpha=0.2, linewidth=0)
    if log_y:
        ax.set_yscale("log")
    _style(ax, title=title, xlabel=xlabel, ylabel=ylabel)
    _legend(ax)
    return fig


def plot_quantile_bands(
    x: Any,
    samples: Any,
    quantiles: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95),
    *,
    title: str | None = None,
    xlabel: str = "step",
    ylabel: str | None = None,
    log_y: bool = False,
) -> Figure:
    """Median and nested quantile bands of many repeats (e.g. 10,000 SGD runs).

    Args:
        x: ``[T]`` x values.
        samples: ``[R, T]`` values of ``R`` repeats, or name -> ``[R, T]`` for several
            groups (each in its own colour).
        quantiles: levels; symmetric pairs ``(q, 1-q)`` become bands (darker inside),
            ``0.5`` the median line.
        title: axes title.
        xlabel: x-axis label.
        ylabel: y-axis label.
        log_y: logarithmic y axis.
    """
    xs = _vector(x, "x")
    groups = samples if isinstance(samples, Mapping) else {"": samples}
    qs = sorted(float(q) for q in quantiles)
    if any(not 0.0 <= q <= 1.0 for q in qs):
        raise DataError(f"quantiles must lie in [0, 1], got {list(quantiles)}")
    lows = [q for q in qs if q < 0.5]
    fig, ax = _figure()
    for j, (name, s) in enumerate(groups.items()):
        arr = to_numpy(s).astype(np.float64, copy=False)
        if arr.ndim == 1:
            arr = arr[None, :]
        if log_y:
            arr = log_axis_values(arr, shared_scale=False)
        if arr.ndim != 2 or arr.shape[1] != xs.size:
            raise DataError(
                f"samples{'[' + repr(name) + ']' if name else ''} must have shape "
                f"[R, {xs.size}], got {tuple(arr.shape)}"
            )
        color = _COLORS[j % len(_COLORS)]
        prefix = f"{name}: " if name else ""
        for i, q in enumerate(lows):
            lo = np.nanquantile(arr, q, axis=0)
            hi = np.nanquantile(arr, 1.0 - q, axis=0)
            ax.fill_between(
                xs,
                lo,
                hi,
                color=color,
                alpha=0.12 + 0.12 * i,
                linewidth=0,
                label=f"{prefix}{q:.0%}–{1 - q:.0%}",
            )
        ax.plot(
            xs,
            np.nanmedian(arr, axis=0),
            color=color,
            linewidth=1.6,
            label=f"{prefix}median (R={arr.shape[0]})",
        )
    if log_y:
        ax.set_yscale("log")
    _style(ax, title=title, xlabel=xlabel, ylabel=ylabel)
    _legend(ax)
    return fig


def plot_layer_summary(
    layer_names: Sequence[str],
    quantities: Mapping[str, Any],
    *,
    title: str | None = "Per-layer summary",
    log_y: bool | Mapping[str, bool] = False,
) -> Figure:
    """One bar panel per quantity over the layers (e.g. λ_max, trace, distance to full).

    Args:
        layer_names: ``[L]`` layer names, in depth order.
        quantities: quantity -> ``[L]`` values or ``([L] values, [L] stderr)``.
        title: figure title.
        log_y: logarithmic y axes (one flag for all, or quantity -> flag).
    """
    names = [str(n) for n in layer_names]
    if not quantities:
        raise DataError("quantities is empty; pass at least one name -> values entry")
    n = len(quantities)
    fig, axes = _figure(
        width=max(6.4, min(11.0, 3.0 + 0.45 * len(names))),
        height=1.2 + 2.0 * n,
        nrows=n,
        ncols=1,
        sharex=True,
        squeeze=False,
    )
    x = np.arange(len(names))
    for j, (quantity, spec) in enumerate(quantities.items()):
        ax = axes[j, 0]
        values, err = spec if isinstance(spec, tuple) else (spec, None)
        v = _vector(values, f"quantities[{quantity!r}]")
        if v.size != len(names):
            raise DataError(f"{quantity!r} has {v.size} values for {len(names)} layers")
        e = None if err is None else np.abs(_vector(err, f"quantities[{quantity!r}] stderr"))
        flag = log_y.get(quantity, False) if isinstance(log_y, Mapping) else log_y
        v = log_axis_values(v) if flag else v
        ax.bar(x, v, yerr=e, color=_COLORS[j % len(_COLORS)], alpha=0.85, capsize=3, width=0.7)
        if flag:
            ax.set_yscale("log")
        _style(ax, title=None, xlabel=None, ylabel=quantity)
        ax.grid(False, axis="x")
    bottom = axes[-1, 0]
    long = max((len(s) for s in names), default=0) > 6 or len(names) > 8
    bottom.set_xticks(x, names, rotation=35 if long else 0, ha="right" if long else "center")
    bottom.set_xlabel("layer")
    if title:
        fig.suptitle(title, fontsize=_RC["axes.titlesize"])
    return fig


def plot_line_scan(
    t: Any,
    curves: Mapping[str, Any],
    *,
    secondary: Mapping[str, Any] | None = None,
    secondary_label: str | None = None,
    endpoint_labels: tuple[str, str] | None = ("A (t=0)", "B (t=1)"),
    title: str | None = "Linear interpolation",
    xlabel: str = "t  (θ = (1−t)·θ_A + t·θ_B)",
    ylabel: str | None = "loss",
    log_y: bool = False,
) -> Figure:
    """Quantities along the straight line between two solutions.

    Args:
        t: ``[T]`` interpolation coefficients.
        curves: name -> ``[T]`` values on the left axis (e.g. train and test loss).
        secondary: optional name -> ``[T]`` values on a right axis (e.g. λ_max).
        secondary_label: label of the right axis.
        endpoint_labels: names of the solutions at ``t = 0`` and ``t = 1`` (``None``: no
            markers).
        title: axes title.
        xlabel: x-axis label.
        ylabel: left y-axis label.
        log_y: logarithmic left y axis.
    """
    ts = _vector(t, "t")
    if not curves:
        raise DataError("curves is empty; pass at least one name -> values entry")
    fig, ax = _figure()
    lines = _scan_curves(ax, ts, curves, "curves", 0, log_y=log_y)
    if log_y:
        ax.set_yscale("log")
    if endpoint_labels is not None:
        _endpoint_marks(ax, endpoint_labels)
    _style(ax, title=None, xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title, fontsize=_RC["axes.titlesize"], pad=16)
    top = ax  # the legend must be drawn above every line
    if secondary:
        top = ax.twinx()
        lines += _scan_curves(top, ts, secondary, "secondary", len(curves), dashed=True)
        if secondary_label:
            top.set_ylabel(secondary_label)
        top.spines["top"].set_visible(False)
    top.legend(
        lines,
        [ln.get_label() for ln in lines],
        fontsize=_RC["legend.fontsize"],
        frameon=True,
        framealpha=0.85,
        edgecolor="none",
    )
    return fig


def _scan_curves(
    ax: Any,
    ts: np.ndarray,
    curves: Mapping[str, Any],
    what: str,
    offset: int,
    *,
    log_y: bool = False,
    dashed: bool = False,
) -> list[Any]:
    """Draw each ``name -> [T]`` curve over ``ts`` (colours from ``offset``); the lines."""
    lines = []
    for j, (name, values) in enumerate(curves.items()):
        y = _vector(values, f"{what}[{name!r}]")
        if y.size != ts.size:
            raise DataError(f"curve {name!r} has {y.size} values for {ts.size} points of t")
        y = log_axis_values(y, shared_scale=False) if log_y else y
        style = {"linewidth": 1.4, "linestyle": "--"} if dashed else {"linewidth": 1.6}
        color = _COLORS[(offset + j) % len(_COLORS)]
        (line,) = ax.plot(ts, y, color=color, label=name, **style)
        lines.append(line)
    return lines


def _endpoint_marks(ax: Any, labels: tuple[str, str]) -> None:
    """Dotted lines at ``t = 0`` and ``t = 1``, labelled above the axes."""
    for pos, text in zip((0.0, 1.0), labels, strict=True):
        ax.axvline(pos, color="0.5", linestyle=":", linewidth=0.9)
        ax.annotate(
            text,
            xy=(pos, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
            color="0.35",
        )


def plot_heatmap(
    matrix: Any,
    xlabels: Sequence[str] | None = None,
    ylabels: Sequence[str] | None = None,
    *,
    title: str | None = None,
    colorbar_label: str | None = None,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool | None = None,
    fmt: str = "{:.2g}",
) -> Figure:
    """A labelled heatmap (e.g. subspace overlaps, per-layer distances).

    Args:
        matrix: ``[R, C]`` values.
        xlabels: ``[C]`` column labels.
        ylabels: ``[R]`` row labels.
        title: axes title.
        colorbar_label: label of the colour bar.
        cmap: matplotlib colour map name.
        vmin: lower end of the colour scale.
        vmax: upper end of the colour scale.
        annotate: write each value in its cell (default: when at most 15 x 15).
        fmt: format of cell annotations.
    """
    m = to_numpy(matrix).astype(np.float64, copy=False)
    if m.ndim != 2:
        raise DataError(f"matrix must be two-dimensional, got shape {tuple(m.shape)}")
    r, c = m.shape
    if xlabels is not None and len(xlabels) != c:
        raise DataError(f"xlabels has {len(xlabels)} entries for {c} columns")
    if ylabels is not None and len(ylabels) != r:
        raise DataError(f"ylabels has {len(ylabels)} entries for {r} rows")
    fig, ax = _figure(
        width=max(6.4, min(10.0, 2.5 + 0.5 * c)), height=max(4.0, min(9.0, 1.8 + 0.4 * r))
    )
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax, shrink=0.9)
    if colorbar_label:
        cbar.set_label(colorbar_label)
    ax.set_xticks(
        np.arange(c),
        [str(s) for s in xlabels] if xlabels is not None else [str(i) for i in range(c)],
        rotation=35 if c > 6 else 0,
        ha="right" if c > 6 else "center",
    )
    ax.set_yticks(
        np.arange(r),
        [str(s) for s in ylabels] if ylabels is not None else [str(i) for i in range(r)],
    )
    if annotate is None:
        annotate = r <= 15 and c <= 15
    if annotate:
        finite = m[np.isfinite(m)]
        lo = vmin if vmin is not None else (finite.min() if finite.size else 0.0)
        hi = vmax if vmax is not None else (finite.max() if finite.size else 1.0)
        mid = (lo + hi) / 2
        for i in range(r):
            for j in range(c):
                val = m[i, j]
                text = fmt.format(val) if math.isfinite(val) else "–"
                color = "white" if math.isfinite(val) and val < mid else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=7.5, color=color)
    if title:
        ax.set_title(title, fontsize=_RC["axes.titlesize"])
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig
