"""sagun2017 parts 2 and 3: the width sweep and the data sweep.

Widths vary on fixed data; the number of classes and their separation vary on a fixed
architecture.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hesslab.experiments.sagun2017.claims import _part2_claim, _part3_claims
from hesslab.experiments.sagun2017.config import S2, S3, Sagun2017Config
from hesslab.experiments.sagun2017.spectra import (
    _bulk_stats,
    _fmt,
    _outliers,
    _spectrum,
    _trained_spectrum,
)
from hesslab.experiments.sagun2017.train import _is_min, _mixture, _model, _train_gd
from hesslab.report import plots
from hesslab.report.progress import StepProgress
from hesslab.report.run import RunDir


def _part2(cfg: Sagun2017Config, run: RunDir, tick: StepProgress) -> dict[str, Any]:
    """Width sweep on fixed data: the bulk grows with ``P``, the outliers stay."""
    k, seed = cfg.width_k, cfg.seeds[0]
    split = _mixture(cfg, k, seed)
    run.add_text(
        S2,
        f"Same data (k = {k}, seed {seed}), hidden widths {[list(w) for w in cfg.width_sweep]}, "
        "same training. Expectation: the number of (near-)zero eigenvalues grows with P, "
        "the top-k outliers barely move.",
    )
    rows, spectra, tops, Ps, zeros = [], {}, [], [], []
    for widths in cfg.width_sweep:
        row, v = _width_run(cfg, split, widths, k, seed)
        label = row["widths"]
        spectra[f"{label} (P={row['P']})"] = v
        tops.append(v[:k].numpy())
        Ps.append(row["P"])
        zeros.append(row[f"#|λ|≤{cfg.near_zero_tol:g}"])
        rows.append(row)
        run.add_array(f"part2/{label}/eigenvalues", v)
        tick(f"sagun2017 part 2: widths {label}: P={row['P']}, {row['outliers']} outliers")
    run.add_table(S2, "width sweep", rows)
    tops_a = np.stack(tops)  # [W, k]
    stability = float(np.max(tops_a.max(0) / np.maximum(tops_a.min(0), 1e-300)))
    _width_figures(cfg, run, k, spectra, Ps, zeros, tops_a)
    counts = [r["outliers"] for r in rows]
    mins = sum(r["minimum"] for r in rows)
    _part2_claim(cfg, run, k, Ps, zeros, counts, stability, mins)
    return {"P": Ps, "near_zero": zeros, "outliers": counts, "stability": stability}


def _width_run(
    cfg: Sagun2017Config, split: Any, widths: tuple[int, ...], k: int, seed: int
) -> tuple[dict[str, Any], Any]:
    """Train one width on the fixed data; its table row and exact eigenvalues."""
    res = _train_gd(cfg, _model(cfg, cfg.dim, widths, k, seed), split)
    spec = _spectrum(cfg, res.model, split.train.tensors, seed=seed, dense=True)
    v = spec["values"]
    oc = _outliers(cfg, v, k)
    n, gap = oc.count, (float(oc.gaps[oc.count - 1]) if oc.count else math.nan)
    bulk = _bulk_stats(v, k, cfg.near_zero_tol)
    row = {
        "widths": "x".join(map(str, widths)),
        "P": spec["P"],
        "outliers": n,
        "plausible": f"{oc.low}-{oc.high}",
        "gap / spacing": round(gap, 2),
        "top-k eigenvalues": _fmt(v[:k]),
        "bulk edge λ_{k+1}": bulk["bulk_edge"],
        "λ_min": bulk["lambda_min"],
        f"#|λ|≤{cfg.near_zero_tol:g}": bulk["near_zero"],
        "near-zero fraction": round(bulk["near_zero_fraction"], 3),
        "train loss": res.final_train_loss,
        "‖∇L‖": res.final_grad_norm,
        "minimum": _is_min(cfg, res.final_grad_norm),
    }
    return row, v


def _width_figures(
    cfg: Sagun2017Config,
    run: RunDir,
    k: int,
    spectra: dict[str, Any],
    Ps: list[int],
    zeros: list[int],
    tops_a: np.ndarray,
) -> None:
    """The two figures of part 2: top spectra per width, bulk size and outliers vs P."""
    top = 2 * k + 3
    run.add_figure(
        S2,
        "part2_width_spectra",
        plots.plot_spectra_comparison(
            {name: v[:top] for name, v in spectra.items()},
            top_k=top,
            title=f"Top Hessian eigenvalues across widths (k={k})",
        ),
        "Top eigenvalues per width: the first k (outliers) stay at similar values while P grows.",
    )
    run.add_figure(
        S2,
        "part2_bulk_vs_P",
        plots.plot_series(
            Ps,
            {
                f"#|λ| ≤ {cfg.near_zero_tol:g}": np.asarray(zeros, dtype=float),
                "P − #near-zero": np.asarray(Ps, dtype=float) - np.asarray(zeros, dtype=float),
                **{f"λ_{i + 1}": tops_a[:, i] for i in range(k)},
            },
            title="Bulk size and outliers vs number of parameters",
            xlabel="P",
            log_y=True,
        ),
        "Near-zero eigenvalue count (the bulk at zero) grows with P; the k outliers λ_1..λ_k "
        "stay roughly flat.",
    )


def _part3(cfg: Sagun2017Config, run: RunDir, tick: StepProgress) -> dict[str, Any]:
    """Data sweep on a fixed architecture: the outliers move, the bulk stays."""
    seed = cfg.seeds[0]
    run.add_text(
        S3,
        f"Fixed hidden widths {list(cfg.widths)}; data varies: (k, separation) in "
        f"{[list(p) for p in cfg.data_sweep]}, spread {cfg.spread}. Only the output layer "
        "changes with k (P changes by k·(width+1)).",
    )
    rows, spectra, lam1, fracs = [], {}, [], []
    for k, sep in cfg.data_sweep:
        row, v = _data_run(cfg, int(k), float(sep), seed)
        label = f"k={int(k)}, sep={float(sep):g}"
        spectra[label] = v
        lam1.append(float(v[0]))
        fracs.append(row.pop("_fraction"))
        rows.append(row)
        run.add_array(f"part3/k{int(k)}_sep{float(sep):g}/eigenvalues", v)
        tick(f"sagun2017 part 3: {label}: {row['outliers']} outliers")
    run.add_table(S3, "data sweep", rows)
    top = 2 * max(int(k) for k, _ in cfg.data_sweep) + 2
    run.add_figure(
        S3,
        "part3_data_spectra",
        plots.plot_spectra_comparison(
            {name: v[:top] for name, v in spectra.items()},
            top_k=top,
            title="Top Hessian eigenvalues across data sets (fixed architecture)",
        ),
        "Outliers move (their number follows k, their size the separation); the tail "
        "into the bulk stays where it is.",
    )
    counts = [r["outliers"] for r in rows]
    verdicts = _part3_claims(cfg, run, rows)
    return {"lambda_1": lam1, "outliers": counts, "near_zero_fraction": fracs, "holds": verdicts}


def _data_run(cfg: Sagun2017Config, k: int, sep: float, seed: int) -> tuple[dict[str, Any], Any]:
    """Train on one (k, separation) data set; its table row and exact eigenvalues.

    The row's ``"_fraction"`` (the unrounded near-zero fraction) is popped by the caller.
    """
    split, res, spec, v, oc, n, gap, bulk = _trained_spectrum(cfg, k, seed, separation=sep)
    row = {
        "k": k,
        "separation": sep,
        "P": spec["P"],
        "outliers": n,
        "gap / spacing": round(gap, 2),
        "λ₁": float(v[0]),
        "top eigenvalues": _fmt(v[: k + 1]),
        "bulk edge": bulk["bulk_edge"],
        "λ_min": bulk["lambda_min"],
        "near-zero fraction": round(bulk["near_zero_fraction"], 3),
        "train loss": res.final_train_loss,
        "‖∇L‖": res.final_grad_norm,
        "minimum": _is_min(cfg, res.final_grad_norm),
        "test acc": res.final_test_accuracy,
        "_fraction": bulk["near_zero_fraction"],
    }
    return row, v
