"""The peer benchmark's figure: four panels (top-k, trace, density, product cost)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from harness import HESSLAB, fmt


def _topk_panel(ax, p1: dict) -> None:
    """(a) Top-k: max rel. error against products."""
    for k, marker in (("1", "o"), ("5", "s")):
        for i, (n, r) in enumerate(p1.get("topk", {}).get(k, {}).items()):
            if r["products"] is None or r["rel_error"] is None:
                continue
            ax.scatter(
                r["products"],
                max(r["rel_error"], 1e-16),
                marker=marker,
                color=f"C{i}",
                label=f"{n} (top-{k})",
                s=60,
            )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="Hessian-vector products",
        ylabel="max rel. error of top-k",
        title="P1 top-1 (o) / top-5 (s)",
    )
    ax.axhline(1e-6, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize=7)


def _trace_panel(ax, p1: dict, meta: dict) -> None:
    """(b) Trace errors (estimators only; exact methods are named in the title)."""
    rows = {n: r for n, r in p1.get("trace", {}).items() if r["mean_rel_error"] is not None}
    est = [n for n in rows if not rows[n].get("exact")]
    ax.barh(est, [100 * rows[n]["mean_rel_error"] for n in est], color="C0", label="mean")
    ax.scatter(
        [100 * rows[n]["max_rel_error"] for n in est],
        est,
        color="C3",
        marker="|",
        s=200,
        label="max",
    )
    for n in est:
        r = rows[n]
        bar = f"covers {r['covered']}/{r['ok_runs']}" if r["error_bar"] else "no error bar"
        ax.annotate(
            bar,
            (100 * r["max_rel_error"], n),
            xytext=(6, -3),
            textcoords="offset points",
            fontsize=7,
        )
    exact = [n for n in rows if rows[n].get("exact")]
    title = f"P1 trace, {meta['trace_budget']} products"
    if exact:
        title += f" ({', '.join(exact)}: exact)"
    ax.set(xlabel=f"|rel. error| of the trace, % ({meta['seeds']} seeds)", title=title)
    ax.set_xlim(0, 1.35 * max([100 * rows[n]["max_rel_error"] for n in est] or [1]))
    ax.legend(fontsize=7, loc="lower right")


def _density_panel(ax, p1: dict) -> None:
    """(c) Density: CDFs at the smallest budget against the exact one."""
    eigs = np.sort(np.asarray(p1.get("exact_eigs", []), dtype=float))
    dens = p1.get("density", {})
    if eigs.size and dens:
        b = min(dens, key=int)
        ax.step(
            eigs,
            np.arange(1, eigs.size + 1) / eigs.size,
            where="post",
            color="k",
            lw=2,
            label="exact",
        )
        order = [n for n in dens[b] if n != HESSLAB] + [n for n in dens[b] if n == HESSLAB]
        for n in order:  # hesslab last, on top
            r, i = dens[b][n], list(dens[b]).index(n)
            ex = r.get("example")
            if not ex:
                continue
            x, w = np.asarray(ex["nodes"], float), np.asarray(ex["weights"], float)
            keep = np.isfinite(x) & (w > 0)
            o = np.argsort(x[keep])
            cdf = np.cumsum(w[keep][o]) / w[keep].sum()
            ax.step(
                x[keep][o],
                cdf,
                where="post",
                color=f"C{i}",
                ls="--" if n == HESSLAB else "-",
                lw=2 if n == HESSLAB else 1,
                label=f"{n}: W1/width {fmt(r['w1_over_width'], '.1e')}",
            )
        lo, hi = np.quantile(eigs, [0.0, 1.0])
        ax.set(
            xlim=(lo, hi),
            xscale="symlog",
            xlabel="eigenvalue (symlog)",
            ylabel="cumulative spectral measure",
            title=f"P1 spectral measure, {b} products",
        )
        ax.set_xscale("symlog", linthresh=1e-4)
        ax.legend(fontsize=7)


def _cost_panel(ax, probs: dict) -> None:
    """(d) The cost of one product per library and problem."""
    libs = sorted({n for r in probs.values() for n in r.get("cost", {})})
    width = 0.8 / max(1, len(probs))
    for j, (pname, res) in enumerate(probs.items()):
        vals = [res.get("cost", {}).get(n, {}).get("hvp_over_grad") for n in libs]
        ax.bar(np.arange(len(libs)) + j * width, [v if v else 0 for v in vals], width, label=pname)
    ax.set_xticks(
        np.arange(len(libs)) + width * (len(probs) - 1) / 2, libs, rotation=20, fontsize=8
    )
    ax.set(ylabel="one HVP / one gradient", title="cost of a product")
    ax.legend(fontsize=7)


def plot(results: dict, path: Path) -> None:
    """Write the four-panel figure of ``results`` to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = results["problems"]
    p1 = probs.get("P1", next(iter(probs.values())))
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    _topk_panel(axes[0, 0], p1)
    _trace_panel(axes[0, 1], p1, results["meta"])
    _density_panel(axes[1, 0], p1)
    _cost_panel(axes[1, 1], probs)
    fig.suptitle(
        f"hesslab vs peers ({results['meta']['cpu']}, {results['meta']['threads']} thread(s))",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
