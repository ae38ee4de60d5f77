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
from matplotlib.figure import Figure

from hesslab.errors import DataError
from hesslab.report.plot_curves import (
    plot_heatmap,
    plot_layer_summary,
    plot_line_scan,
    plot_quantile_bands,
    plot_series,
)
from hesslab.report.plot_style import (
    COLORS,
    DPI,
    RC,
    add_legend,
    as_vector,
    log_axis_values,
    new_figure,
    style_axes,
    symlog_axis,
    target_axes,
)

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

# The names hesslab.plot used before the style helpers had their own module.
_COLORS, _RC, _figure, _legend = COLORS, RC, new_figure, add_legend


def plot_density(
    grid: Any,
    density: Any,
    *,
    eigenvalues: Any | None = None,
    outliers: Any | None = None,
    outliers_label: str = "top eigenvalues",
    edge: float | None = None,
    edge_label: str = "bulk edge",
    edge_band: tuple[float, float] | None = None,
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
        edge_band: optional ``(low, high)`` uncertainty band of the edge (e.g. ± 2
            standard errors over the SLQ probes), shaded.
        log_scale: logarithmic density axis (the bulk near zero dwarfs the outliers).
        title: axes title.
        xlabel: x-axis label.
        label: legend label of the density curve.
        bins: histogram bins for ``eigenvalues``.
        ax: draw into this matplotlib axes (default: a new figure); its figure is returned.
    """
    x = as_vector(grid, "grid")
    y = as_vector(density, "density")
    if x.shape != y.shape:
        raise DataError(f"grid and density must have the same length, got {x.size} and {y.size}")
    fig, ax = target_axes(ax)
    positive = y[np.isfinite(y) & (y > 0)]
    floor = positive.max() * 1e-7 if positive.size else 1e-12
    y_plot = np.clip(y, floor, None) if log_scale else y
    if eigenvalues is not None:
        _exact_histogram(
            ax, as_vector(eigenvalues, "eigenvalues"), bins, 0.0 if not log_scale else floor
        )
    ax.plot(x, y_plot, color=COLORS[1], linewidth=1.5, label=label)
    if not log_scale:
        ax.fill_between(x, 0, y_plot, color=COLORS[1], alpha=0.12)
    if outliers is not None:
        _vertical_marks(ax, as_vector(outliers, "outliers"), outliers_label)
    if edge is not None and math.isfinite(edge):
        ax.axvline(edge, color=COLORS[2], linestyle="-", linewidth=1.2, label=edge_label)
    if edge_band is not None and all(math.isfinite(b) for b in edge_band):
        ax.axvspan(*edge_band, color=COLORS[2], alpha=0.18, label="bulk edge ± 2 s.e. (probes)")
    if log_scale:
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
    style_axes(ax, title=title, xlabel=xlabel, ylabel="density" + (" (log)" if log_scale else ""))
    add_legend(ax)
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
            color=COLORS[3],
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
    v = as_vector(values, "values")
    k = v.size
    fig, ax = target_axes(ax, width=max(6.4, min(10.0, 3.5 + 0.18 * k)))
    ranks = np.arange(1, k + 1)
    markerline, stemlines, _ = ax.stem(ranks, v, basefmt=" ")
    markerline.set_color(COLORS[0])
    markerline.set_markersize(5)
    stemlines.set_color(COLORS[0])
    stemlines.set_linewidth(1.2)
    if errors is not None:
        err = np.abs(as_vector(errors, "errors"))
        if err.size != k:
            raise DataError(f"errors must have {k} entries like values, got {err.size}")
        ax.errorbar(ranks, v, yerr=err, fmt="none", ecolor=COLORS[1], capsize=3, lw=1)
    ax.axhline(0.0, color="black", linewidth=0.6)
    if symlog:
        symlog_axis(ax, v if errors is None else np.concatenate([v, v + err, v - err]))
    if labels is not None:
        if len(labels) != k:
            raise DataError(f"labels must have {k} entries like values, got {len(labels)}")
        ax.set_xticks(ranks, [str(s) for s in labels], rotation=45 if k > 8 else 0, ha="right")
    elif k <= 30:
        ax.set_xticks(ranks)
    style_axes(ax, title=title, xlabel="rank", ylabel=ylabel + (" (symlog)" if symlog else ""))
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
    series = {name: as_vector(v, f"spectra[{name!r}]") for name, v in spectra.items()}
    if top_k is not None:
        series = {name: v[:top_k] for name, v in series.items()}
    k = max(v.size for v in series.values())
    n = len(series)
    fig, ax = target_axes(ax, width=max(6.4, min(10.0, 3.5 + 0.2 * k * max(1, n / 2))))
    width = 0.8 / n
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    for j, (name, v) in enumerate(series.items()):
        x = np.arange(1, v.size + 1) + (j - (n - 1) / 2) * width
        color = COLORS[j % len(COLORS)]
        ax.vlines(x, 0, v, color=color, linewidth=1.2, alpha=0.8)
        ax.plot(x, v, markers[j % len(markers)], color=color, markersize=5, label=name)
    ax.axhline(0.0, color="black", linewidth=0.6)
    all_values = np.concatenate(list(series.values()))
    if symlog:
        symlog_axis(ax, all_values)
    if k <= 30:
        ax.set_xticks(np.arange(1, k + 1))
    style_axes(ax, title=title, xlabel="rank", ylabel=ylabel + (" (symlog)" if symlog else ""))
    add_legend(ax)
    return fig
