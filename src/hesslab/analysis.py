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

Every part measures through the vocabulary of :mod:`hesslab.quantities`
(:data:`PART_QUANTITIES` names the entries) and is timed by its results' own
``seconds``. ``hesslab demo`` and ``hesslab analyze`` are thin wrappers around this
function.

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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hesslab import plot as hplot
from hesslab.errors import ConfigurationError
from hesslab.io import Checkpoint
from hesslab.linalg.density import wasserstein1
from hesslab.linalg.space import space_of
from hesslab.measures.spectrum import OutlierCount
from hesslab.objective import Objective
from hesslab.operators.base import LinearOperator
from hesslab.operators.class_structure import class_structure, subspace_fraction
from hesslab.operators.ggn import GGNOperator
from hesslab.operators.hessian import HessianOperator
from hesslab.quantities import Settings, measure
from hesslab.report import plots
from hesslab.report.run import RunDir
from hesslab.stages import StageStore

__all__ = [
    "DEFAULT_PARTS",
    "PARTS",
    "PART_QUANTITIES",
    "AnalysisConfig",
    "StageStore",
    "analyze",
]


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


#: The quantities of :mod:`hesslab.quantities` each part of :func:`analyze` measures
#: (``"exact_limit"`` adds ``"spectrum"``).
PART_QUANTITIES: dict[str, tuple[str, ...]] = {
    "eig": ("top_k", "bottom", "outliers"),
    "trace": ("trace", "trace_sq", "ws_bounds"),
    "density": ("density",),
    "layers": ("top_k", "trace"),
    "ggn": ("top_k",),
    "classes": ("top_k",),
}


@dataclass
class _Job:
    """The state one :func:`analyze` call threads through its parts."""

    objective: Objective
    run: RunDir
    cfg: AnalysisConfig
    store: StageStore
    H_local: HessianOperator
    H: LinearOperator
    wrap: Callable[[LinearOperator], LinearOperator]
    progress: Callable[[str], None] | None
    summary: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    part: str = ""

    @property
    def P(self) -> int:
        return space_of(self.H).global_size(self.H.shape[0])  # all ranks' when sharded

    def begin(self, part: str) -> None:
        """Start a part: report it and time it by its results' own ``seconds``."""
        self.part = part
        self.timings.setdefault(part, 0.0)
        if self.progress is not None:
            self.progress(part)

    def settings(self, **changes: Any) -> Settings:
        cfg = self.cfg
        base = Settings(
            k=cfg.k_top, tol=cfg.tol, num_matvecs=cfg.trace_matvecs,
            num_steps=cfg.density_steps, num_probes=cfg.density_probes,
            basis_device=cfg.basis_device, basis_dir=cfg.basis_dir,
        )  # fmt: skip
        return base.replace(**changes)

    def stage(
        self, stage: str, name: str, op: LinearOperator, seed: int | None, s: Settings
    ) -> Any:
        """Quantity ``name`` of ``op`` as the resumable stage ``stage``.

        ``seed`` is the offset from ``config.seed`` of its generator (``None``:
        deterministic); the result's ``seconds`` count towards the current part.
        """

        def compute(ckpt: Checkpoint | None) -> Any:
            gen = None if seed is None else _gen(self.cfg.seed + seed, op.device)
            return measure(name, op, s.replace(checkpoint=ckpt), gen)

        result = self.store.run(stage, compute)
        self.timings[self.part] = self.timings.get(self.part, 0.0) + float(result.seconds)
        return result

    def top(self) -> Any:
        """The top-``k_top`` eigenpairs of H (stage ``eig_top``)."""
        return self.stage("eig_top", "top_k", self.H, 0, self.settings())


def _classes_stage(job: _Job) -> dict[str, Any] | None:
    """Papyan's (2020) decomposition of G: where do its top eigenvectors live?"""
    objective, run, cfg = job.objective, job.run, job.cfg
    distributed = job.wrap is not _identity
    if objective.loss.kind != "ce" or distributed:
        why = "under torchrun" if distributed else "for a non-cross-entropy loss"
        run.add_text(
            S_CLASSES,
            f"Skipped {why}: the decomposition needs softmax cross-entropy "
            "over the whole data in one process.",
        )
        return None
    cs = class_structure(objective)
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
        "the mini-bulk.",
    )
    run.add_table(
        S_CLASSES,
        "ranks",
        [{"part": k, "rank": r, "predicted (at most)": b} for k, (r, b) in ranks.items()],
    )
    _record_classes(run, cfg, cs, g_top, f_class, f_both)
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


def _outlier_count(job: _Job, top: Any, exact: Any) -> tuple[OutlierCount, str]:
    """The outlier count of :func:`hesslab.count_outliers` and where it comes from.

    From the exact spectrum when it was computed, else from the Lanczos top-k with their
    residual norms as error bounds.
    """
    given = {"top_k": top} if exact is None else {"spectrum": exact}
    oc = measure("outliers", job.H, job.settings(given=given))
    if exact is not None:
        return oc, "exact spectrum"
    k = int(top.values.numel())
    return oc, f"Lanczos top-{k}" + (" (all above the edge: raise k)" if oc.count >= k - 1 else "")


