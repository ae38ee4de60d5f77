"""Statistics, figures, tables and claims of the sankar2021 reproduction."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from hesslab.errors import ConfigurationError
from hesslab.experiments._base import Context
from hesslab.experiments._claims import decide
from hesslab.experiments.sankar2021.config import (
    _METRIC_LABEL,
    METRICS,
    _section,
    _seed_part,
)
from hesslab.experiments.sankar2021.measure import _normalized_curve, _sigma
from hesslab.report import plots


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation ``ρ`` (average ranks for ties); NaN for < 3 points.

    ``ρ = Pearson(rank(x), rank(y))`` (Spearman, 1904).
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ConfigurationError(
            f"spearman needs two 1-D arrays of one length, got {a.shape} and {b.shape}"
        )
    if a.size < 3:
        return math.nan

    def rank(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty_like(v)
        r[order] = np.arange(v.size, dtype=np.float64)
        for value in np.unique(v):  # average ranks of ties
            tie = v == value
            if tie.sum() > 1:
                r[tie] = r[tie].mean()
        return r

    ra, rb = rank(a), rank(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else math.nan


def plot_distance_vs_depth(
    layer_names: Sequence[str],
    epochs: Sequence[int],
    distances: Mapping[str, Any],
    *,
    title: str | None = None,
) -> Figure:
    """Distance of each layer's density to the full density vs layer index.

    Args:
        layer_names: ``[L]`` layers in depth order.
        epochs: ``[E]`` epoch of each row.
        distances: metric -> ``[E, L]`` distances (one panel per metric, one line per
            epoch, later epochs darker; the mean over epochs ``≥ 1`` in black).
        title: figure title.
    """
    import matplotlib.pyplot as plt

    n = len(distances)
    if n == 0:
        raise ConfigurationError("distances is empty; pass metric -> [E, L] array")
    fig, axes = plt.subplots(1, n, figsize=(5.0 * n, 3.8), squeeze=False)
    x = np.arange(len(layer_names))
    ep = np.asarray(epochs)
    cmap = plt.get_cmap("viridis")
    for j, (metric, values) in enumerate(distances.items()):
        ax = axes[0, j]
        d = np.asarray(values, dtype=np.float64)
        for i, e in enumerate(ep):
            c = cmap(0.1 + 0.8 * i / max(1, len(ep) - 1))
            ax.plot(x, d[i], color=c, alpha=0.6, lw=1, marker="o", ms=2, label=f"epoch {e}")
        later = d[ep >= 1] if (ep >= 1).any() else d
        ax.plot(x, later.mean(0), color="k", lw=2, marker="s", ms=4, label="mean, epochs ≥ 1")
        ax.set_xticks(x, list(layer_names), rotation=30)
        ax.set_xlabel("layer (depth order)")
        ax.set_ylabel(_METRIC_LABEL.get(metric, metric), fontsize=8)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if len(ep) <= 12:
            ax.legend(fontsize=6)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_layer_densities(
    curves: Mapping[str, tuple[Any, Any]], *, title: str | None = None
) -> Figure:
    """Layer densities and the full density on the normalized axis ``[0, 1]``.

    Args:
        curves: name -> ``(x, φ)`` with ``x`` already mapped to ``[0, 1]`` by each
            spectrum's own support and ``φ`` the density in those units (log y axis).
        title: axes title.
    """
    import matplotlib.pyplot as plt

    if not curves:
        raise ConfigurationError("curves is empty; pass name -> (x, density)")
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, (x, y) in curves.items():
        yy = np.clip(np.asarray(y, dtype=np.float64), 1e-8, None)
        ax.plot(np.asarray(x), yy, lw=2.2 if name == "full" else 1.0, label=name)
    ax.set_yscale("log")
    ax.set_ylim(bottom=1e-6)
    ax.set_xlabel("(λ − λ_min) / (λ_max − λ_min), each spectrum on its own support")
    ax.set_ylabel("density (normalized axis, log)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def _trend(epochs: np.ndarray, values: np.ndarray, start: int) -> dict[str, float | bool]:
    keep = epochs >= start
    e, v = epochs[keep], values[keep]
    rho = spearman(e, v) if e.size >= 3 else math.nan
    first, last = float(v[0]), float(v[-1])
    decreases = bool(last < first and (math.isnan(rho) or rho < 0))
    return {
        "first_epoch": int(e[0]),
        "first": first,
        "last": last,
        "ratio_last_first": last / first if first != 0 else math.nan,
        "spearman": rho,
        "init": float(values[0]),
        "ratio_last_init": last / float(values[0]) if values[0] != 0 else math.nan,
        "decreases": decreases,
    }


def _distances(name, cfg, run_dir, section, layers, epochs, dist, report, tag) -> dict:
    """Per-metric summary of one seed's layer-vs-full distances (figure/table if ``report``)."""
    L = len(layers)
    later = epochs >= 1 if (epochs >= 1).any() else np.ones_like(epochs, dtype=bool)
    out: dict[str, Any] = {}
    for k in METRICS:
        mean = dist[k][later].mean(0)
        amin = int(np.argmin(mean))
        per_epoch = np.argmin(dist[k], axis=1)
        interior = (per_epoch > 0) & (per_epoch < L - 1)
        out[k] = {
            "mean": {n: float(v) for n, v in zip(layers, mean, strict=True)},
            "final": {n: float(v) for n, v in zip(layers, dist[k][-1], strict=True)},
            "argmin": layers[amin],
            "argmin_index": amin,
            "interior": bool(0 < amin < L - 1),
            "final_argmin": layers[int(per_epoch[-1])],
            "interior_fraction": float(interior[later].mean()),
        }
        run_dir.add_array(f"{name}_distance_{k}{tag}", dist[k])
    run_dir.add_array(f"{name}_epochs{tag}", epochs)
    if not report:
        return out
    run_dir.add_figure(
        section,
        f"{name}_distance_vs_depth",
        plot_distance_vs_depth(layers, epochs.tolist(), dist, title=f"{name}: layer vs full"),
        caption="Distance between each layer's SLQ density and the full density vs layer "
        "index, one line per epoch (black: mean over epochs ≥ 1), first training seed. Left: "
        f"spectrum_w1 ({cfg.w1_normalize}-normalized axis); right: Sankar et al. code's "
        "variant (W1 between density values). Claim: U-shaped (minimum in the middle).",
    )
    rows = []
    for i, n in enumerate(layers):
        row: dict[str, Any] = {"layer": n, "index": i}
        for k in METRICS:
            row[f"{k} mean"] = out[k]["mean"][n]
            row[f"{k} final"] = out[k]["final"][n]
        rows.append(row)
    run_dir.add_table(
        section,
        f"{name} distances",
        rows,
        caption="Layer-vs-full distances of the first training seed: mean over epochs ≥ 1 "
        "and at the final epoch. w1 = 1-Wasserstein between eigenvalue distributions on the "
        "normalized axis; sankar = Sankar et al. code's variant.",
    )
    return out


