"""The parts, report sections and knobs of :func:`hesslab.analysis.analyze`."""

from __future__ import annotations

from dataclasses import dataclass

from hesslab.errors import ConfigurationError

__all__ = ["DEFAULT_PARTS", "PARTS", "PART_QUANTITIES", "AnalysisConfig"]


PARTS = ("eig", "trace", "density", "layers", "ggn", "classes")
#: What :class:`AnalysisConfig` runs by default (every part; ``"classes"`` is skipped, with
#: the reason in the report, unless the loss is C-class cross-entropy in one process).
DEFAULT_PARTS = PARTS

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


#: The quantities of :mod:`hesslab.quantities` each part of :func:`analyze` measures
#: (``"exact_limit"`` adds ``"spectrum"``).
PART_QUANTITIES: dict[str, tuple[str, ...]] = {
    "eig": ("top_k", "bottom", "outliers"),
    "trace": ("trace", "trace_sq", "ws_bounds"),
    "density": ("density", "outliers"),
    "layers": ("top_k", "trace"),
    "ggn": ("top_k",),
    "classes": ("top_k",),
}
