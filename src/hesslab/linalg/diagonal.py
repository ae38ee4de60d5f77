"""Estimates of the diagonal ``diag(A)`` of a symmetric operator from matrix-vector products.

* ``"hutchinson"`` (Bekas, Kokiopoulou & Saad, Appl. Numer. Math. 2007):
  ``diag(A) ~ (sum_k v_k ⊙ A v_k) / (sum_k v_k ⊙ v_k)`` (entrywise). With Rademacher probes
  the denominator is ``N`` and the estimate is unbiased with per-entry variance
  ``sum_{j != i} A_ij^2 / N``.
* ``"xdiag"`` (Epperly, Tropp & Webber, SIMAX 2024): the exchangeable Diag++ estimator. With
  ``N/2`` probes ``Omega``, ``Y = A Omega = Q R`` and ``P_i`` the projector on ``range`` of
  ``Y`` without column ``i``, each ``d_i = diag(P_i A) + omega_i ⊙ (I - P_i) A omega_i`` is
  unbiased; the estimate is their mean and the per-entry standard error their standard
  deviation over ``sqrt(N/2)``. Much more accurate when ``A`` has a few dominant eigenvalues.
* ``"exact"``: ``A_ii = e_i^T A e_i`` with ``P`` unit vectors (small ``P`` or dense input).
"""

from __future__ import annotations

import math
import time
from typing import Literal

import torch
from torch import Tensor

from hesslab.errors import ConfigurationError
from hesslab.linalg.basis import orthonormalize
from hesslab.linalg.memory import records_peak_memory
from hesslab.linalg.probes import Engine, check_positive_int
from hesslab.linalg.results import DiagonalEstimate, to_cpu64
from hesslab.operators.base import DenseOperator, LinearOperator
from hesslab.validation import require_symmetric

__all__ = ["diagonal"]

DIAGONAL_METHODS: tuple[str, ...] = ("hutchinson", "xdiag", "exact")


def _xdiag_estimates(Omega: Tensor, Y: Tensor, Q: Tensor, Z: Tensor) -> Tensor:
    """``[P, m]`` per-probe XDiag estimates ``d_i`` (see module docstring).

    Full-rank case (``Y = Q R``, ``R`` invertible): ``P_i = Q (I - s_i s_i^T) Q^T`` with
    ``s_i = R^{-T} e_i / ||R^{-T} e_i||``, hence
    ``diag(P_i A) = rowsum(Q ⊙ Z) - (Q s_i) ⊙ (Z s_i)`` and
    ``(I - P_i) A omega_i = (Q s_i) (s_i^T r_i)`` because ``A omega_i = y_i = Q r_i``.
    """
    m = Omega.shape[1]
    R = Q.T @ Y
    base = (Q * Z).sum(1, keepdim=True)
    if Q.shape[1] == m:
        Sinv = torch.linalg.solve(R.T, torch.eye(m, dtype=R.dtype, device=R.device))
        S = Sinv / torch.linalg.vector_norm(Sinv, dim=0, keepdim=True)
        QS, ZS = Q @ S, Z @ S
        sr = (S * R).sum(0)
        return base - QS * ZS + Omega * QS * sr
    out = torch.empty_like(Omega)
    for i in range(m):
        Ui = orthonormalize(torch.cat([R[:, :i], R[:, i + 1 :]], dim=1))
        QU, ZU = Q @ Ui, Z @ Ui
        rest = Y[:, i] - QU @ (Ui.T @ R[:, i])
        out[:, i] = (QU * ZU).sum(1) + Omega[:, i] * rest
    return out


