"""The structural parts of :func:`hesslab.analysis.analyze`: layers, Gauss–Newton, classes."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hesslab.analysis.config import S_CLASSES, S_GGN, S_LAYERS, AnalysisConfig
from hesslab.analysis.job import Job, identity, record_eigen
from hesslab.errors import DataError
from hesslab.operators.class_structure import class_structure, subspace_fraction
from hesslab.operators.ggn import GGNOperator
from hesslab.report import plots
from hesslab.report.run import RunDir

__all__ = ["classes_part", "ggn_part", "layers_part"]


def layers_part(job: Job) -> None:
    """Top eigenvalue and trace of every diagonal block ``H[l, l]`` (Sankar et al. 2021)."""
    cfg, run = job.cfg, job.run
    job.begin("layerwise Hessians")
    rows = []
    blocks = {name: job.wrap(b) for name, b in job.H_local.blocks().items()}
    for i, (name, block) in enumerate(blocks.items()):
        Pb = block.shape[0]
        s = job.settings(k=min(cfg.layer_k, Pb), return_vectors=False)
        res = job.stage(f"layer{i}_eig", "top_k", block, 10 + i, s)
        s = job.settings(num_matvecs=min(cfg.trace_matvecs, 3 * Pb))
        btr = job.stage(f"layer{i}_trace", "trace", block, 100 + i, s)
        rows.append(
            {
                "layer": name,
                "P": Pb,
                "λ_max": float(res.values[0]),
                "trace": btr.value,
                "trace stderr": btr.stderr,
                "matvecs": res.num_matvecs + btr.num_matvecs,
            }
        )
    run.add_table(S_LAYERS, "per-layer summary", rows)
    fig = plots.plot_layer_summary(
        [r["layer"] for r in rows],
        {"λ_max": [r["λ_max"] for r in rows], "trace": [r["trace"] for r in rows]},
    )
    run.add_figure(
        S_LAYERS,
        "layers",
        fig,
        "Top eigenvalue and trace of each diagonal block H[l, l] (weight with its bias).",
    )
    job.summary["layers"] = rows


def ggn_part(job: Job, top: Any) -> None:
    """Top eigenpairs of the Gauss–Newton matrix and their overlap with H's."""
    run, k = job.run, job.cfg.k_top
    job.begin("Gauss–Newton vs Hessian")
    G = job.wrap(GGNOperator(job.objective))
    g_top = job.stage("ggn_top", "top_k", G, 5, job.settings())
    h_top = top or job.top()
    U_h = h_top.vectors.to(torch.float64)
    U_g = g_top.vectors.to(torch.float64)
    overlap = float((U_h.T @ U_g).square().sum() / k)
    record_eigen(run, S_GGN, "λ top (GGN)", g_top)
    run.add_scalar(S_GGN, f"top-{k} subspace overlap ‖U_Hᵀ U_G‖²_F / k", overlap)
    job.summary["ggn_overlap"] = overlap
    fig = plots.plot_spectra_comparison(
        {"Hessian": h_top.values.numpy(), "Gauss–Newton": g_top.values.numpy()},
        title="Top eigenvalues: Hessian vs Gauss–Newton",
    )
    run.add_figure(
        S_GGN,
        "ggn_vs_hessian",
        fig,
        "The outliers of H come from the Gauss–Newton term (Sagun et al. 2017).",
    )
    run.add_claim(
        S_GGN,
        "Sagun et al. (2017): the outliers of the Hessian come from the Gauss–Newton term",
        f"top-{k} subspace overlap {overlap:.3f}; λ_max H = {float(h_top.values[0]):.4g}, "
        f"λ_max G = {float(g_top.values[0]):.4g}",
        holds=overlap > 0.5,
    )


def _leading(flags: Tensor) -> int:
    """How many leading entries of a boolean vector are true."""
    bad = (~flags).nonzero()
    return int(bad[0]) if bad.numel() else int(flags.numel())


