"""Summaries, claims, tables and figures of the two penalty experiments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from hesslab.experiments._claims import Verdict, add_claim, decide
from hesslab.experiments.sankar2021_reg.config import (
    S_TRACE,
    S_WS,
    PenaltyKind,
    Sankar2021RegConfig,
    WSBoundRegConfig,
)
from hesslab.experiments.sankar2021_reg.training import TrainOutcome
from hesslab.report import plots
from hesslab.report.run import RunDir


def plot_variants(
    variants: Sequence[str],
    quantities: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str | None = None,
    log_y: bool = False,
) -> Figure:
    """Bar chart per quantity over the variants (mean with ±std bars); a pure function."""
    fig = plots.plot_layer_summary(list(variants), quantities, title=title, log_y=log_y)
    fig.axes[-1].set_xlabel("variant")
    return fig


def _mean_std(rows: list[dict[str, Any]], key: str) -> tuple[float, float]:
    v = np.asarray([r[key] for r in rows], dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def summarise(cfg: Any, rows: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, dict]:
    """Per variant: ``(mean, std)`` over the seeds of each of ``keys``."""
    out: dict[str, dict] = {}
    for variant in cfg.variants:
        sub = [r for r in rows if r["variant"] == variant]
        out[variant] = {k: _mean_std(sub, k) for k in keys}
        out[variant]["penalty_seconds_per_call"] = _mean_std(sub, "penalty_seconds_per_call")[0]
    return out


def _bars(summary: dict[str, dict], names: Sequence[str], labels: dict[str, str]) -> dict:
    return {
        label: ([summary[v][key][0] for v in names], [summary[v][key][1] for v in names])
        for label, key in labels.items()
    }


def fmt(ms: tuple[float, float], digits_: int = 3) -> str:
    """``"mean ± std"`` of a ``(mean, std)`` pair."""
    return f"{ms[0]:.{digits_}g} ± {ms[1]:.2g}"


def _paired(rows: list[dict[str, Any]], variant: str, key: str, seeds: Sequence[int]) -> list:
    """``key`` of ``variant`` seed by seed (every variant of a seed shares its init)."""
    by = {(r["variant"], r["seed"]): r[key] for r in rows}
    return [by[(variant, s)] for s in seeds]


def trace_claims(
    cfg: Sankar2021RegConfig, run_dir: RunDir, rows: list[dict[str, Any]], summary: dict
) -> dict[str, dict[str, Verdict]]:
    """The trace claims: paired (variant − none) differences over the seeds.

    Per penalty variant they decide "lowers the trace" (< 0 by 2 s.e.) and "keeps
    accuracy" (> −acc_tol by 2 s.e.).
    """
    out: dict[str, dict[str, Verdict]] = {}
    base = summary["none"]
    for v in cfg.variants:
        if v == "none":
            continue
        tr = decide(_paired(rows, v, "trace", cfg.seeds), _paired(rows, "none", "trace", cfg.seeds),
                    rule="paired", direction="less")  # fmt: skip
        acc = decide(
            _paired(rows, v, "test_accuracy", cfg.seeds),
            _paired(rows, "none", "test_accuracy", cfg.seeds),
            rule="paired", direction="greater", margin=-cfg.acc_tol,
        )  # fmt: skip
        out[v] = {"trace": tr, "accuracy": acc}
        add_claim(
            run_dir, S_TRACE, f"{v}: the Hessian-trace penalty lowers the trace of H", tr,
            f"trace {fmt(summary[v]['trace'])} vs none {fmt(base['trace'])} (± = s.d. over "
            "seeds); paired difference",
        )  # fmt: skip
        add_claim(
            run_dir, S_TRACE,
            f"{v}: the penalty does not hurt test accuracy (paired drop < {cfg.acc_tol})",
            acc,
            f"test acc {fmt(summary[v]['test_accuracy'])} vs none "
            f"{fmt(base['test_accuracy'])} (± = s.d.); paired difference",
        )  # fmt: skip
    return out


def ws_claims(
    cfg: WSBoundRegConfig, run_dir: RunDir, rows: list[dict[str, Any]], summary: dict
) -> dict[str, dict[str, Verdict]]:
    """The WS-bound claims: paired (variant − none) differences over the seeds.

    Per penalty variant, of the eigenvalue range and of the WS bound, each < 0 by 2 s.e.
    to hold.
    """
    out: dict[str, dict[str, Verdict]] = {}
    base = summary["none"]
    for v in cfg.variants:
        if v == "none":
            continue
        out[v] = {
            key: decide(
                _paired(rows, v, key, cfg.seeds),
                _paired(rows, "none", key, cfg.seeds),
                rule="paired",
                direction="less",
            )
            for key in ("spread", "ws_upper")
        }
        add_claim(
            run_dir, S_WS,
            f"{v}: descending the Wolkowicz–Styan bound (HSR) narrows λ_max − λ_min",
            out[v]["spread"],
            f"range {fmt(summary[v]['spread'])} vs none {fmt(base['spread'])}, λ_max "
            f"{fmt(summary[v]['lambda_max'])} vs {fmt(base['lambda_max'])} (± = s.d. over "
            "seeds); paired difference",
        )  # fmt: skip
        add_claim(
            run_dir, S_WS, f"{v}: the penalty lowers the WS upper bound", out[v]["ws_upper"],
            f"bound {fmt(summary[v]['ws_upper'])} vs none {fmt(base['ws_upper'])} (± = s.d.); "
            "paired difference",
        )  # fmt: skip
    return out


def _loss_figure(curves: dict[str, TrainOutcome], seed: int) -> Figure:
    return plots.plot_series(
        None,
        {v: np.asarray(o.epoch_loss) for v, o in curves.items()},
        title=f"Training loss per epoch (seed {seed})",
        xlabel="epoch",
        ylabel="mean minibatch loss",
        log_y=True,
    )


def add_report(kind: PenaltyKind, cfg: Any, run_dir: RunDir, summary: dict, curves: dict) -> None:
    """The summary scalars, table and figures of one penalty experiment."""
    keys, note = kind.keys, {"note": kind.scalar_note} if kind.scalar_note else {}
    for variant, s in summary.items():
        for k in keys:
            run_dir.add_scalar(kind.section, f"{variant} {k}", s[k][0], stderr=s[k][1], **note)
    rows = []
    for v, s in summary.items():
        row = {"variant": v, **{k: fmt(s[k]) for k in keys}}
        if kind.penalty_column:
            row["s / penalty call"] = s["penalty_seconds_per_call"]
        rows.append(row)
    run_dir.add_table(kind.section, "summary (mean ± std over seeds)", rows)
    names = list(cfg.variants)
    run_dir.add_figure(
        kind.section,
        "variants",
        plot_variants(names, _bars(summary, names, kind.bars), title=kind.bars_title),
        kind.bars_caption,
    )
    run_dir.add_figure(
        kind.section, "loss", _loss_figure(curves, cfg.seeds[0]),
        "Mean minibatch loss per epoch (penalty not included).",
    )  # fmt: skip
