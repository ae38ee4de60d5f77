"""One measurement vocabulary: the named curvature quantities of a symmetric operator.

Every entry of :data:`QUANTITIES` is a function ``quantity(op, settings, generator) ->
result`` of a :class:`~hesslab.operators.base.LinearOperator` ``H`` (size ``P``), the
knobs in :class:`Settings` and the generator of its randomness; it returns the library's
own frozen result, which carries its wall time (``seconds``) and operator products
(``num_matvecs``), so a caller never times a call itself:

========================  =============================================  ==================
name                      what                                           result
========================  =============================================  ==================
``lambda_max``            largest eigenpair (thick-restart Lanczos)      ``EigenResult``
``top_k``                 ``k`` largest eigenpairs                       ``EigenResult``
``bottom``                ``k`` smallest eigenpairs                      ``EigenResult``
``spectrum``              every eigenvalue, ascending (dense ``eigh``)   ``EigenResult``
``trace``                 ``tr H`` (Krylov-deflated Hutchinson, ...)     ``TraceEstimate``
``trace_sq``              ``tr H^2 = ||H||_F^2``                          ``TraceEstimate``
``density``               spectral density by SLQ (Ghorbani et al. 2019)  ``SpectralDensity``
``ws_bounds``             Wolkowicz–Styan (1980) eigenvalue bounds        ``BoundsResult``
``logdet``                ``sum_{i<=k} log lambda_i`` of the top ``k``   ``LogdetEstimate``
``outliers``              eigenvalues above the bulk edge                ``OutlierCount``
========================  =============================================  ==================

The eigensolves use ``settings.method`` (default ``"lanczos"``; ``"auto"`` lets
:func:`~hesslab.linalg.lanczos.eigenpairs` take dense ``eigh`` for small ``P``). The last
three reuse results already measured at the same point when ``settings.given`` holds them
(``given["trace"]`` and ``given["trace_sq"]`` for ``ws_bounds``, ``given["top_k"]`` for
``logdet``, ``given["spectrum"]`` or ``given["top_k"]`` for ``outliers``) and measure
them otherwise. Per-layer quantities are the same functions applied to the diagonal
blocks ``H[l, l]`` (``op.blocks()``, Sankar et al. 2021).

:func:`hesslab.analysis.analyze` and :class:`hesslab.train.SpectrumMonitor` name the
quantities they need from this table, and so do the experiments' measurements::

    s = Settings(k=5, tol=1e-6)
    top = measure("top_k", H, s, torch.Generator().manual_seed(0))
    top.values, top.num_matvecs, top.seconds
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hesslab.errors import ConfigurationError
from hesslab.linalg.bounds import wolkowicz_styan
from hesslab.linalg.density import SpectralDensity, spectral_density
from hesslab.linalg.lanczos import eigenpairs
from hesslab.linalg.logdet import logdet
from hesslab.linalg.results import BoundsResult, EigenResult, LogdetEstimate, TraceEstimate
from hesslab.linalg.space import space_of
from hesslab.linalg.trace import FROBENIUS_METHODS, frobenius_sq, trace
from hesslab.measures.spectrum import OutlierCount, count_outliers
from hesslab.operators.base import LinearOperator

__all__ = ["QUANTITIES", "Quantity", "Settings", "measure"]


@dataclass(frozen=True)
class Settings:
    """Knobs of the quantities (each uses the ones it needs).

    Attributes:
        k: number of eigenpairs (``top_k``, ``bottom``; at most ``P``), rank of
            ``logdet``.
        tol: relative residual tolerance ``||Hv - lambda v|| <= tol ||H||`` of the
            eigensolves.
        method: eigensolver of :func:`~hesslab.linalg.lanczos.eigenpairs`
            (``"lanczos"``, ``"dense"``, ``"auto"``).
        v0: start vectors ``[P, j]`` of the eigensolves (warm starts).
        block_size: Lanczos block size (``None``: single vector).
        max_matvecs: product budget of the eigensolves (``None``: the solver's default).
        return_vectors: whether eigensolves keep their eigenvectors.
        num_matvecs: product budget of ``trace``, ``trace_sq`` and ``ws_bounds``.
        trace_method: method of :func:`hesslab.trace`; ``trace_sq`` uses it when
            :func:`hesslab.frobenius_sq` has it, else ``"krylov"``.
        num_steps: Lanczos steps of ``density``.
        num_probes: probe vectors of ``density``.
        basis_device: where Krylov bases live (``None``, ``"cpu"``, ``"disk"``).
        basis_dir: folder of ``"disk"`` bases.
        checkpoint: solver checkpoint (a :class:`~hesslab.io.Checkpoint` or path) of the
            eigensolves, traces and density, for preemptible runs.
        given: results already measured at this point, by quantity name, that
            ``ws_bounds``, ``logdet`` and ``outliers`` reuse.
    """

    k: int = 1
    tol: float = 1e-6
    method: str = "lanczos"
    v0: Tensor | None = field(default=None, compare=False)
    block_size: int | None = None
    max_matvecs: int | None = None
    return_vectors: bool = True
    num_matvecs: int = 96
    trace_method: str = "krylov"
    num_steps: int = 90
    num_probes: int = 1
    basis_device: str | None = None
    basis_dir: str | None = None
    checkpoint: Any = field(default=None, compare=False)
    given: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


#: A quantity: ``(operator, settings, generator) -> result``.
Quantity = Callable[[LinearOperator, Settings, "torch.Generator | None"], Any]


def _eigen(
    op: LinearOperator, k: int, which: str, s: Settings, g: torch.Generator | None
) -> EigenResult:
    return eigenpairs(
        op, k, which, tol=s.tol, max_matvecs=s.max_matvecs, v0=s.v0, generator=g,
        block_size=s.block_size, basis_device=s.basis_device, basis_dir=s.basis_dir,
        return_vectors=s.return_vectors, checkpoint=s.checkpoint, method=s.method,
    )  # fmt: skip


def _lambda_max(op: LinearOperator, s: Settings, g: torch.Generator | None) -> EigenResult:
    """The largest eigenpair of ``op``."""
    return _eigen(op, 1, "largest", s, g)


def _top_k(op: LinearOperator, s: Settings, g: torch.Generator | None) -> EigenResult:
    """The ``s.k`` largest eigenpairs of ``op``, largest first."""
    return _eigen(op, s.k, "largest", s, g)


def _bottom(op: LinearOperator, s: Settings, g: torch.Generator | None) -> EigenResult:
    """The ``s.k`` smallest eigenpairs of ``op``, smallest first."""
    return _eigen(op, s.k, "smallest", s, g)


def _spectrum(op: LinearOperator, s: Settings, g: torch.Generator | None) -> EigenResult:
    """Every eigenvalue of ``op``, ascending: dense float64 ``eigvalsh`` (``P`` products).

    No eigenvectors (``eigh`` with vectors costs about six times as much at ``P = 3466``).
    ``residual_norms`` hold the a-priori error bound ``P * eps * ||H||_2`` of a backward
    stable symmetric eigensolver (Weyl's inequality), ``info["residual_kind"] = "bound"``.
    """
    t0 = time.perf_counter()
    A = op.to_dense().to(torch.float64)
    values = torch.linalg.eigvalsh((A + A.T) / 2).cpu()
    P = values.numel()
    normest = float(values.abs().max()) if P else 0.0
    bound = torch.full((P,), P * torch.finfo(torch.float64).eps * normest, dtype=torch.float64)
    return EigenResult(
        values=values,
        vectors=None,
        residual_norms=bound,
        converged=torch.ones(P, dtype=torch.bool),
        num_matvecs=P,
        seconds=time.perf_counter() - t0,
        method="dense",
        which="smallest",
        tol=float(s.tol),
        norm_estimate=normest,
        info={"residual_kind": "bound"},
    )


def _trace(op: LinearOperator, s: Settings, g: torch.Generator | None) -> TraceEstimate:
    """``tr op`` by :func:`hesslab.trace` with ``s.num_matvecs`` products."""
    return trace(op, s.num_matvecs, method=s.trace_method, generator=g, checkpoint=s.checkpoint)


def _trace_sq(op: LinearOperator, s: Settings, g: torch.Generator | None) -> TraceEstimate:
    """``tr op^2`` by :func:`hesslab.frobenius_sq` with ``s.num_matvecs`` products."""
    method = s.trace_method if s.trace_method in FROBENIUS_METHODS else "krylov"
    return frobenius_sq(op, s.num_matvecs, method=method, generator=g, checkpoint=s.checkpoint)


def _density(op: LinearOperator, s: Settings, g: torch.Generator | None) -> SpectralDensity:
    """The SLQ spectral density with ``s.num_steps`` steps and ``s.num_probes`` probes."""
    basis = {"basis_device": s.basis_device, "basis_dir": s.basis_dir}
    return spectral_density(
        op, s.num_steps, s.num_probes, generator=g, checkpoint=s.checkpoint, **basis
    )


def _ws_bounds(op: LinearOperator, s: Settings, g: torch.Generator | None) -> BoundsResult:
    """Wolkowicz–Styan bounds from ``given`` traces, else from fresh estimates."""
    if "trace" in s.given and "trace_sq" in s.given:
        P = space_of(op).global_size(op.shape[0])  # all ranks' entries when sharded
        return wolkowicz_styan((s.given["trace"], s.given["trace_sq"], P))
    return wolkowicz_styan(op, num_matvecs=s.num_matvecs, generator=g)


def _logdet(op: LinearOperator, s: Settings, g: torch.Generator | None) -> LogdetEstimate:
    """``sum_{i<=k} log lambda_i`` of the ``s.k`` largest (from ``given["top_k"]``).

    Raises:
        ConfigurationError: an eigenvalue is not positive beyond its error bound.
    """
    top = s.given.get("top_k")
    k = min(s.k, op.shape[0] if top is None else int(top.values.numel()))
    return logdet(op, k, eigen_result=top, tol=s.tol, generator=g)


def _outliers(op: LinearOperator, s: Settings, g: torch.Generator | None) -> OutlierCount:
    """The eigenvalues above the bulk edge (:func:`hesslab.count_outliers`).

    From ``given["spectrum"]`` (exact), else from ``given["density"]`` (the SLQ density),
    else from the Lanczos top-``k`` (``given["top_k"]`` or measured) with their residual
    norms as error bounds.
    """
    if "spectrum" in s.given:
        return count_outliers(s.given["spectrum"].values)
    if "density" in s.given:
        return count_outliers(s.given["density"])
    top = s.given.get("top_k") or _top_k(op, s, g)
    return count_outliers(top.values, errors=top.residual_norms, dimension=op.shape[0])


#: name -> quantity; see the module docstring.
QUANTITIES: dict[str, Quantity] = {
    "lambda_max": _lambda_max,
    "top_k": _top_k,
    "bottom": _bottom,
    "spectrum": _spectrum,
    "trace": _trace,
    "trace_sq": _trace_sq,
    "density": _density,
    "ws_bounds": _ws_bounds,
    "logdet": _logdet,
    "outliers": _outliers,
}


def measure(
    name: str,
    op: LinearOperator,
    settings: Settings | None = None,
    generator: torch.Generator | None = None,
) -> Any:
    """The quantity ``name`` of :data:`QUANTITIES` for ``op``.

    Raises:
        ConfigurationError: ``name`` is not in :data:`QUANTITIES`.
    """
    if name not in QUANTITIES:
        raise ConfigurationError(f"unknown quantity {name!r}; choose from {tuple(QUANTITIES)}")
    return QUANTITIES[name](op, settings or Settings(), generator)