def classes_part(job: Job) -> dict[str, Any] | None:
    """Papyan's (2020) decomposition of G: how many of its top eigenvectors are class outliers.

    The class-structure count is the number of leading eigenvectors of ``G`` (from the
    top, until the first that is not) with at least half of their squared norm in the
    span of the ``C`` class means; Papyan (2020) predicts ``C`` or ``C − 1``. Skipped,
    with the reason in the report and ``summary["classes_skipped"]``, unless the loss is
    softmax cross-entropy over the whole data in one process.
    """
    objective, run, cfg = job.objective, job.run, job.cfg
    reason = _skip_reason(job)
    cs = None
    if reason is None:
        try:
            cs = class_structure(objective)
        except DataError as e:  # a class without samples, labels outside 0..C-1
            reason = f"skipped: {e}"
    if cs is None:
        reason = reason or "skipped"
        run.add_text(S_CLASSES, reason[0].upper() + reason[1:] + ".")
        job.summary["classes_skipped"] = reason
        return None
    C = cs.num_classes
    g_top = job.stage("ggn_top", "top_k", cs.ggn, 5, job.settings())
    U = g_top.vectors.to(cs.ggn.dtype)
    Q_class = cs.class_means.range_basis()
    Q_both = torch.cat([Q_class, cs.cross_class.range_basis()], dim=1)
    f_class = subspace_fraction(U, Q_class).cpu()
    f_both = subspace_fraction(U, Q_both).cpu()
    ranks = {
        "class means": (cs.class_means.rank(), C),
        "cross-class": (cs.cross_class.rank(), C * (C - 1)),
    }
    run.add_text(
        S_CLASSES,
        f"G = class means + cross-class + within-class (Papyan 2020), C = {C} classes, "
        f"{cs.num_vjps} vector–Jacobian products for the C² means. A top eigenvector of G "
        "whose squared norm lies mostly in the span of the C class means is an outlier "
        "explained by the classes; one in the span of the cross-class means belongs to "
        "the mini-bulk. The class-structure count is the number of leading eigenvectors "
        "(from the top, until the first that is not) with ≥ 50% of their norm² in the span "
        "of the class means; Papyan predicts C or C − 1.",
    )
    run.add_table(
        S_CLASSES,
        "ranks",
        [{"part": k, "rank": r, "predicted (at most)": b} for k, (r, b) in ranks.items()],
    )
    _record_classes(run, cfg, cs, g_top, f_class, f_both)
    out = _classes_claim(run, C, f_class)
    out["ranks"] = ranks
    job.summary["classes"] = out
    return out


#: Largest memory of the ``C² x P`` class means the default analysis spends (bytes).
MAX_MEANS_BYTES = 2**30


def _skip_reason(job: Job) -> str | None:
    """Why the class structure cannot run here, or ``None``."""
    objective = job.objective
    if job.wrap is not identity:
        why = "under torchrun"
    elif objective.loss.kind != "ce":
        why = f"for the {objective.loss.kind!r} loss"
    else:
        batch = next(iter(objective.batches()))[0]
        x, _ = objective._split(batch)
        with torch.no_grad():
            out = objective.forward(objective.theta, x)
        if out.ndim != 2:
            return (
                f"skipped: the model's outputs {tuple(out.shape)} are not [N, C] logits "
                "(one class per point)"
            )
        C, P = int(out.shape[1]), job.P
        size = C * C * P * objective.space.dtype.itemsize
        if size > MAX_MEANS_BYTES:
            return (
                f"skipped: the C² = {C * C} class means of P = {P} parameters would take "
                f"{size / 2**30:.1f} GiB (more than {MAX_MEANS_BYTES / 2**30:g} GiB)"
            )
        return None
    return (
        f"skipped {why}: the decomposition needs C-class softmax cross-entropy over the "
        "whole data in one process"
    )


def _classes_claim(run: RunDir, C: int, f_class: Tensor) -> dict[str, Any]:
    """The class-structure count, its scalar and Papyan's claim (``C`` or ``C − 1``)."""
    k = int(f_class.numel())
    leading = _leading(f_class >= 0.5)
    m = min(C, k)
    explained = int((f_class[:m] >= 0.5).sum())
    run.add_scalar(S_CLASSES, "class-structure count", leading, num_classes=C, top_k=k)
    short = k < C and leading == k  # every computed eigenvector is a class outlier
    text = f"{leading} leading eigenvectors of G in span(class means), C = {C}"
    if short:
        text += f" (all of the top {k}: raise k)"
    run.add_claim(
        S_CLASSES,
        f"Papyan (2020): the top C or C − 1 eigenvectors of G (C = {C}) come from the class means",
        f"{text}; {explained}/{m} of the top {m} have ≥ 50% of their norm² there (mean "
        f"fraction {float(f_class[:m].mean()):.3f})",
        holds=None if short else leading in (C - 1, C),
    )
    return {
        "class_fraction": f_class.tolist(), "count": leading, "explained": explained,
        "num_classes": C, "text": text,
    }  # fmt: skip


def _record_classes(
    run: RunDir, cfg: AnalysisConfig, cs: Any, g_top: Any, f_class: Tensor, f_both: Tensor
) -> None:
    """The table and figure of the class-structure part."""
    run.add_table(
        S_CLASSES,
        "top eigenvectors of G",
        [
            {
                "rank": j + 1,
                "λ (GGN)": float(g_top.values[j]),
                "fraction in span(class means)": float(f_class[j]),
                "fraction in span(class + cross-class means)": float(f_both[j]),
            }
            for j in range(len(g_top.values))
        ],
    )
    fig = plots.plot_spectra_comparison(
        {
            "Gauss–Newton": g_top.values.cpu().numpy(),
            "class means part": cs.class_means.eigenvalues().cpu().numpy(),
            "cross-class part": cs.cross_class.eigenvalues()[: cfg.k_top].cpu().numpy(),
        },
        title="Top eigenvalues of G and of its class parts",
    )
    run.add_figure(
        S_CLASSES,
        "class_structure",
        fig,
        "Eigenvalues of G beside the exact spectra of its class-mean and "
        "cross-class parts (Papyan 2020).",
    )