def _exact_part(job: _Job) -> Any:
    """The exact spectrum (dense float64 ``eigvalsh``) when ``P <= exact_limit``."""
    cfg = job.cfg
    if not (cfg.exact_limit and job.P <= cfg.exact_limit):
        return None
    job.begin("exact spectrum (dense eigh)")
    exact = job.stage("spectrum", "spectrum", job.H, None, job.settings())
    job.summary["exact_seconds"] = exact.seconds
    job.run.add_array("exact_eigenvalues", exact.values.numpy())
    return exact


def _eig_part(job: _Job, exact: Any) -> Any:
    """Top and bottom eigenpairs of H and the outliers above the bulk edge."""
    cfg, run, summary = job.cfg, job.run, job.summary
    job.begin("top eigenpairs")
    top = job.top()
    _record_eigen(run, S_EIG, "λ top", top)
    summary["lambda_max"] = float(top.values[0])
    summary["top_eigenvalues"] = top.values.tolist()
    if cfg.k_bottom:
        job.begin("bottom eigenpairs")
        bottom = job.stage("eig_bottom", "bottom", job.H, 1, job.settings(k=cfg.k_bottom))
        _record_eigen(run, S_EIG, "λ bottom", bottom)
        summary["lambda_min"] = float(bottom.values[0])
    outl, source = _outlier_count(job, top, exact)
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
    return top


def _trace_part(job: _Job) -> tuple[Any, Any]:
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


def _density_part(job: _Job, top: Any, exact: Any) -> None:
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
    fig = hplot.density(
        dens,
        eigenvalues=None if ex is None else ex.numpy(),
        outliers=None if top is None else top.values.numpy(),
        outliers_label=f"Lanczos top-{cfg.k_top} eigenvalues",
        edge=job.summary.get("bulk_edge"),
        title="Hessian eigenvalue density (SLQ)",
    )
    run.add_figure(
        S_DENSITY,
        "density",
        fig,
        "Gaussian-broadened SLQ density; dashed: the Lanczos top-k eigenvalues (not "
        "all outliers); solid: the bulk edge of hesslab.count_outliers (the outliers "
        "are the eigenvalues above it)"
        + ("; histogram: exact spectrum." if ex is not None else "."),
    )
    if ex is not None:
        w1 = wasserstein1(nodes, weights, ex, torch.full_like(ex, 1.0 / job.P))
        width = float(ex[-1] - ex[0])
        run.add_scalar(S_DENSITY, "W1(SLQ, exact) / spectral width", w1 / width)
        job.summary["density_w1_rel"] = w1 / width


def _layers_part(job: _Job) -> None:
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


def _ggn_part(job: _Job, top: Any) -> None:
    """Top eigenpairs of the Gauss–Newton matrix and their overlap with H's."""
    run, k = job.run, job.cfg.k_top
    job.begin("Gauss–Newton vs Hessian")
    G = job.wrap(GGNOperator(job.objective))
    g_top = job.stage("ggn_top", "top_k", G, 5, job.settings())
    h_top = top or job.top()
    U_h = h_top.vectors.to(torch.float64)
    U_g = g_top.vectors.to(torch.float64)
    overlap = float((U_h.T @ U_g).square().sum() / k)
    _record_eigen(run, S_GGN, "λ top (GGN)", g_top)
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


def _exact_check(job: _Job, exact: Any, top: Any, traces: tuple[Any, Any] | None) -> None:
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

    Each part measures the quantities :data:`PART_QUANTITIES` names from
    :mod:`hesslab.quantities`; its time (``summary["seconds"]``, the ``"Run"`` section's
    ``seconds: <part>``) is the sum of its results' own ``seconds``.

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
    wrap = wrap or _identity
    H_local = HessianOperator(objective)
    H = wrap(H_local)
    P = space_of(H).global_size(H.shape[0])
    N = getattr(H, "num_total", objective.num_data)  # all shards under DistributedOperator
    store = StageStore(
        checkpoint_dir, {"P": P, "N": N, "config": asdict(cfg)}, writable=write_checkpoints
    )
    job = _Job(objective, run, cfg, store, H_local, H, wrap, progress, {"P": P, "N": N})
    run.add_text(
        S_EIG,
        f"Hessian of the mean loss over N = {N} points, P = {P} parameters, "
        f"{objective.space.dtype}. Eigenpairs by thick-restart Lanczos with full "
        f"reorthogonalization, stopped when every residual ‖Hv − λv‖ ≤ {cfg.tol:g}·‖H‖.",
    )
    exact = _exact_part(job)
    top = _eig_part(job, exact) if "eig" in cfg.what else None
    traces = _trace_part(job) if "trace" in cfg.what else None
    if "density" in cfg.what:
        _density_part(job, top, exact)
    if "layers" in cfg.what:
        _layers_part(job)
    if "ggn" in cfg.what and objective.loss.kind != "custom":
        _ggn_part(job, top)
    if "classes" in cfg.what:
        job.begin("class structure (Papyan 2020)")
        classes = _classes_stage(job)
        if classes is not None:
            job.summary["classes"] = classes
    if exact is not None:
        _exact_check(job, exact, top, traces)
    if progress is not None:
        progress("done")
    for name, secs in job.timings.items():
        run.add_scalar("Run", f"seconds: {name}", secs, unit="s")
    job.summary["seconds"] = job.timings
    job.summary["config"] = asdict(cfg)
    return job.summary
