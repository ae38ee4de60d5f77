"""The main analysis job: the curvature summary of one model at one point.

:func:`analyze` takes an :class:`~hesslab.Objective` and writes into a
:class:`~hesslab.report.RunDir`: top and bottom Hessian eigenpairs (Lanczos, with
residuals), trace and ``tr(H^2)`` with standard errors and the Wolkowicz–Styan bounds they
imply, the spectral density (stochastic Lanczos quadrature, Ghorbani et al. 2019),
per-layer summaries (diagonal blocks ``H[l, l]``, Sankar et al. 2021), Gauss–Newton
vs Hessian outliers (Sagun et al. 2017), and, on request (``"classes"``), where the
Gauss–Newton outliers come from: Papyan's (2020) class-mean / cross-class / within-class
decomposition (:func:`~hesslab.operators.class_structure.class_structure`). When ``P``
is small enough the exact spectrum (dense float64 ``eigh``) is computed too and every
estimate is compared against it.

``hesslab demo`` and ``hesslab analyze`` are thin wrappers around this function.

Preemption: with ``checkpoint_dir``, every finished stage (an eigensolve, a trace
estimate, the density, one layer, ...) is saved there as ``<stage>.done.pt`` and the
long solvers checkpoint their state to ``<stage>.pt`` while they run (after every
Lanczos restart, after every SLQ probe, after every operator call of a trace
estimate). Calling :func:`analyze` again with the same objective, configuration and
folder loads the finished stages, resumes the interrupted one and records exactly the
numbers of an uninterrupted run: every stochastic stage has its own generator seeded
from ``config.seed`` and the stage, so skipping stages changes no later randomness.
``hesslab analyze/demo --resume RUN_DIR`` use this. Under torchrun every rank computes
every stage; rank 0 writes the files and the other ranks
(``write_checkpoints=False``) read the same ones on resume.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from hesslab import plot as hplot
from hesslab.errors import ConfigurationError
from hesslab.io import Checkpoint
from hesslab.linalg.bounds import wolkowicz_styan
from hesslab.linalg.density import spectral_density, wasserstein1
from hesslab.linalg.lanczos import eigenpairs
from hesslab.linalg.trace import frobenius_sq, trace
from hesslab.measures.spectrum import OutlierCount, count_outliers
from hesslab.objective import Objective
from hesslab.operators.base import LinearOperator
from hesslab.operators.class_structure import class_structure, subspace_fraction
from hesslab.operators.ggn import GGNOperator
from hesslab.operators.hessian import HessianOperator
from hesslab.report import plots
from hesslab.report.run import RunDir
from hesslab.stages import StageStore

__all__ = ["DEFAULT_PARTS", "PARTS", "AnalysisConfig", "StageStore", "analyze"]

T = TypeVar("T")

PARTS = ("eig", "trace", "density", "layers", "ggn", "classes")
#: What :class:`AnalysisConfig` runs by default (``"classes"`` only on request).
DEFAULT_PARTS = ("eig", "trace", "density", "layers", "ggn")

S_EIG = "Top and bottom eigenvalues"
S_TRACE = "Trace, tr(H²) and eigenvalue bounds"
S_DENSITY = "Spectral density"
S_LAYERS = "Layerwise Hessians"
S_GGN = "Gauss–Newton vs Hessian"
S_CLASSES = "Class structure of the Gauss–Newton outliers"
S_EXACT = "Check against the exact spectrum"


@dataclass(frozen=True)
class AnalysisConfig:
    """Knobs of :func:`analyze` (every one is recorded in the run's config).

    Attributes:
        what: parts to run, a subset of :data:`PARTS` (default :data:`DEFAULT_PARTS`).
        k_top: number of top eigenpairs.
        k_bottom: number of bottom eigenpairs.
        tol: relative residual tolerance of the eigensolver.
        trace_matvecs: product budget of the trace and ``tr(H^2)`` estimates.
        density_steps: Lanczos steps of the spectral density.
        density_probes: probe vectors of the spectral density.
        layer_k: top eigenpairs per layer.
        exact_limit: compute the exact spectrum (dense ``eigh``) when ``P`` is at most this.
        seed: seed of every random choice (probe vectors, start vectors).
        basis_device: where the Krylov bases of the eigensolves and the density live:
            ``None`` (the operator's device), ``"cpu"`` or ``"disk"`` (a memory-mapped
            file; memory-bounded runs of large models, see
            :func:`~hesslab.linalg.lanczos.eigenpairs`).
        basis_dir: folder of the ``"disk"`` basis files (default: the temp folder).
    """

    what: tuple[str, ...] = DEFAULT_PARTS
    k_top: int = 20
    k_bottom: int = 3
    tol: float = 1e-6
    trace_matvecs: int = 96
    density_steps: int = 90
    density_probes: int = 1
    layer_k: int = 1
    exact_limit: int = 0
    seed: int = 0
    basis_device: str | None = None
    basis_dir: str | None = None

    def __post_init__(self) -> None:
        bad = [w for w in self.what if w not in PARTS]
        if bad:
            raise ConfigurationError(f"unknown analysis part(s) {bad}; choose from {PARTS}")
        if self.k_top < 1 or self.k_bottom < 0:
            raise ConfigurationError("k_top must be >= 1 and k_bottom >= 0")
        if self.basis_device not in (None, "cpu", "disk") and not str(self.basis_device).startswith(
            "cuda"
        ):
            raise ConfigurationError(
                f"basis_device must be None, 'cpu', 'cuda[:i]' or 'disk', got {self.basis_device!r}"
            )


def _record_eigen(run: RunDir, section: str, name: str, res: Any) -> None:
    """One summary scalar (the extreme eigenvalue with the run's diagnostics) + a table."""
    run.add_result(section, name, res, max_scalars=0)
    run.add_scalar(
        section,
        f"{name}[0]",
        float(res.values[0]),
        num_matvecs=res.num_matvecs,
        seconds=res.seconds,
        converged=f"{int(res.converged.sum())}/{len(res.values)}",
        method=res.method,
        tol=res.tol,
        peak_memory_bytes=getattr(res, "peak_memory_bytes", None),
    )
    rows = [
        {"rank": i + 1, "λ": float(v), "residual ‖Hv − λv‖": float(r), "converged": bool(c)}
        for i, (v, r, c) in enumerate(
            zip(res.values, res.residual_norms, res.converged, strict=True)
        )
    ]
    run.add_table(section, name, rows)


def _gen(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _identity(op: LinearOperator) -> LinearOperator:
    return op


def _classes_stage(
    objective: Objective,
    run: RunDir,
    cfg: AnalysisConfig,
    store: StageStore,
    basis: dict[str, Any],
    *,
    distributed: bool,
) -> dict[str, Any] | None:
    """Papyan's (2020) decomposition of G: where do its top eigenvectors live?"""
    if objective.loss.kind != "ce" or distributed:
        why = "under torchrun" if distributed else "for a non-cross-entropy loss"
        run.add_text(
            S_CLASSES,
            f"Skipped {why}: the decomposition needs softmax cross-entropy "
            "over the whole data in one process.",
        )
        return None
    cs = class_structure(objective)
    C, dev = cs.num_classes, cs.ggn.device
    g_top = store.run(
        "ggn_top",
        lambda ckpt: eigenpairs(
            cs.ggn,
            cfg.k_top,
            "largest",
            tol=cfg.tol,
            generator=_gen(cfg.seed + 5, dev),
            checkpoint=ckpt,
            **basis,
        ),
    )
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
        "the mini-bulk.",
    )
    run.add_table(
        S_CLASSES,
        "ranks",
        [{"part": k, "rank": r, "predicted (at most)": b} for k, (r, b) in ranks.items()],
    )
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
    m = min(C, len(g_top.values))
    explained = int((f_class[:m] >= 0.5).sum())
    run.add_claim(
        S_CLASSES,
        f"Papyan (2020): the top C = {C} outliers of G come from the class means",
        f"{explained}/{m} of the top {m} eigenvectors have ≥ 50% of their norm² in the "
        f"span of the class means (mean fraction {float(f_class[:m].mean()):.3f})",
        holds=True if explained == m else False if 2 * explained < m else None,
    )
    return {"class_fraction": f_class.tolist(), "explained": explained, "ranks": ranks}


def _outlier_count(top: Any, exact: Tensor | None) -> tuple[OutlierCount, str]:
    """The outlier count of :func:`hesslab.count_outliers`: from the exact spectrum when it
    was computed, else from the Lanczos top-k with their residual norms as error bounds."""
    if exact is not None:
        return count_outliers(exact), "exact spectrum"
    errors = getattr(top, "residual_norms", None)
    k = int(top.values.numel())
    oc = count_outliers(top.values, errors=errors)
    return oc, f"Lanczos top-{k}" + (" (all above the edge: raise k)" if oc.count >= k - 1 else "")


def analyze(
    objective: Objective,
    run: RunDir,
    config: AnalysisConfig | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    wrap: Callable[[LinearOperator], LinearOperator] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    write_checkpoints: bool = True,
) -> dict[str, Any]:
    """Run the curvature analysis of ``objective`` and record everything in ``run``.

    Args:
        objective: the model, loss and data at the point to analyse.
        run: the run folder to write into (not finalised here).
        config: what to compute (default :class:`AnalysisConfig`).
        progress: called with a short description before each part.
        wrap: applied to every operator before use, e.g.
            ``hesslab.distributed.DistributedOperator`` when each rank's objective holds a
            shard of the data.
        checkpoint_dir: folder for finished stages and solver checkpoints (see the
            module docstring); a second call with the same folder resumes. Delete the
            folder once the run is finalized. ``None``: nothing is saved.
        write_checkpoints: ``False``: read ``checkpoint_dir`` (resume) but write nothing
            there; for the ranks other than 0 of a torchrun job, which resume from the
            files rank 0 writes (see :class:`StageStore`).

    Returns:
        A summary dict of the headline numbers (also in ``run``'s results).
    """
    cfg = config or AnalysisConfig()
    timings: dict[str, float] = {}
    clock = {"name": None, "t": time.perf_counter()}

    def note(msg: str) -> None:
        now = time.perf_counter()
        if clock["name"] is not None:
            timings[clock["name"]] = timings.get(clock["name"], 0.0) + now - clock["t"]
        clock["name"], clock["t"] = msg, now
        if progress is not None:
            progress(msg)

    wrap = wrap or _identity
    H_local = HessianOperator(objective)
    H = wrap(H_local)
    P = H.shape[0]
    dev = H.device
    N = getattr(H, "num_total", objective.num_data)  # all shards under DistributedOperator
    summary: dict[str, Any] = {"P": P, "N": N}
    store = StageStore(
        checkpoint_dir, {"P": P, "N": N, "config": asdict(cfg)}, writable=write_checkpoints
    )
    run.add_text(
        S_EIG,
        f"Hessian of the mean loss over N = {N} points, P = {P} parameters, "
        f"{objective.space.dtype}. Eigenpairs by thick-restart Lanczos with full "
        f"reorthogonalization, stopped when every residual ‖Hv − λv‖ ≤ {cfg.tol:g}·‖H‖.",
    )
    exact = None
    if cfg.exact_limit and P <= cfg.exact_limit:
        note("exact spectrum (dense eigh)")

        def dense_spectrum(_: Any) -> tuple[Tensor, float]:
            t0 = time.perf_counter()
            D = H.to_dense().to(torch.float64)
            return torch.linalg.eigvalsh((D + D.T) / 2).cpu(), time.perf_counter() - t0

        exact, summary["exact_seconds"] = store.run("exact", dense_spectrum)
        run.add_array("exact_eigenvalues", exact.numpy())

    basis = {"basis_device": cfg.basis_device, "basis_dir": cfg.basis_dir}

    def top_eigenpairs(ckpt: Checkpoint | None) -> Any:
        gen = _gen(cfg.seed, dev)
        return eigenpairs(
            H, cfg.k_top, "largest", tol=cfg.tol, generator=gen, checkpoint=ckpt, **basis
        )

    top = None
    if "eig" in cfg.what:
        note("top eigenpairs")
        top = store.run("eig_top", top_eigenpairs)
        _record_eigen(run, S_EIG, "λ top", top)
        summary["lambda_max"] = float(top.values[0])
        summary["top_eigenvalues"] = top.values.tolist()
        bottom = None
        if cfg.k_bottom:
            note("bottom eigenpairs")
            bottom = store.run(
                "eig_bottom",
                lambda ckpt: eigenpairs(
                    H,
                    cfg.k_bottom,
                    "smallest",
                    tol=cfg.tol,
                    generator=_gen(cfg.seed + 1, dev),
                    checkpoint=ckpt,
                    **basis,
                ),
            )
            _record_eigen(run, S_EIG, "λ bottom", bottom)
            summary["lambda_min"] = float(bottom.values[0])
        outl, source = _outlier_count(top, exact)
        run.add_scalar(
            S_EIG, "outliers above the bulk edge", outl.count, method=outl.method,
            source=source, low=outl.low, high=outl.high, bulk_edge=outl.threshold,
        )  # fmt: skip
        summary["outliers"] = int(outl.count)
        summary["outliers_range"] = (outl.low, outl.high)
        summary["outliers_text"] = f"{outl.text} ({source}, bulk edge {outl.threshold:.4g})"
        if outl.count:
            summary["bulk_edge"] = float(outl.threshold)
        fig = hplot.eigenvalues(
            top, title=f"Top-{cfg.k_top} Hessian eigenvalues (bars: residual norms)"
        )
        run.add_figure(S_EIG, "top_eigenvalues", fig, "Ranked top eigenvalues of H.")
    if "trace" in cfg.what:
        note("trace and tr(H²)")
        tr = store.run(
            "trace",
            lambda ckpt: trace(
                H, cfg.trace_matvecs, generator=_gen(cfg.seed + 2, dev), checkpoint=ckpt
            ),
        )
        tr2 = store.run(
            "trace_sq",
            lambda ckpt: frobenius_sq(
                H, cfg.trace_matvecs, generator=_gen(cfg.seed + 3, dev), checkpoint=ckpt
            ),
        )
        run.add_result(S_TRACE, "tr H", tr)
        run.add_result(S_TRACE, "tr H²", tr2)
        bounds = wolkowicz_styan((tr, tr2, P))
        run.add_result(S_TRACE, "Wolkowicz–Styan", bounds)
        summary["trace"] = (tr.value, tr.stderr)
        summary["trace_sq"] = (tr2.value, tr2.stderr)
        run.add_text(
            S_TRACE,
            f"Trace by `{tr.method}` and tr(H²) by `{tr2.method}` with {cfg.trace_matvecs} "
            "products each; the Wolkowicz–Styan bounds (1980) on λ_max and λ_min follow from "
            "the two traces alone, with the ranges they span when each trace moves by its "
            "standard error.",
        )
    if "density" in cfg.what:
        note("spectral density")
        dens = store.run(
            "density",
            lambda ckpt: spectral_density(
                H,
                cfg.density_steps,
                cfg.density_probes,
                generator=_gen(cfg.seed + 4, dev),
                checkpoint=ckpt,
                **basis,
            ),
        )
        grid = dens.grid()
        values = dens.evaluate(grid)
        run.add_array("density/grid", np.asarray(grid))
        run.add_array("density/values", np.asarray(values))
        nodes, weights = dens.nodes_and_weights()
        run.add_array("density/nodes", np.asarray(nodes))
        run.add_array("density/weights", np.asarray(weights))
        run.add_scalar(
            S_DENSITY,
            "SLQ products",
            dens.num_matvecs,
            seconds=dens.seconds,
            num_steps=cfg.density_steps,
            num_probes=cfg.density_probes,
        )
        fig = hplot.density(
            dens,
            eigenvalues=None if exact is None else exact.numpy(),
            outliers=None if top is None else top.values.numpy(),
            outliers_label=f"Lanczos top-{cfg.k_top} eigenvalues",
            edge=summary.get("bulk_edge"),
            title="Hessian eigenvalue density (SLQ)",
        )
        run.add_figure(
            S_DENSITY,
            "density",
            fig,
            "Gaussian-broadened SLQ density; dashed: the Lanczos top-k eigenvalues (not "
            "all outliers); solid: the bulk edge of hesslab.count_outliers (the outliers "
            "are the eigenvalues above it)"
            + ("; histogram: exact spectrum." if exact is not None else "."),
        )
        if exact is not None:
            w1 = wasserstein1(nodes, weights, exact, torch.full_like(exact, 1.0 / P))
            width = float(exact[-1] - exact[0])
            run.add_scalar(S_DENSITY, "W1(SLQ, exact) / spectral width", w1 / width)
            summary["density_w1_rel"] = w1 / width
    if "layers" in cfg.what:
        note("layerwise Hessians")
        rows = []
        blocks = {name: wrap(b) for name, b in H_local.blocks().items()}
        for i, (name, block) in enumerate(blocks.items()):
            res = store.run(
                f"layer{i}_eig",
                lambda ckpt, i=i, block=block: eigenpairs(
                    block,
                    min(cfg.layer_k, block.shape[0]),
                    "largest",
                    tol=cfg.tol,
                    generator=_gen(cfg.seed + 10 + i, dev),
                    return_vectors=False,
                    checkpoint=ckpt,
                    **basis,
                ),
            )
            btr = store.run(
                f"layer{i}_trace",
                lambda ckpt, i=i, block=block: trace(
                    block,
                    min(cfg.trace_matvecs, 3 * block.shape[0]),
                    generator=_gen(cfg.seed + 100 + i, dev),
                    checkpoint=ckpt,
                ),
            )
            rows.append(
                {
                    "layer": name,
                    "P": block.shape[0],
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
        summary["layers"] = rows
    if "ggn" in cfg.what and objective.loss.kind != "custom":
        note("Gauss–Newton vs Hessian")
        G = wrap(GGNOperator(objective))
        k = cfg.k_top
        g_top = store.run(
            "ggn_top",
            lambda ckpt: eigenpairs(
                G,
                k,
                "largest",
                tol=cfg.tol,
                generator=_gen(cfg.seed + 5, dev),
                checkpoint=ckpt,
                **basis,
            ),
        )
        h_top = top or store.run("eig_top", top_eigenpairs)
        U_h = h_top.vectors.to(torch.float64)
        U_g = g_top.vectors.to(torch.float64)
        overlap = float((U_h.T @ U_g).square().sum() / k)
        _record_eigen(run, S_GGN, "λ top (GGN)", g_top)
        run.add_scalar(S_GGN, f"top-{k} subspace overlap ‖U_Hᵀ U_G‖²_F / k", overlap)
        summary["ggn_overlap"] = overlap
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
    if "classes" in cfg.what:
        note("class structure (Papyan 2020)")
        classes = _classes_stage(
            objective, run, cfg, store, basis, distributed=wrap is not _identity
        )
        if classes is not None:
            summary["classes"] = classes
    if exact is not None:
        rows = []
        if top is not None:
            ex_top = exact.flip(0)[: cfg.k_top]
            rel = ((top.values - ex_top).abs() / ex_top.abs().clamp_min(1e-300)).max()
            rows.append(
                {
                    "quantity": f"top-{cfg.k_top} eigenvalues",
                    "max rel. error": float(rel),
                    "estimate": float(top.values[0]),
                    "exact": float(ex_top[0]),
                }
            )
        if "trace" in cfg.what:
            t_ex = float(exact.sum())
            rows.append(
                {
                    "quantity": "trace",
                    "max rel. error": abs(tr.value - t_ex) / abs(t_ex),
                    "estimate": tr.value,
                    "exact": t_ex,
                    "within 3 stderr": abs(tr.value - t_ex) <= 3 * tr.stderr,
                }
            )
            t2_ex = float(exact.square().sum())
            rows.append(
                {
                    "quantity": "tr(H²)",
                    "max rel. error": abs(tr2.value - t2_ex) / abs(t2_ex),
                    "estimate": tr2.value,
                    "exact": t2_ex,
                    "within 3 stderr": abs(tr2.value - t2_ex) <= 3 * tr2.stderr,
                }
            )
        run.add_table(S_EXACT, "estimates vs exact", rows)
        summary["exact_check"] = rows
    note("done")
    for name, secs in timings.items():
        run.add_scalar("Run", f"seconds: {name}", secs, unit="s")
    summary["seconds"] = timings
    summary["config"] = asdict(cfg)
    return summary
