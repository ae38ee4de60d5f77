"""Figures of curves and grids (re-exported by :mod:`hesslab.report.plots`).

Series over training, quantile bands over repeats, per-layer bars, line scans between
two solutions and heatmaps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from hesslab.errors import DataError
from hesslab.io import to_numpy
from hesslab.report.plot_style import (
    COLORS,
    RC,
    add_legend,
    as_vector,
    log_axis_values,
    new_figure,
    style_axes,
    target_axes,
)

__all__ = [
    "plot_heatmap",
    "plot_layer_summary",
    "plot_line_scan",
    "plot_quantile_bands",
    "plot_series",
]


def _series_parts(
    name: str, spec: Any, steps: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if isinstance(spec, tuple) and len(spec) == 3:
        x, values, err = spec
        x = as_vector(x, f"series[{name!r}] steps")
    elif isinstance(spec, tuple) and len(spec) == 2:
        values, err = spec
        x = steps
    else:
        values, err = spec, None
        x = steps
    y = as_vector(values, f"series[{name!r}]")
    if x is None:
        x = np.arange(y.size, dtype=np.float64)
    if x.size != y.size:
        raise DataError(f"series {name!r} has {y.size} values but {x.size} steps")
    e = None if err is None else np.abs(as_vector(err, f"series[{name!r}] stderr"))
    if e is not None and e.size != y.size:
        raise DataError(f"series {name!r} has {y.size} values but {e.size} stderr entries")
    return x, y, e


def _finish_curves(
    fig: Figure, ax: Any, log_y: bool, title: str | None, xlabel: str | None, ylabel: str | None
) -> Figure:
    """The common ending of the curve plots: log y axis if asked, axis style, legend."""
    if log_y:
        ax.set_yscale("log")
    style_axes(ax, title=title, xlabel=xlabel, ylabel=ylabel)
    add_legend(ax)
    return fig


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
    x_shared = None if steps is None else as_vector(steps, "steps")
    fig, ax = target_axes(ax)
    for j, (name, spec) in enumerate(series.items()):
        x, y, e = _series_parts(name, spec, x_shared)
        y = log_axis_values(y, shared_scale=False) if log_y else y
        color = COLORS[j % len(COLORS)]
        ax.plot(
            x, y, color=color, linewidth=1.5, marker="o" if y.size <= 30 else None, ms=3, label=name
        )
        if e is not None:
            ax.fill_between(x, y - z * e, y + z * e, color=color, alpha=0.2, linewidth=0)
    return _finish_curves(fig, ax, log_y, title, xlabel, ylabel)


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
    xs = as_vector(x, "x")
    groups = samples if isinstance(samples, Mapping) else {"": samples}
    qs = sorted(float(q) for q in quantiles)
    if any(not 0.0 <= q <= 1.0 for q in qs):
        raise DataError(f"quantiles must lie in [0, 1], got {list(quantiles)}")
    lows = [q for q in qs if q < 0.5]
    fig, ax = new_figure()
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
        color = COLORS[j % len(COLORS)]
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
    return _finish_curves(fig, ax, log_y, title, xlabel, ylabel)


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
    fig, axes = new_figure(
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
        v = as_vector(values, f"quantities[{quantity!r}]")
        if v.size != len(names):
            raise DataError(f"{quantity!r} has {v.size} values for {len(names)} layers")
        e = None if err is None else np.abs(as_vector(err, f"quantities[{quantity!r}] stderr"))
        flag = log_y.get(quantity, False) if isinstance(log_y, Mapping) else log_y
        v = log_axis_values(v) if flag else v
        ax.bar(x, v, yerr=e, color=COLORS[j % len(COLORS)], alpha=0.85, capsize=3, width=0.7)
        if flag:
            ax.set_yscale("log")
        style_axes(ax, title=None, xlabel=None, ylabel=quantity)
        ax.grid(False, axis="x")
    bottom = axes[-1, 0]
    long = max((len(s) for s in names), default=0) > 6 or len(names) > 8
    bottom.set_xticks(x, names, rotation=35 if long else 0, ha="right" if long else "center")
    bottom.set_xlabel("layer")
    if title:
        fig.suptitle(title, fontsize=RC["axes.titlesize"])
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
    ts = as_vector(t, "t")
    if not curves:
        raise DataError("curves is empty; pass at least one name -> values entry")
    fig, ax = new_figure()
    lines = _scan_curves(ax, ts, curves, "curves", 0, log_y=log_y)
    if log_y:
        ax.set_yscale("log")
    if endpoint_labels is not None:
        _endpoint_marks(ax, endpoint_labels)
    style_axes(ax, title=None, xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title, fontsize=RC["axes.titlesize"], pad=16)
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
        fontsize=RC["legend.fontsize"],
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
        y = as_vector(values, f"{what}[{name!r}]")
        if y.size != ts.size:
            raise DataError(f"curve {name!r} has {y.size} values for {ts.size} points of t")
        y = log_axis_values(y, shared_scale=False) if log_y else y
        style = {"linewidth": 1.4, "linestyle": "--"} if dashed else {"linewidth": 1.6}
        color = COLORS[(offset + j) % len(COLORS)]
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
    fig, ax = new_figure(
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
        ax.set_title(title, fontsize=RC["axes.titlesize"])
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig
