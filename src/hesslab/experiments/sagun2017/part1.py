"""sagun2017 part 1: bulk and outliers.

Exact Hessians on Gaussian mixtures with ``k`` classes, and a digits MLP.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from hesslab.data import balanced_subset, digits
from hesslab.data.datasets import Split
from hesslab.experiments._base import config_dtype as _dtype
from hesslab.experiments.sagun2017.claims import _part1_claim
from hesslab.experiments.sagun2017.config import S1, Sagun2017Config
from hesslab.experiments.sagun2017.spectra import (
    _count,
    _fmt,
    _max_count,
    _spectrum,
    _trained_spectrum,
    count_outliers_eigengap,
)
from hesslab.experiments.sagun2017.train import _is_min, _kink, _model, _train_gd
from hesslab.report import plots
from hesslab.report.progress import StepProgress
from hesslab.report.run import RunDir


def _setup_text(cfg: Sagun2017Config) -> str:
    if cfg.data == "blobs":
        data = (
            f"2·{cfg.num_points // 2 or cfg.num_per_class} blobs (sklearn make_blobs, "
            f"dim {cfg.dim}, cluster_std {cfg.spread}, standardised; half for training)"
        )
    else:
        data = (
            f"Gaussian mixtures on a simplex (dim {cfg.dim}, separation "
            f"{cfg.separation}, spread {cfg.spread}, {cfg.num_per_class} points per "
            "class, half for training)"
        )
    stop = (
        f"until ‖∇L‖ ≤ {cfg.grad_tol:g} (at most {cfg.steps} steps)"
        if cfg.grad_tol
        else (f"{cfg.steps} steps (a fixed budget)")
    )
    return (
        f"Exact Hessian spectra (dense `eigh`, float64) at the end of full-batch GD on {data} "
        f"with k classes; MLP hidden widths {list(cfg.widths)}, init N(0, {cfg.init}²), loss "
        f"{cfg.loss}, lr {cfg.lr}, {stop}. A solution is a minimum when ‖∇L‖ ≤ "
        f"{cfg.minimum_tol:g} (the gradient norm is beside every spectrum). Outliers: "
        "hesslab.count_outliers (its one rule, method 'density': the bulk edge is the "
        "lowest gap of at least 8 local mean eigenvalue spacings, values zero within "
        f"rounding set to 0, floor {cfg.outlier_floor:g}·λ₁, margin {cfg.outlier_margin}), "
        f"count ≤ {cfg.outlier_search}·k. Beside it, for comparison with earlier versions "
        "of this reproduction only, the log-eigengap rule (count_outliers method 'gap': a "
        "factor-2 drop in λ, blind to how dense the bulk below is). Papyan's class "
        "structure (part 6) explains the count."
    )


def _part1(cfg: Sagun2017Config, run: RunDir, tick: StepProgress) -> dict[str, Any]:
    """Bulk and outliers: one exact spectrum per (k, seed), the figures, digits, the claim."""
    run.add_text(S1, _setup_text(cfg))
    rows, spectra, counts, models = [], {}, {}, {}
    every: dict[str, tuple[nn.Module, Split, bool]] = {}
    bounds: dict[int, list[tuple[int, int]]] = {}
    minima: list[bool] = []
    for k in cfg.ks:
        counts[k], bounds[k] = [], []
        for seed in cfg.seeds:
            row, v, model, split = _mixture_run(cfg, run, k, seed)
            counts[k].append(row["outliers"])
            bounds[k].append(row.pop("_bounds"))
            minima.append(row["minimum"])
            rows.append(row)
            every[f"{k}/{seed}"] = (model, split, row["minimum"])
            if seed == cfg.seeds[0]:
                spectra[k] = v
                models[k] = (model, split)
            tick(f"sagun2017 part 1: k={k} seed={seed}: {row['outliers']} outliers")
    _mixture_report(cfg, run, rows, spectra)
    digits_out = _digits(cfg, run, tick) if cfg.digits else None
    verdict = _part1_claim(cfg, run, counts, bounds, minima, digits_out)
    return {"counts": counts, "models": models, "every": every, "digits": digits_out, "rows": rows,
            "bounds": bounds, "verdict": verdict.as_dict(), "minima": sum(minima),
            "runs": len(minima)}  # fmt: skip


def _mixture_run(
    cfg: Sagun2017Config, run: RunDir, k: int, seed: int
) -> tuple[dict[str, Any], Tensor, nn.Module, Split]:
    """Train on one k-class mixture, take its exact spectrum and count the outliers.

    Returns:
        ``(row, eigenvalues, model, split)``; the row's ``"_bounds"`` is the count's
        plausible range ``(low, high)``, to be popped by the caller.
    """
    split, res, spec, v, oc, n, gap, bulk = _trained_spectrum(cfg, k, seed)
    row = {
        "k": k,
        "seed": seed,
        "P": spec["P"],
        "N": len(split.train),
        "outliers": n,
        "plausible": f"{oc.low}-{oc.high}",
        "gap / spacing": round(gap, 2),
        "eigengap rule": count_outliers_eigengap(v, _max_count(cfg, k))[0],
        "= k": n == k,
        "= k-1": n == k - 1,
        "top eigenvalues": _fmt(v[: k + 2]),
        "bulk edge": bulk["bulk_edge"],
        "λ_min": bulk["lambda_min"],
        "bulk width": bulk["bulk_width"],
        "train loss": res.final_train_loss,
        "‖∇L‖": res.final_grad_norm,
        "minimum": _is_min(cfg, res.final_grad_norm),
        "ReLU kink": _kink(res.model, split.train.x),
        "steps": res.steps,
        "stopped by": res.stopped_by,
        "train acc": res.final_train_accuracy,
        "test acc": res.final_test_accuracy,
    }
    run.add_array(f"part1/k{k}/seed{seed}/eigenvalues", v)
    run.add_scalar(S1, f"outliers k={k} seed={seed}", n, spacing_ratio=gap, rule="density")
    return {**row, "_bounds": (oc.low, oc.high)}, v, res.model, split


def _mixture_report(
    cfg: Sagun2017Config, run: RunDir, rows: list[dict[str, Any]], spectra: dict[int, Tensor]
) -> None:
    """The per-(k, seed) table and the two spectrum figures of part 1."""
    run.add_table(
        S1,
        "outliers per k",
        rows,
        caption="One row per (k, seed). Outliers by hesslab.count_outliers (the bulk edge "
        "at the lowest gap of ≥ 8 local eigenvalue spacings; 'gap / spacing' that gap in "
        "spacings; 'plausible' spans the counts with 8·1.25 and 8/1.25 spacings; 'eigengap "
        "rule' the log-gap count of earlier versions, for comparison); bulk edge = largest "
        "non-outlier eigenvalue; bulk width "
        f"= bulk edge − λ_min; minimum: ‖∇L‖ ≤ {cfg.minimum_tol:g}.",
    )
    top = 2 * max(cfg.ks) + 2
    run.add_figure(
        S1,
        "part1_spectra",
        plots.plot_spectra_comparison(
            {f"k={k}": spectra[k][:top] for k in cfg.ks},
            top_k=top,
            title="Top Hessian eigenvalues at the end of training, per number of classes k",
        ),
        f"Ranked top-{top} Hessian eigenvalues (symlog) for each k (seed {cfg.seeds[0]}): a "
        "few outliers, then a drop into the bulk; the drop sits at about rank k.",
    )
    kbig = max(cfg.ks)
    run.add_figure(
        S1,
        "part1_full_spectrum",
        plots.plot_eigenvalues(
            spectra[kbig], title=f"Full Hessian spectrum, k={kbig} (P={spectra[kbig].numel()})"
        ),
        f"All {spectra[kbig].numel()} eigenvalues for k = {kbig}, ranked (symlog): a bulk "
        "at and near zero (of both signs) and a handful of large outliers.",
    )


def _digits(cfg: Sagun2017Config, run: RunDir, tick: StepProgress) -> dict[str, Any]:
    """The digits MLP of part 1 (10 classes): its top spectrum and outlier count."""
    seed = cfg.seeds[0]
    split = digits(seed=seed, dtype=_dtype(cfg))
    if cfg.digits_per_class > 0:
        split = Split(balanced_subset(split.train, cfg.digits_per_class, seed=seed), split.test)
    net = _model(cfg, 64, cfg.digits_widths, 10, seed)
    res = _train_gd(cfg, net, split, lr=cfg.digits_lr, steps=cfg.digits_steps)
    spec = _spectrum(cfg, res.model, split.train.tensors, top=cfg.digits_top, seed=seed)
    v = spec["values"]
    oc = _count(v, min(_max_count(cfg, 10), v.numel() - 1), cfg.outlier_floor,
                cfg.outlier_margin)  # fmt: skip
    n, gap = oc.count, (float(oc.gaps[oc.count - 1]) if oc.count else math.nan)
    out = {
        "P": spec["P"],
        "N": len(split.train),
        "outliers": n,
        "plausible": f"{oc.low}-{oc.high}",
        "gap / spacing": round(gap, 2),
        "method": spec["method"],
        "top eigenvalues": _fmt(v[:12]),
        "train loss": res.final_train_loss,
        "‖∇L‖": res.final_grad_norm,
        "minimum": _is_min(cfg, res.final_grad_norm),
        "train acc": res.final_train_accuracy,
        "test acc": res.final_test_accuracy,
    }
    run.add_table(S1, "digits", [out], caption="Digits (10 classes), MLP 64-"
                  + "-".join(map(str, cfg.digits_widths)) + "-10, GD.")  # fmt: skip
    run.add_array("part1/digits/eigenvalues", v)
    run.add_scalar(S1, "outliers digits", n, spacing_ratio=gap, method=spec["method"])
    run.add_figure(
        S1,
        "part1_digits",
        plots.plot_eigenvalues(
            v[: min(v.numel(), 30)],
            title=f"Digits MLP: top Hessian eigenvalues (P={spec['P']})",
        ),
        f"Top eigenvalues of the digits MLP ({spec['method']}); {n} outliers by "
        "hesslab.count_outliers' bulk-edge rule (10 classes).",
    )
    tick(f"sagun2017 part 1: digits: {n} outliers")
    return out
