"""The main analysis job: the curvature summary of one model at one point.

:func:`analyze` takes an :class:`~hesslab.Objective` and writes into a
:class:`~hesslab.report.RunDir`: top and bottom Hessian eigenpairs (Lanczos, with
residuals), trace and ``tr(H^2)`` with standard errors and the Wolkowicz–Styan bounds they
imply, the spectral density (stochastic Lanczos quadrature, Ghorbani et al. 2019),
per-layer summaries (diagonal blocks ``H[l, l]``, Sankar et al. 2021), Gauss–Newton
vs Hessian outliers (Sagun et al. 2017), and where the Gauss–Newton outliers come from:
Papyan's (2020) class-mean / cross-class / within-class decomposition
(:func:`~hesslab.operators.class_structure.class_structure`; for C-class cross-entropy in
one process, else skipped with the reason in the report). When ``P`` is small enough the
exact spectrum (dense float64 ``eigh``) is computed too and every estimate is compared
against it.

One meaning of "outlier": the count above the bulk edge is
:func:`hesslab.count_outliers` (``method="density"``) on the exact spectrum when there is
one, else on the SLQ density (edge and count per probe, their spread), else on the
Lanczos top-k; the summary, the report, the density figure (the edge with its ±2 s.e.
band) and the CLI summary all show that one count.

Layout: :mod:`.config` (parts, sections, :class:`AnalysisConfig`), :mod:`.job` (the
state threaded through the parts), :mod:`.spectrum` (eigenpairs, traces, density,
outliers, exact check), :mod:`.structure` (layers, Gauss–Newton, class structure).

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
from dataclasses import asdict
from typing import Any

from hesslab.analysis.config import (
    DEFAULT_PARTS,
    PART_QUANTITIES,
    PARTS,
    S_EIG,
    AnalysisConfig,
)
from hesslab.analysis.job import Job, identity
from hesslab.analysis.spectrum import (
    density_figure,
    density_part,
    eig_part,
    exact_check,
    exact_part,
    outlier_part,
    trace_part,
)
from hesslab.analysis.structure import classes_part, ggn_part, layers_part
from hesslab.linalg.space import space_of
from hesslab.objective import Objective
from hesslab.operators.base import LinearOperator
from hesslab.operators.hessian import HessianOperator
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
    wrap = wrap or identity
    H_local = HessianOperator(objective)
    H = wrap(H_local)
    P = space_of(H).global_size(H.shape[0])  # all ranks' entries when sharded
    N = getattr(H, "num_total", objective.num_data)  # all shards under DistributedOperator
    store = StageStore(
        checkpoint_dir, {"P": P, "N": N, "config": asdict(cfg)}, writable=write_checkpoints
    )
    job = Job(objective, run, cfg, store, H_local, H, wrap, progress, {"P": P, "N": N})
    run.add_text(
        S_EIG,
        f"Hessian of the mean loss over N = {N} points, P = {P} parameters, "
        f"{objective.space.dtype}. Eigenpairs by thick-restart Lanczos with full "
        f"reorthogonalization, stopped when every residual ‖Hv − λv‖ ≤ {cfg.tol:g}·‖H‖.",
    )
    exact = exact_part(job)
    top = eig_part(job) if "eig" in cfg.what else None
    traces = trace_part(job) if "trace" in cfg.what else None
    dens = density_part(job, exact) if "density" in cfg.what else None
    outliers = None if top is None and dens is None else outlier_part(job, top, exact, dens)
    if dens is not None:
        density_figure(job, dens, top, exact, outliers)
    if "layers" in cfg.what:
        layers_part(job)
    if "ggn" in cfg.what and objective.loss.kind != "custom":
        ggn_part(job, top)
    if "classes" in cfg.what:
        job.begin("class structure (Papyan 2020)")
        classes_part(job)
    if exact is not None:
        exact_check(job, exact, top, traces)
    if progress is not None:
        progress("done")
    for name, secs in job.timings.items():
        run.add_scalar("Run", f"seconds: {name}", secs, unit="s")
    job.summary["seconds"] = job.timings
    job.summary["config"] = asdict(cfg)
    return job.summary