@records_peak_memory
def diagonal(
    op: LinearOperator | Tensor,
    num_matvecs: int = 96,
    *,
    method: Literal["hutchinson", "xdiag", "exact"] = "hutchinson",
    distribution: Literal["rademacher", "gaussian", "sphere"] = "rademacher",
    generator: torch.Generator | None = None,
    block_size: int | None = None,
) -> DiagonalEstimate:
    """Estimate ``diag(A)`` with a per-entry standard error.

    Args:
        op: the operator ``A`` (``[P, P]``), or anything :func:`~hesslab.as_operator` takes.
            A :class:`~hesslab.operators.DenseOperator` with ``method="exact"`` is read
            directly (no products).
        num_matvecs: budget ``N`` of operator columns (``"xdiag"`` uses ``N/2`` probes and
            ``N/2`` sketch products; ignored by ``"exact"``, which applies ``P`` columns).
        method: ``"hutchinson"`` (Bekas et al., 2007), ``"xdiag"`` (Epperly et al., 2024)
            or ``"exact"``.
        distribution: ``"rademacher"`` (default, lowest variance), ``"gaussian"``, ``"sphere"``.
        generator: source of randomness (``None``: fresh entropy-seeded generator).
        block_size: at most this many columns per operator call.

    Returns:
        :class:`~hesslab.linalg.results.DiagonalEstimate` with ``values`` and ``stderr``
        (``[P]``, float64, CPU). For ``"hutchinson"`` the standard error is the delta-method
        error of the ratio estimator, ``sqrt(sum_k (a_k - d b_k)^2 / (N (N-1))) / mean_k b_k``
        with ``a_k = v_k ⊙ A v_k`` and ``b_k = v_k ⊙ v_k`` (the plain standard error of the
        mean for Rademacher probes).

    Raises:
        ConfigurationError: unknown method or distribution, or too small a budget.
    """
    t0 = time.perf_counter()
    check_positive_int("num_matvecs", num_matvecs)
    if method not in DIAGONAL_METHODS:
        raise ConfigurationError(f"unknown method {method!r}; choose one of {DIAGONAL_METHODS}")
    engine = Engine(op, distribution=distribution, generator=generator, block_size=block_size)
    if engine.space.distributed:
        raise ConfigurationError(
            "diagonal does not run on sharded operators yet; gather the vectors (or use "
            "trace for tr H)"
        )
    if method == "xdiag":  # the exchangeable low-rank part assumes A = A^T
        require_symmetric(engine.op, "diagonal (method='xdiag')")
    N = num_matvecs
    info: dict = {"distribution": distribution}

    if method == "exact":
        values = to_cpu64(_exact_diagonal(engine))
        return DiagonalEstimate(
            values=values,
            stderr=torch.zeros_like(values),
            num_matvecs=engine.num_matvecs,
            seconds=time.perf_counter() - t0,
            method=method,
            info=info,
        )
    if method == "hutchinson":
        values, stderr = _hutchinson_diagonal(engine, N)
    else:
        values, stderr = _xdiag_diagonal(engine, N, info)
    return DiagonalEstimate(
        values=to_cpu64(values),
        stderr=to_cpu64(stderr),
        num_matvecs=engine.num_matvecs,
        seconds=time.perf_counter() - t0,
        method=method,
        info=info,
    )


def _exact_diagonal(engine: Engine) -> Tensor:
    """``diag(A)`` read from a dense operator, or from ``P`` unit-vector products."""
    if isinstance(engine.op, DenseOperator):
        return torch.diagonal(engine.op.A).to(torch.float64)
    P, step = engine.P, engine.block_size or 256
    parts = []
    for start in range(0, P, step):
        E = engine.unit_block(start, min(P, start + step))
        parts.append((E * engine.apply(E)).sum(1)[start : start + E.shape[1]])
    return torch.cat(parts)


def _hutchinson_diagonal(engine: Engine, N: int) -> tuple[Tensor, Tensor]:
    """Ratio estimator ``sum_k v_k ⊙ A v_k / sum_k v_k ⊙ v_k`` and its delta-method error."""
    if N < 2:
        raise ConfigurationError("hutchinson diagonal needs num_matvecs >= 2 for a stderr")
    V = engine.probes(N)
    A_ = V * engine.apply(V)
    B_ = V * V
    values = A_.sum(1) / B_.sum(1)
    resid = A_ - values[:, None] * B_
    return values, (resid.pow(2).sum(1) / (N * (N - 1))).sqrt() / B_.mean(1)


def _xdiag_diagonal(engine: Engine, N: int, info: dict) -> tuple[Tensor, Tensor]:
    """XDiag (Epperly et al., 2024) from ``N/2`` probes and ``N/2`` sketch products."""
    m = min(N // 2, engine.P)
    if m < 2:
        raise ConfigurationError(f"xdiag needs num_matvecs >= 4, got {N}")
    Omega = engine.probes(m)
    Y = engine.apply(Omega)
    Q = orthonormalize(Y)
    Z = engine.apply(Q)
    D = _xdiag_estimates(Omega, Y, Q, Z)
    info["num_probes"] = m
    info["sketch_dim"] = Q.shape[1]
    return D.mean(1), D.std(dim=1, unbiased=True) / math.sqrt(m)
