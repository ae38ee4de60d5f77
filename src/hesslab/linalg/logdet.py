"""Log-determinants: of the top-``r`` (non-degenerate) block, and ``tr log(A + delta I)``.

Wei & Schwab (2019) predict that isotropic noise lowers ``log det`` of the Hessian
restricted to its non-degenerate subspace; with ``r`` the number of clearly positive
eigenvalues that is ``sum_{i <= r} log lambda_i`` (:func:`logdet`). For the whole
spectrum, ``log det(A + delta I) = tr log(A + delta I)`` is estimated by stochastic Lanczos
quadrature (Ubaru, Chen & Saad, 2017, "Fast estimation of tr(f(A)) via stochastic Lanczos
quadrature", SIAM J. Matrix Anal. Appl.) in :func:`logdet_slq`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from hesslab.errors import ConfigurationError
from hesslab.io import Checkpoint
from hesslab.linalg.density import spectral_density
from hesslab.linalg.lanczos import eigenpairs
from hesslab.linalg.memory import records_peak_memory
from hesslab.linalg.probes import mean_stderr
from hesslab.linalg.results import EigenResult, LogdetEstimate, rounding_floor
from hesslab.operators.base import as_operator

__all__ = ["logdet", "logdet_slq"]


@records_peak_memory
def logdet(
    op: Any,
    rank: int,
    *,
    eigen_result: EigenResult | None = None,
    tol: float = 1e-8,
    generator: torch.Generator | None = None,
    error_bounds: torch.Tensor | float | None = None,
) -> LogdetEstimate:
    """``sum_{i <= rank} log lambda_i`` over the ``rank`` largest eigenvalues.

    The eigenvalues come from :func:`~hesslab.linalg.lanczos.eigenpairs` (``which=
    "largest"``, relative residual ``tol``) unless ``eigen_result`` already holds at least
    ``rank`` of the largest ones. The error of each eigenvalue is at most its error bound
    ``b_i`` (:meth:`~hesslab.linalg.results.EigenResult.error_bounds`: the residual norm
    plus the products' rounding ``~ sqrt(P) eps ||A||``; ``O(residual^2 / gap)`` for a
    separated one); ``info["max_abs_error"]`` gives ``sum_i b_i / lambda_i``, a
    first-order bound on the error of the sum. An eigenvalue with ``lambda_i <= b_i`` is
    zero (or negative) within its error, so its log is undefined and the call raises:
    rounding never turns a zero eigenvalue into a finite ``log(1e-17)``.

    Args:
        op: symmetric operator (anything :func:`~hesslab.as_operator` accepts).
        rank: ``r``, the size of the non-degenerate block (``1 <= r <= P``).
        eigen_result: optional earlier ``which="largest"`` result with ``>= r`` values.
        tol: relative residual tolerance for the eigenpairs computed here.
        error_bounds: ``b_i`` (a number or ``[r]``) instead of the default
            ``EigenResult.error_bounds`` (whose rounding part, ``10 sqrt(P) eps ||A||``,
            is conservative for a large float32 operator).
        generator: randomness for the eigensolver.

    Returns:
        :class:`~hesslab.linalg.results.LogdetEstimate` with ``method="eigenpairs"``,
        ``values`` the ``r`` eigenvalues, ``stderr = 0``.

    Raises:
        ConfigurationError: ``rank`` invalid, ``eigen_result`` unusable, or one of the top
            ``r`` eigenvalues is ``<= b_i`` (not positive within its error bound; the
            message says which and the largest rank that works).
    """
    t0 = time.perf_counter()
    op = as_operator(op)
    P = op.shape[0]
    if not isinstance(rank, int) or not 1 <= rank <= P:
        raise ConfigurationError(f"rank must be an int in [1, P={P}], got {rank!r}")
    if eigen_result is not None:
        if eigen_result.which != "largest" or eigen_result.values.numel() < rank:
            raise ConfigurationError(
                f"eigen_result must come from eigenpairs(op, k>={rank}, which='largest'); "
                f"got which={eigen_result.which!r} with {eigen_result.values.numel()} values"
            )
        res = eigen_result
        num_matvecs = 0
    else:
        res = eigenpairs(op, rank, "largest", tol=tol, generator=generator, return_vectors=False)
        num_matvecs = res.num_matvecs
    vals = res.values[:rank].to(torch.float64)
    if error_bounds is None:
        bounds = res.error_bounds(P, op.dtype)[:rank]
    else:
        bounds = torch.as_tensor(error_bounds, dtype=torch.float64).expand(rank).clone()
    _require_positive(vals, bounds, rank)
    value = float(torch.log(vals).sum())
    return LogdetEstimate(
        value=value,
        stderr=0.0,
        num_matvecs=num_matvecs,
        seconds=time.perf_counter() - t0,
        method="eigenpairs",
        rank=rank,
        values=vals,
        info={
            "max_abs_error": float((bounds / vals).sum()),
            "all_converged": bool(res.converged[:rank].all()),
        },
    )


def _require_positive(vals: torch.Tensor, bounds: torch.Tensor, rank: int) -> None:
    """Raise unless every ``vals[i] > bounds[i]`` (positive beyond its error bound)."""
    bad = torch.nonzero(vals <= bounds).flatten()
    if bad.numel():
        i = int(bad[0])
        raise ConfigurationError(
            f"eigenvalue number {i + 1} of the top {rank} is {float(vals[i]):.3e}, not "
            f"positive within its error bound {float(bounds[i]):.3e} (residual plus "
            f"rounding), so its log is undefined; use rank <= {i} (the number of clearly "
            "positive eigenvalues found), a smaller tol if the residual dominates the bound, "
            "or logdet_slq(op, shift=...) for a shifted full-spectrum log-det"
        )


@records_peak_memory
def logdet_slq(
    op: Any,
    shift: float = 0.0,
    num_steps: int = 30,
    num_probes: int = 10,
    *,
    generator: torch.Generator | None = None,
    distribution: str = "rademacher",
    checkpoint: str | os.PathLike[str] | Checkpoint | None = None,
    basis_device: torch.device | str | None = None,
    basis_dir: str | os.PathLike[str] | None = None,
    basis_chunk: int | None = None,
) -> LogdetEstimate:
    """SLQ estimate of ``tr log(A + delta I) = log det(A + delta I)`` with its stderr.

    Each probe ``v`` gives ``P sum_j w_j log(theta_j + delta)`` from the ``m``-node Gauss
    quadrature of ``A`` (Krylov spaces are shift invariant, so the Ritz values of
    ``A + delta I`` are ``theta_j + delta``); the estimate is the mean over probes and
    ``stderr`` their standard deviation over ``sqrt(K)`` (NaN for one probe). The
    quadrature error decays like ``exp(-2 m / sqrt(kappa))`` with ``kappa`` the condition
    number of ``A + delta I`` (Ubaru, Chen & Saad, 2017).

    Args:
        op: symmetric operator (anything :func:`~hesslab.as_operator` accepts).
        shift: ``delta``; ``A + delta I`` must be positive definite.
        num_steps: Lanczos steps ``m`` per probe.
        num_probes: ``K``.
        generator: randomness for the probes.
        distribution: ``"rademacher"`` or ``"gaussian"``.
        checkpoint: a file path; the SLQ state is saved there after every probe and a
            later call with the same arguments resumes from it (see
            :func:`~hesslab.linalg.density.spectral_density`).
        basis_device: where the Lanczos bases live (e.g. ``"disk"``), as in
            :func:`~hesslab.linalg.density.spectral_density`.
        basis_dir: folder of a ``"disk"`` basis, as in
            :func:`~hesslab.linalg.density.spectral_density`.
        basis_chunk: vectors moved at a time for a ``"disk"`` basis, as in
            :func:`~hesslab.linalg.density.spectral_density`.

    Returns:
        :class:`~hesslab.linalg.results.LogdetEstimate` with ``method="slq"``,
        ``info["samples"]`` the per-probe values.

    Raises:
        ConfigurationError: a Ritz value of ``A + delta I`` is ``<= 0`` up to rounding
            (:func:`~hesslab.linalg.results.rounding_floor`; the shifted operator is not
            positive definite): the message gives the smallest Ritz value and the shift
            that would be needed.
    """
    t0 = time.perf_counter()
    op = as_operator(op)
    P = op.shape[0]
    dens = spectral_density(
        op,
        num_steps,
        num_probes,
        generator=generator,
        distribution=distribution,
        converged_tol=None,
        checkpoint=checkpoint,
        basis_device=basis_device,
        basis_dir=basis_dir,
        basis_chunk=basis_chunk,
    )
    shifted = dens.nodes + shift
    used = dens.weights > 0
    scale = float(shifted[used].abs().max()) if bool(used.any()) else 0.0
    floor = rounding_floor(scale, P, op.dtype)  # a Ritz value this close to 0 may be 0
    if bool((shifted[used] <= floor).any()):
        lo = float(dens.nodes[used].min())
        raise ConfigurationError(
            f"A + {shift:g} I is not positive definite within rounding ({floor:.2g}): the "
            f"smallest Ritz value of A is {lo:.6g}; choose shift > {-lo:.6g} (Ritz values "
            "lie inside the spectrum, so allow a margin)"
        )
    logs = torch.where(used, torch.log(shifted.clamp_min(1e-300)), torch.zeros_like(shifted))
    samples = P * (dens.weights * logs).sum(dim=1)
    value, stderr = mean_stderr(samples)  # inf for one probe, as for the trace
    return LogdetEstimate(
        value=value,
        stderr=stderr,
        num_matvecs=dens.num_matvecs,
        seconds=time.perf_counter() - t0,
        method="slq",
        shift=float(shift),
        info={"samples": samples, "num_steps": dens.num_steps, "num_probes": samples.numel()},
    )
