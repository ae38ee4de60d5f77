"""The table, the figure, the scalars and the three claims of one α sweep."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hesslab.experiments._claims import record
from hesslab.experiments.dinh2017.config import Dinh2017Config
from hesslab.report.run import RunDir

__all__ = ["sweep_claims", "sweep_report"]


def _figure(alphas: np.ndarray, rows: list[dict[str, Any]], title: str) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    series = {
        "λ_max(H)": ("lambda_max", "-", "o"),
        "tr(H)": ("trace", "-", "s"),
        "ε-sharpness": ("eps_sharpness", "-", "^"),
        "Σθ²H_jj = tr(ΘHΘ)": ("inv_trace", "--", "o"),
        "λ_max(ΘHΘ)": ("inv_lambda_max", "--", "s"),
        "max_p λ_max(H_pp)‖θ_p‖²": ("layer_norm_lambda_max", "--", "^"),
        "max |f_α − f| / max |f|": ("output_change", ":", "x"),
    }
    for label, (key, ls, mk) in series.items():
        y = np.array([abs(r[key]) for r in rows], dtype=np.float64)
        y = np.where(y > 0, y, np.nan)
        ax.plot(alphas, y, linestyle=ls, marker=mk, ms=4, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("α   (θ₁, θ₂) → (αθ₁, θ₂/α)")
    ax.set_ylabel("value")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="center", bbox_to_anchor=(0.5, 0.4), ncol=2, framealpha=0.85)
    return fig


def sweep_report(
    run: RunDir,
    section: str,
    layers: list[str],
    hess_data: tuple[torch.Tensor, torch.Tensor],
    cfg: Dinh2017Config,
    what: str,
    rows: list[dict[str, Any]],
    stats: dict[str, Any],
) -> None:
    """The table and the figure of one rescaling sweep."""
    table = [
        {
            "α": f"{r['alpha']:.3g}",
            "max|Δf|/max|f|": f"{r['output_change']:.1e}",
            "test acc": f"{r['test_accuracy']:.4f}",
            "λ_max(H)": f"{r['lambda_max']:.4g}",
            "tr(H)": f"{r['trace']:.4g}",
            "ε-sharpness": f"{r['eps_sharpness']:.4g}",
            "tr(ΘHΘ)": f"{r['inv_trace']:.10g}",
            "λ_max(ΘHΘ)": f"{r['inv_lambda_max']:.10g}",
            "max_p λ_max(H_pp)‖θ_p‖²": f"{r['layer_norm_lambda_max']:.10g}",
            "max_p tr(H_pp)‖θ_p‖²/P_p": f"{r['layer_norm_trace']:.10g}",
        }
        for r in rows
    ]
    run.add_table(
        section,
        f"{what} measures vs alpha",
        table,
        caption=(
            f"T_α on layers {layers[0]} and {layers[1]}; curvature on {hess_data[0].shape[0]} "
            f"training points; ε = {cfg.eps} (L2 ball, {cfg.sharpness_steps} ascent steps); "
            f"traces: {cfg.trace_matvecs} products, fixed seed."
        ),
    )
    run.add_figure(
        section,
        f"{what}_measures_vs_alpha",
        _figure(stats["alphas"], rows, f"{what}: flatness measures under T_α (log-log)"),
        caption=(
            "Solid: measures that move (λ_max, trace, ε-sharpness); dashed: scale-invariant "
            "measures (flat lines); dotted: relative output change (float64 rounding)."
        ),
    )


def sweep_claims(
    run: RunDir, section: str, cfg: Dinh2017Config, stats: dict[str, Any]
) -> dict[str, bool]:
    """The scalars and the three claims (function kept, measures move, invariants stay).

    Returns:
        ``{"function": holds, "moves": holds, "invariant": holds}``.
    """
    alphas, out_max, accs = stats["alphas"], stats["out_max"], stats["accs"]
    moves, inv_dev = stats["moves"], stats["inv_dev"]
    for k, v in moves.items():
        run.add_scalar(section, f"{k} max/min over alpha", v)
    for k, v in inv_dev.items():
        run.add_scalar(section, f"{k} max relative deviation", v)
    run.add_scalar(section, "max relative output change", out_max)
    run.add_scalar(section, "gradient norm at alpha=1", stats["ref"]["grad_norm"])
    holds_f = out_max <= cfg.output_tol and len(accs) == 1
    record(
        run,
        section,
        "T_α leaves the function unchanged (outputs and test accuracy)",
        f"max relative output change {out_max:.1e} over α ∈ [{alphas.min():.0e}, "
        f"{alphas.max():.0e}]; test accuracies {sorted(accs)}",
        holds_f,
    )
    holds_m = all(v >= cfg.move_min for v in moves.values())
    record(
        run,
        section,
        "λ_max, tr(H) and ε-sharpness can be made arbitrarily large by T_α",
        ", ".join(f"{k} moves {v:.3g}x" for k, v in moves.items()),
        holds_m,
    )
    holds_i = all(v <= cfg.invariant_tol for v in inv_dev.values())
    record(
        run,
        section,
        "normalized measures (Σθ²H_jj, λ_max(ΘHΘ), λ_max(H_pp)‖θ_p‖², tr(H_pp)‖θ_p‖²/P_p) "
        "are invariant",
        "max relative deviation " + ", ".join(f"{k} {v:.1e}" for k, v in inv_dev.items()),
        holds_i,
    )
    return {"function": holds_f, "moves": holds_m, "invariant": holds_i}
