"""Plots of hesslab results: results (or a run folder) in, :class:`matplotlib.figure.Figure` out.

Every function takes what hesslab returns -- a
:class:`~hesslab.linalg.density.SpectralDensity`, an
:class:`~hesslab.linalg.results.EigenResult`, the :class:`~hesslab.train.Measurement`
list of a :class:`~hesslab.train.SpectrumMonitor` or a run folder -- and returns a
figure; it never shows or prints anything. The drawing itself is the array-level code of
:mod:`hesslab.report.plots`, so the HTML reports of ``hesslab analyze`` use the same
pictures. Figures live on an Agg canvas outside pyplot (headless-safe: no display, no
backend switch, no global state); pass ``ax=`` to draw into an axes of your own.
matplotlib is imported on first use.

Example::

    import hesslab, hesslab.plot

    dens = hesslab.spectral_density(H, 80, generator=torch.Generator().manual_seed(0))
    hesslab.plot.density(dens).savefig("density.png", dpi=150)
    hesslab.plot.monitor_series("runs/train-1", "lambda/1", eta=0.05).savefig("sharp.png")

Error conventions: eigenvalue bars are Lanczos residual norms ``||H v - lambda v||`` (a
bound on each eigenvalue's error), trace bands ``+- z`` standard errors. On a log axis a
value that is zero within its error (``|value| <= error``) counts as zero and is left out.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hesslab.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["density", "eigenvalues", "layer_spectra", "monitor_series"]

#: Readable axis labels of the monitor's quantity names.
_NAMES = {
    "lambda_max": "λ_max",
    "lambda/1": "λ_max (λ_1)",
    "lambda_min": "λ_min",
    "trace": "tr H",
    "trace_sq": "tr H²",
    "effective_rank": "effective rank",
    "logdet": "log det (top-r)",
    "loss": "loss",
}


def _plots() -> Any:
    from hesslab.report import plots

    return plots


def _is_density(obj: Any) -> bool:
    from hesslab.linalg.density import SpectralDensity

    return isinstance(obj, SpectralDensity)


def _named(results: Any, kind: str) -> dict[str, Any]:
    """``name -> result`` from one result, a sequence or a mapping of them."""
    if isinstance(results, Mapping):
        out = {str(k): v for k, v in results.items()}
    elif isinstance(results, (list, tuple)):
        out = {f"{kind} {i + 1}": r for i, r in enumerate(results)}
    else:
        out = {kind: results}
    if not out:
        raise DataError(f"no {kind} results given; pass one result, a list or a dict of them")
    return out


def _common_grid(dens: Sequence[Any], num_points: int, margin: float = 0.05) -> np.ndarray:
    if len(dens) == 1:
        return dens[0].grid(num_points, margin).numpy()
    ranges = [d.spectral_range() for d in dens]
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    pad = margin * ((hi - lo) if hi > lo else max(1.0, abs(hi)))
    return np.linspace(lo - pad, hi + pad, num_points)


def _run_density(path: str | os.PathLike[str]) -> tuple[Any, Any, Any]:
    """``density/grid``, ``density/values`` (and ``exact_eigenvalues``) of a run folder."""
    from hesslab.io import load_npz

    arrays = load_npz(Path(path) / "arrays.npz")
    if "density/grid" not in arrays or "density/values" not in arrays:
        raise DataError(
            f"{path} holds no density arrays (density/grid, density/values in arrays.npz); "
            "pass a run folder of `hesslab analyze` with the density part, or a "
            "SpectralDensity"
        )
    return arrays["density/grid"], arrays["density/values"], arrays.get("exact_eigenvalues")


def density(
    result_or_results: Any,
    ax: Any | None = None,
    *,
    eigenvalues: Any | None = None,
    num_points: int = 1024,
    sigma: float | None = None,
    log_scale: bool = True,
    title: str | None = "Spectral density (SLQ)",
    **kwargs: Any,
) -> Figure:
    """Gaussian-broadened SLQ density of one or several :class:`SpectralDensity` results.

    The curve is ``phi(x) = sum_j w_j N(x; theta_j, sigma^2)`` over the pooled quadrature
    nodes and weights (:meth:`SpectralDensity.evaluate`; Lin, Saad & Yang, 2016;
    Ghorbani et al., 2019). Eigenvalues removed by deflation (``deflate=r``) are point
    masses of weight ``1/P`` in that measure and are marked with dotted lines labelled
    "deflated top-r eigenvalues" -- they are computed eigenvalues, not a claim that they
    are outliers.

    Args:
        result_or_results: a :class:`SpectralDensity`, a list of them, or name -> result
            (the names become the legend labels); several are drawn on one common grid.
            Or a run folder of ``hesslab analyze``: its stored ``density/grid`` and
            ``density/values`` (and the exact spectrum, when it was computed).
        ax: draw into this matplotlib axes (default: a new figure).
        eigenvalues: optional exact eigenvalues, drawn as a normalised histogram.
        num_points: grid points.
        sigma: kernel width (default: :meth:`SpectralDensity.evaluate`'s, per result).
        log_scale: logarithmic density axis.
        title: axes title.
        **kwargs: passed to :func:`hesslab.report.plots.plot_density` (e.g. ``outliers=``
            to mark other eigenvalues, ``xlabel=``, ``bins=``).

    Returns:
        The figure (of ``ax`` when given).
    """
    if isinstance(result_or_results, (str, os.PathLike)):
        grid, values, exact = _run_density(result_or_results)
        return _plots().plot_density(
            grid, values, eigenvalues=exact if eigenvalues is None else eigenvalues,
            log_scale=log_scale, title=title, ax=ax, **{"label": "SLQ density", **kwargs},
        )  # fmt: skip
    named = _named(result_or_results, "density")
    bad = [n for n, d in named.items() if not _is_density(d)]
    if bad:
        raise DataError(
            f"density() takes SpectralDensity results (hesslab.spectral_density); {bad[0]!r} "
            f"is a {type(named[bad[0]]).__name__}"
        )
    plots = _plots()
    grid = _common_grid(list(named.values()), num_points)
    curves = [(n, d.evaluate(grid, sigma=sigma).numpy()) for n, d in named.items()]
    first = curves[0]
    label = kwargs.pop("label", "SLQ density")
    label = first[0] if len(named) > 1 else label
    fig = plots.plot_density(
        grid, first[1], eigenvalues=eigenvalues, log_scale=log_scale, title=title,
        label=label, ax=ax, **kwargs,
    )  # fmt: skip
    ax = fig.axes[0] if ax is None else ax
    floor = ax.get_ylim()[0]
    colors = [plots._COLORS[i] for i in (1, 0, 2, 4, 5, 6, 8, 9)]
    for j, (name, values) in enumerate(curves[1:], start=1):
        y = np.clip(values, floor, None) if log_scale else values
        ax.plot(grid, y, color=colors[j % len(colors)], linewidth=1.4, label=name)
    for j, d in enumerate(named.values()):
        out = d.outliers.numpy()
        for i, value in enumerate(out):
            tag = f"deflated top-{out.size} eigenvalues" + (f" ({curves[j][0]})" if j else "")
            ax.axvline(
                value, color=colors[j % len(colors)], linestyle=":", linewidth=1.1,
                label=tag if i == 0 else None,
            )  # fmt: skip
    plots._legend(ax)
    return fig


def _zero_within_error(values: np.ndarray, errors: np.ndarray | None) -> np.ndarray:
    """``values`` with the entries ``|v| <= error`` set to 0 (zero within their error)."""
    if errors is None:
        return values
    return np.where(np.abs(values) <= np.abs(errors), 0.0, values)


def _is_run_dir(obj: Any) -> bool:
    return isinstance(obj, (str, os.PathLike)) and Path(obj).is_dir()


def _run_eigen(path: str | os.PathLike[str], name: str | None) -> Any:
    """The stored fields of an ``EigenResult`` of a run folder (``RunDir.add_result``).

    Values, residual norms and converged flags come from ``arrays.npz``, the rest from
    ``results.json``.
    """
    from types import SimpleNamespace

    from hesslab.runs import load_run

    run = load_run(path)
    found = [
        r
        for r in run.summary.get("results", [])
        if r.get("type") == "EigenResult" and (name is None or r.get("name") == name)
    ]
    names = [
        r.get("name") for r in run.summary.get("results", []) if r.get("type") == "EigenResult"
    ]
    if not found:
        raise DataError(
            f"{path} holds no eigenvalue result named {name!r} (it has {names or 'none'}); "
            "pass name= one of them, or an EigenResult"
        )
    fields = found[0]["fields"]
    arrays = {}
    for key in ("values", "residual_norms", "converged"):
        spec = fields.get(key)
        if not (isinstance(spec, Mapping) and spec.get("array") in run.arrays):
            raise DataError(f"{path}: the eigenvalue result {found[0]['name']!r} has no {key}")
        arrays[key] = run.arrays[spec["array"]]
    which, method = fields.get("which", "largest"), fields.get("method", "lanczos")
    return SimpleNamespace(**arrays, which=which, method=method)


def eigenvalues(
    result: Any,
    ax: Any | None = None,
    *,
    name: str | None = "λ top",
    title: str | None = None,
    ylabel: str = "eigenvalue λ",
    symlog: bool = True,
) -> Figure:
    """Ranked eigenvalues of an :class:`EigenResult` with residual-norm error bars.

    For a symmetric ``A`` and unit ``v`` the residual ``r = ||A v - theta v||`` bounds the
    distance from ``theta`` to the spectrum (Parlett, *The Symmetric Eigenvalue Problem*,
    Thm 4.5.1), so each bar ``theta +- r`` contains an eigenvalue. A value within its own
    bar of zero is drawn as 0 (its sign and magnitude are not resolved).

    Args:
        result: an :class:`~hesslab.linalg.results.EigenResult` (:func:`hesslab.eigenpairs`),
            or a run folder holding one (``hesslab analyze``: values and residual norms
            from ``arrays.npz``).
        ax: draw into this matplotlib axes (default: a new figure).
        name: with a run folder, the stored result's name (``"λ top"``, ``"λ bottom"``,
            ``"λ top (GGN)"``; ``None``: the first one).
        title: axes title (default: says which end, the method and that bars are residuals).
        ylabel: y-axis label.
        symlog: symmetric-log y axis (signs and magnitudes together).

    Returns:
        The figure (of ``ax`` when given).
    """
    if _is_run_dir(result):
        result = _run_eigen(result, name)
    if not (hasattr(result, "values") and hasattr(result, "residual_norms")):
        raise DataError(
            f"eigenvalues() takes an EigenResult (hesslab.eigenpairs); got {type(result).__name__}"
        )
    from hesslab.io import to_numpy

    values = to_numpy(result.values).astype(np.float64).reshape(-1)
    errors = np.abs(to_numpy(result.residual_norms).astype(np.float64).reshape(-1))
    if title is None:
        conv = int(np.asarray(to_numpy(result.converged)).sum())
        title = (
            f"{values.size} {result.which} eigenvalues ({result.method}, {conv}/{values.size} "
            "converged; bars: residual norms)"
        )
    return _plots().plot_eigenvalues(
        _zero_within_error(values, errors), errors=errors, title=title, ylabel=ylabel,
        symlog=symlog, ax=ax,
    )  # fmt: skip


def layer_spectra(
    spectra: Mapping[str, Any],
    ax: Any | None = None,
    *,
    title: str | None = "Layer spectra",
    top_k: int | None = None,
    **kwargs: Any,
) -> Figure:
    """Spectra of layers or blocks (``{name: SpectralDensity}`` or ``{name: EigenResult}``).

    Densities are overlaid on one grid (:func:`density`); eigenvalue results (or plain
    arrays of eigenvalues) are compared rank by rank
    (:func:`hesslab.report.plots.plot_spectra_comparison`). A run folder of ``hesslab
    analyze`` (its ``layers`` part) keeps each block's ``λ_max`` and ``tr H[l, l]`` ± its
    standard error: they are drawn as one bar panel each, the report's figure.

    Args:
        spectra: block name -> result, all densities or all eigenvalue results; or a run
            folder.
        ax: draw into this matplotlib axes (default: a new figure).
        title: axes title.
        top_k: eigenvalue results: plot only the first ``top_k`` of each.
        **kwargs: passed to :func:`density` or to ``plot_spectra_comparison``.

    Returns:
        The figure (of ``ax`` when given).
    """
    if _is_run_dir(spectra):
        return _run_layers(spectra, title)
    if not isinstance(spectra, Mapping) or not spectra:
        raise DataError("layer_spectra() takes a non-empty dict: layer name -> result")
    kinds = {_is_density(v) for v in spectra.values()}
    if kinds == {True}:
        return density(dict(spectra), ax, title=title, **kwargs)
    if True in kinds:
        raise DataError(
            "layer_spectra() got SpectralDensity and eigenvalue results mixed; "
            "pass one kind (plot the others with a second call)"
        )
    from hesslab.io import to_numpy

    values = {str(n): to_numpy(getattr(r, "values", r)) for n, r in spectra.items()}
    return _plots().plot_spectra_comparison(values, title=title, top_k=top_k, ax=ax, **kwargs)


def _run_layers(path: str | os.PathLike[str], title: str | None) -> Figure:
    """The per-layer table of an analysis run folder as bar panels (λ_max, trace ± s.e.)."""
    from hesslab.runs import load_run

    tables = load_run(path).summary.get("tables", [])
    rows = next((t.get("rows") for t in tables if t.get("name") == "per-layer summary"), None)
    if not rows:
        raise DataError(
            f"{path} holds no per-layer summary; pass a run folder of `hesslab analyze` with "
            "the layers part (--what ...,layers), or a dict of layer results"
        )
    names = [r["layer"] for r in rows]
    trace = ([r["trace"] for r in rows], [r.get("trace stderr") or 0.0 for r in rows])
    quantities = {"λ_max": [r["λ_max"] for r in rows], "trace": trace}
    return _plots().plot_layer_summary(names, quantities, title=title)


def _records(source: Any) -> list[dict[str, Any]]:
    """Flat metric records from measurements, a monitor, a run folder or a JSONL file."""
    if isinstance(source, (str, os.PathLike)):
        from hesslab.io import read_jsonl

        path = Path(source)
        if path.is_dir():
            path = path / "metrics.jsonl"
        if not path.is_file():
            raise DataError(
                f"no metrics at {path}: pass a run folder with metrics.jsonl (written by "
                "RunDirSink / RunDir.log_metrics) or a JSONL file of a JsonlSink"
            )
        return read_jsonl(path)
    items = getattr(source, "measurements", source)
    if isinstance(items, Mapping) or not isinstance(items, Sequence):
        raise DataError(
            "monitor_series() takes Measurements, a SpectrumMonitor, a run folder path or "
            f"a list of metric dicts; got {type(source).__name__}"
        )
    return [dict(m) if isinstance(m, Mapping) else m.record() for m in items]


def _series(records: Sequence[Mapping[str, Any]], q: str) -> tuple[np.ndarray, ...]:
    rows = [
        (float(r["step"]), float(r[q]), float(r.get(f"{q}_err", math.nan)))
        for r in records
        if isinstance(r.get(q), (int, float)) and "step" in r
    ]
    rows = [row for row in rows if math.isfinite(row[1])]
    if not rows:
        known = sorted({k for r in records for k in r if not k.endswith("_err")} - {"step"})
        raise DataError(f"no finite values of {q!r} in the metrics; recorded: {known}")
    steps, values, errors = (np.array(c) for c in zip(*rows, strict=True))
    return steps, values, errors


def monitor_series(
    source: Any,
    quantity: str | Sequence[str] = "lambda/1",
    eta: float | None = None,
    *,
    ax: Any | None = None,
    title: str | None = None,
    log_y: bool = False,
    z: float = 1.0,
) -> Figure:
    """Quantities measured during training, with ``+- z`` error bands.

    With ``eta`` the eigenvalue panels get the horizontal line ``2 / eta``: gradient
    descent with step size ``eta`` on a quadratic diverges along directions with
    curvature above it, and full-batch training hovers at that edge of stability
    (Cohen et al., 2021, "Gradient descent on neural networks typically occurs at the
    edge of stability", ICLR).

    Args:
        source: the monitor's measurements (``monitor.measurements`` or the monitor
            itself), a run folder (its ``metrics.jsonl``), a JSONL file of a
            :class:`~hesslab.train.JsonlSink`, or a list of flat metric dicts
            (``{"step", name, name + "_err"}``).
        quantity: a metric name (``"lambda/1"``, ``"lambda_max"``, ``"trace"``, ...) or
            several (one panel each, shared step axis).
        eta: learning rate; draws ``2/eta`` on panels whose quantity starts with ``lambda``.
        ax: draw into this axes (one quantity only; default: a new figure).
        title: figure title.
        log_y: logarithmic y axes; values zero within their error are left out.
        z: band half-width in errors (residual norms for eigenvalues, standard errors
            for traces).

    Returns:
        The figure (of ``ax`` when given).
    """
    quantities = [quantity] if isinstance(quantity, str) else list(quantity)
    if not quantities or (ax is not None and len(quantities) > 1):
        raise DataError("monitor_series(): pass one quantity with ax=, or one or more without")
    if eta is not None and not eta > 0:
        raise DataError(f"eta must be a positive learning rate, got {eta}")
    records = _records(source)
    plots = _plots()
    if ax is None:
        fig, axes = plots._figure(
            height=1.3 + 2.6 * len(quantities), nrows=len(quantities), ncols=1, sharex=True,
            squeeze=False,
        )  # fmt: skip
        panels = list(axes[:, 0])
    else:
        fig, panels = ax.figure, [ax]
    for i, q in enumerate(quantities):
        steps, values, errors = _series(records, q)
        err = None if np.isnan(errors).all() else np.nan_to_num(errors)
        if log_y:
            values = np.where(_zero_within_error(values, err) == 0, np.nan, values)
        name = _NAMES.get(q, q)
        last = i == len(quantities) - 1
        plots.plot_series(
            None, {name: (steps, values, err)}, ax=panels[i], ylabel=name, log_y=log_y, z=z,
            xlabel="step" if last else None, title=title if i == 0 and ax is not None else None,
        )  # fmt: skip
        if eta is not None and q.startswith("lambda"):
            panels[i].axhline(
                2.0 / eta, color="black", linestyle="--", linewidth=1.0,
                label=f"2/η = {2.0 / eta:.4g}",
            )  # fmt: skip
            plots._legend(panels[i])
    if title and ax is None:
        fig.suptitle(title, fontsize=plots._RC["axes.titlesize"])
    return fig