def _density_figures(name, cfg, run_dir, section, rec) -> None:
    curves = {n: _normalized_curve(d, cfg) for n, d in rec["densities"].items()}
    run_dir.add_figure(
        section,
        f"{name}_densities_epoch{rec['epoch']}",
        plot_layer_densities(curves, title=f"{name}, epoch {rec['epoch']}"),
        caption=f"SLQ densities (σ = {cfg.sigma_rel:.2g} × width) of each layer block "
        "and of the full Hessian, each mapped to [0, 1] by its own support.",
    )
    if rec["epoch"] != cfg.epochs:
        return
    d = rec["densities"]["full"]
    grid = d.grid(cfg.grid_points, cfg.range_margin)
    run_dir.add_figure(
        section,
        f"{name}_full_density",
        plots.plot_density(
            grid.numpy(),
            d.evaluate(grid, _sigma(d, cfg)).numpy(),
            title=f"{name}: full Hessian density, epoch {rec['epoch']}",
            label="SLQ density",
        ),
        caption="Full Hessian spectral density (raw eigenvalue axis) at the final epoch.",
    )


def _trends(name, cfg, run_dir, section, layers, epochs, records, report, tag):
    """Trend of every λ_max / trace series of one seed (figures and table if ``report``)."""
    series_names = ["full", *layers]
    lmax = {n: np.asarray([r["lmax"][n] for r in records]) for n in series_names}
    tr = {n: np.asarray([r["trace"][n] for r in records]) for n in series_names}
    tr_se = {n: np.asarray([r["trace_se"][n] for r in records]) for n in series_names}
    start = min(cfg.trend_from_epoch, int(epochs[-1]))
    trends: dict[str, dict[str, Any]] = {}
    rows = []
    for q, s in (("lmax", lmax), ("trace", tr)):
        for n in series_names:
            t = _trend(epochs, s[n], start)
            trends[f"{q}/{n}"] = t
            rows.append({"quantity": q, "block": n, **t})
            run_dir.add_array(f"{name}_{q}_{n}{tag}", s[n])
    if not report:
        return trends, start
    for q, data, label in (("lmax", lmax, "λ_max (top Ritz value)"), ("trace", None, "Tr H")):
        series = data if data is not None else {n: (tr[n], tr_se[n]) for n in series_names}
        run_dir.add_figure(
            section,
            f"{name}_{q}",
            plots.plot_series(
                epochs, series, title=f"{name}: {label.split(' ')[0]}", xlabel="epoch",
                ylabel=label, log_y=True,
            ),
            caption=f"{label} of the full Hessian and of each layer block over training "
            "(first training seed" + (", ± stderr)." if data is None else ")."),
        )  # fmt: skip
    run_dir.add_table(
        section,
        f"{name} trends",
        rows,
        caption=f"Trend over epochs {start}..{int(epochs[-1])} (first training seed): Spearman "
        "ρ with the epoch, ratio last/first; 'init' is the value at initialization (epoch 0).",
    )
    return trends, start


