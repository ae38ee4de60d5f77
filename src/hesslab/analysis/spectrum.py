"""The spectral parts of :func:`hesslab.analysis.analyze`.

Eigenpairs, traces, the density, the outlier count and the check against the exact
spectrum.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from hesslab import plot as hplot
from hesslab.analysis.config import S_DENSITY, S_EIG, S_EXACT, S_TRACE
from hesslab.analysis.job import Job, record_eigen
from hesslab.linalg.density import wasserstein1
from hesslab.measures.spectrum import OutlierCount
from hesslab.quantities import measure

__all__ = [
    "density_figure",
    "density_part",
    "eig_part",
    "exact_check",
    "exact_part",
    "outlier_part",
    "trace_part",
]


def exact_part(job: Job) -> Any:
    """The exact spectrum (dense float64 ``eigvalsh``) when ``P <= exact_limit``."""
    cfg = job.cfg
    if not (cfg.exact_limit and job.P <= cfg.exact_limit):
        return None
    job.begin("exact spectrum (dense eigh)")
    exact = job.stage("spectrum", "spectrum", job.H, None, job.settings())
    job.summary["exact_seconds"] = exact.seconds
    job.run.add_array("exact_eigenvalues", exact.values.numpy())
    return exact


def eig_part(job: Job) -> Any:
    """Top and bottom eigenpairs of H."""
    cfg, run, summary = job.cfg, job.run, job.summary
    job.begin("top eigenpairs")
    top = job.top()
    record_eigen(run, S_EIG, "λ top", top)
    summary["lambda_max"] = float(top.values[0])
    summary["top_eigenvalues"] = top.values.tolist()
    if cfg.k_bottom:
        job.begin("bottom eigenpairs")
        bottom = job.stage("eig_bottom", "bottom", job.H, 1, job.settings(k=cfg.k_bottom))
        record_eigen(run, S_EIG, "λ bottom", bottom)
        summary["lambda_min"] = float(bottom.values[0])
    fig = hplot.eigenvalues(
        top, title=f"Top-{cfg.k_top} Hessian eigenvalues (bars: residual norms)"
    )
    run.add_figure(S_EIG, "top_eigenvalues", fig, "Ranked top eigenvalues of H.")
    return top


def trace_part(job: Job) -> tuple[Any, Any]:
    """``tr H``, ``tr H²`` and the Wolkowicz–Styan bounds they imply."""
    cfg, run = job.cfg, job.run
    job.begin("trace and tr(H²)")
    tr = job.stage("trace", "trace", job.H, 2, job.settings())
    tr2 = job.stage("trace_sq", "trace_sq", job.H, 3, job.settings())
    run.add_result(S_TRACE, "tr H", tr)
    run.add_result(S_TRACE, "tr H²", tr2)
    bounds = measure("ws_bounds", job.H, job.settings(given={"trace": tr, "trace_sq": tr2}))
    run.add_result(S_TRACE, "Wolkowicz–Styan", bounds)
    job.summary["trace"] = (tr.value, tr.stderr)
    job.summary["trace_sq"] = (tr2.value, tr2.stderr)
    run.add_text(
        S_TRACE,
        f"Trace by `{tr.method}` and tr(H²) by `{tr2.method}` with {cfg.trace_matvecs} "
        "products each; the Wolkowicz–Styan bounds (1980) on λ_max and λ_min follow from "
        "the two traces alone, with the ranges they span when each trace moves by its "
        "standard error.",
    )
    return tr, tr2


def density_part(job: Job, exact: Any) -> Any:
    """The SLQ spectral density, compared with the exact spectrum when there is one."""
    cfg, run = job.cfg, job.run
    job.begin("spectral density")
    dens = job.stage("density", "density", job.H, 4, job.settings())
    grid = dens.grid()
    values = dens.evaluate(grid)
    run.add_array("density/grid", np.asarray(grid))
    run.add_array("density/values", np.asarray(values))
    nodes, weights = dens.nodes_and_weights()
    run.add_array("density/nodes", np.asarray(nodes))
    run.add_array("density/weights", np.asarray(weights))
    run.add_scalar(
        S_DENSITY, "SLQ products", dens.num_matvecs, seconds=dens.seconds,
        num_steps=cfg.density_steps, num_probes=cfg.density_probes,
    )  # fmt: skip
    ex = None if exact is None else exact.values
    if ex is not None:
        w1 = wasserstein1(nodes, weights, ex, torch.full_like(ex, 1.0 / job.P))
        width = float(ex[-1] - ex[0])
        run.add_scalar(S_DENSITY, "W1(SLQ, exact) / spectral width", w1 / width)
        job.summary["density_w1_rel"] = w1 / width
    return dens


def exact_check(job: Job, exact: Any, top: Any, traces: tuple[Any, Any] | None) -> None:
    """Every estimate against the exact spectrum."""
    cfg, rows = job.cfg, []
    ex = exact.values
    if top is not None:
        ex_top = ex.flip(0)[: cfg.k_top]
        rel = ((top.values - ex_top).abs() / ex_top.abs().clamp_min(1e-300)).max()
        rows.append(
            {
                "quantity": f"top-{cfg.k_top} eigenvalues",
                "max rel. error": float(rel),
                "estimate": float(top.values[0]),
                "exact": float(ex_top[0]),
            }
        )
    if traces is not None:
        for name, est, truth in (
            ("trace", traces[0], float(ex.sum())),
            ("tr(H²)", traces[1], float(ex.square().sum())),
        ):
            rows.append(
                {
                    "quantity": name,
                    "max rel. error": abs(est.value - truth) / abs(truth),
                    "estimate": est.value,
                    "exact": truth,
                    "within 3 stderr": abs(est.value - truth) <= 3 * est.stderr,
                }
            )
    job.run.add_table(S_EXACT, "estimates vs exact", rows)
    job.summary["exact_check"] = rows


def outlier_part(job: Job, top: Any, exact: Any, dens: Any) -> OutlierCount | None:
    """The outliers above the bulk edge: hesslab's one rule, on the best input there is.

    :func:`hesslab.count_outliers` (``method="density"``) on the exact spectrum when it
    was computed, else on the SLQ density (the edge per probe, its spread), else on the
    Lanczos top-k with their residual norms as error bounds.
    """
    if exact is not None:
        given, source = {"spectrum": exact}, "exact spectrum"
    elif dens is not None:
        given, source = {"density": dens}, f"SLQ density, {dens.num_probes} probe(s)"
    elif top is not None:
        given, source = {"top_k": top}, f"Lanczos top-{int(top.values.numel())}"
    else:
        return None
    oc = measure("outliers", job.H, job.settings(given=given))
    if exact is None and dens is None and oc.count >= int(top.values.numel()) // 2:
        source += " (the edge may lie deeper: raise k)"
    se = float(oc.info.get("edge_stderr", math.nan))
    edge = f"bulk edge {oc.threshold:.4g}" + (f" ± {se:.2g}" if se > 0 else "")
    job.run.add_scalar(
        S_EIG, "outliers above the bulk edge", oc.count, method=oc.method, source=source,
        low=oc.low, high=oc.high, bulk_edge=oc.threshold, bulk_edge_stderr=se,
    )  # fmt: skip
    job.run.add_text(
        S_EIG,
        f"Outliers ({source}): {oc.text}, {edge}. hesslab.count_outliers' density rule: "
        "the bulk edge is the lowest gap of at least "
        f"{oc.info['kappa']:g} local mean eigenvalue spacings (the spacing from the "
        "eigenvalue counts just below it, P·w per Ritz node of the SLQ density), the count "
        "the number of eigenvalues above it; the range spans the probes and a kappa "
        f"{oc.info['margin']:g}× larger or smaller (Ghorbani et al. 2019).",
    )
    summary = job.summary
    summary["outliers"] = int(oc.count)
    summary["outliers_range"] = (oc.low, oc.high)
    summary["outliers_text"] = f"{oc.text} ({source}, {edge})"
    summary["bulk_edge"] = float(oc.threshold)
    summary["bulk_edge_stderr"] = se
    return oc


def density_figure(job: Job, dens: Any, top: Any, exact: Any, oc: OutlierCount | None) -> None:
    """The SLQ density with the Lanczos top-k, the bulk edge and its uncertainty band."""
    ex = None if exact is None else exact.values.numpy()
    edge = band = None
    above = "" if oc is None else f"{oc.count} above" + (
        "" if oc.low == oc.high else f", plausible {oc.low}–{oc.high}"
    )  # fmt: skip
    if oc is not None and oc.count:
        edge = float(oc.threshold)
        se = float(oc.info.get("edge_stderr", math.nan))
        band = (edge - 2 * se, edge + 2 * se) if se > 0 else None
    fig = hplot.density(
        dens, eigenvalues=ex, outliers=None if top is None else top.values.numpy(),
        outliers_label="Lanczos top eigenvalues (not deflated; not all outliers)",
        edge=edge, edge_label=f"bulk edge ({above})",
        edge_band=band, title="Hessian eigenvalue density (SLQ)",
    )  # fmt: skip
    job.run.add_figure(
        S_DENSITY,
        "density",
        fig,
        "Gaussian-broadened SLQ density; dashed: the Lanczos top-k eigenvalues (computed "
        "beside the density, not deflated from it, and not all outliers); solid: the bulk "
        "edge of hesslab.count_outliers (the outliers are the eigenvalues above it)"
        + ("; band: ± 2 standard errors of the edge over the probes" if band else "")
        + ("; histogram: exact spectrum." if ex is not None else "."),
    )