def _claims_over_seeds(ctx: Context, name: str, mi: int) -> dict[str, Any]:
    """The claims of network ``name``, each a statistic over its training seeds.

    Per seed: "middle closest" is whether the arg-min over layers of the distance averaged
    over epochs ≥ 1 is an interior layer; "decrease" whether more than half of its
    λ_max/trace series decrease; the λ_max check whether SLQ and Lanczos agree. Each claim
    holds when ≥ 2/3 of the seeds agree and does not hold when ≤ 1/3 do
    (:func:`~hesslab.experiments._claims.decide`, ``rule="fraction"``).
    """
    cfg = ctx.cfg
    per = [ctx.results[_seed_part(name, s)] for s in cfg.seeds]
    section, first = _section(name, mi, cfg.data), per[0]
    L = len(first["layers"])
    verdicts: dict[str, Any] = {}
    for k in METRICS:
        amins = [p["distance_summary"][k]["argmin_index"] for p in per]
        v = decide([float(0 < a < L - 1) for a in amins], rule="fraction", margin=0.5)
        verdicts[f"middle_closest_{k}"] = v
        label = (
            f"1-Wasserstein, {cfg.w1_normalize}-normalized axis"
            if k == "w1"
            else "Sankar et al. code's variant"
        )
        ctx.claim(
            section,
            f"{name}: middle layers' spectra are closest to the full one [{label}]",
            "closest layer (arg-min of the distance averaged over epochs ≥ 1) per seed: "
            + ", ".join(f"{first['layers'][a]} ({a} of 0..{L - 1})" for a in amins)
            + f"; chance level (L − 2)/L = {(L - 2) / L:.2f}",
            v,
        )
    shares = [p["trend_decreasing"] / p["trend_series"] for p in per]
    verdicts["trend_decreases"] = decide(shares, rule="fraction", margin=0.5)
    ctx.claim(
        section,
        f"{name}: λ_max and trace, full and layerwise, decrease during training "
        f"(epochs ≥ {first['trend_start']})",
        "share of the λ_max/trace series that decrease (last < first and Spearman ρ < 0) "
        "per seed: " + ", ".join(f"{x:.2f}" for x in shares) + "; a seed agrees when > 0.5",
        verdicts["trend_decreases"],
    )
    ok = [float(p["lmax_check"]["agrees"]) for p in per]
    verdicts["lmax_check"] = decide(ok, rule="fraction", margin=0.5)
    ctx.claim(
        section,
        f"{name}: full λ_max from SLQ agrees with hesslab.eigenpairs within the SLQ "
        "resolution max(σ, Ritz residual)",
        "per seed |Δ|/tol: "
        + ", ".join(
            f"{p['lmax_check']['abs_diff'] / p['lmax_check']['tolerance']:.2g}" for p in per
        ),
        verdicts["lmax_check"],
    )
    ctx.run_dir.add_table(section, f"{name} seeds", [_seed_row(p) for p in per])
    return {
        **{k: first[k] for k in ("P", "layers", "layer_sizes", "epochs")},
        "seeds": per,
        "verdicts": {k: v.as_dict() for k, v in verdicts.items()},
        "middle_closest": {k: verdicts[f"middle_closest_{k}"].holds for k in METRICS},
        "trend_holds": verdicts["trend_decreases"].holds,
        "lmax_holds": verdicts["lmax_check"].holds,
        "seconds": sum(p["seconds"] for p in per),
    }


def _seed_row(p: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"seed": p["seed"]}
    for k in METRICS:
        row[f"{k} closest"] = p["distance_summary"][k]["argmin"]
    row["series decreasing"] = f"{p['trend_decreasing']}/{p['trend_series']}"
    row["λ_max check"] = p["lmax_check"]["agrees"]
    row["train accuracy"] = p["train_accuracy"]
    row["test accuracy"] = p["test_accuracy"]
    return row
