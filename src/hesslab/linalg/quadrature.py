"""Gauss quadrature rules of spectral measures by Lanczos: the SLQ recurrence.

For a start vector ``v``, ``m`` Lanczos steps give the tridiagonal ``T_m`` (with partial
reorthogonalization, Simon 1984: a full Gram–Schmidt only when the omega-recurrence of
:class:`~hesslab.linalg.basis.OrthogonalityEstimate` says the basis would lose
semi-orthogonality, ``|v_i^T v_j| > sqrt(eps)``; ``T_m`` is then the projection of ``A`` on
an orthonormal basis of the Krylov space to ``O(eps ||A||)``, so its nodes carry no ghost
copies); with ``T_m = S diag(theta) S^T`` the Gauss quadrature rule for the
spectral measure ``mu_v = sum_i (u_i^T v)^2/||v||^2 delta_{lambda_i}`` has nodes
``theta`` and weights ``S[0, :]^2``, exact for polynomials of degree ``<= 2m - 1``
(Golub & Welsch, 1969; Golub & Meurant, 2010, "Matrices, Moments and Quadrature").
:func:`lanczos_quadrature` runs ``K`` such recurrences sharing one block product per step
and returns their rules as a frozen :class:`QuadratureRule`; the estimators built on it
(:func:`~hesslab.linalg.density.spectral_density`, :func:`~hesslab.linalg.logdet.logdet_slq`)
only read rules. Bases and orthogonalization are :mod:`hesslab.linalg.basis`' (the basis
in the operator's dtype, ``alpha``/``beta`` in float64).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from hesslab.errors import ConfigurationError
from hesslab.linalg.basis import (
    BREAKDOWN_RTOL,
    Basis,
    OrthogonalityEstimate,
    col_norms,
    orthogonalize,
    owned,
)
from hesslab.linalg.space import space_of
from hesslab.operators.base import LinearOperator
from hesslab.validation import require_symmetric

__all__ = ["QuadratureRule", "lanczos_quadrature"]

f64 = torch.float64


class QuadratureRule(NamedTuple):
    """``K`` Gauss quadrature rules of ``m`` nodes (float64 CPU tensors; immutable).

    Attributes:
        nodes: ``[K, m]`` Ritz values per start vector; a recurrence that found an
            invariant subspace after ``j < m`` steps (its rule is then exact) repeats its
            last node with weight 0.
        weights: ``[K, m]`` squared first components of the eigenvectors of ``T``.
        residuals: ``[K, m]`` Ritz residual norms ``beta_m |S[m-1, j]|`` of the nodes
            (0 for a recurrence that found an invariant subspace).
        steps: ``[K]`` Lanczos steps taken.
        num_matvecs: operator columns applied.
    """

    nodes: Tensor
    weights: Tensor
    residuals: Tensor
    steps: Tensor
    num_matvecs: int


def lanczos_quadrature(
    op: LinearOperator,
    V0: Tensor,
    num_steps: int,
    *,
    deflate: Tensor | None = None,
    basis_device: torch.device | str | None = None,
    basis_dir: str | os.PathLike[str] | None = None,
    basis_chunk: int | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> QuadratureRule:
    """Run ``K`` independent Lanczos recurrences and return their Gauss quadratures.

    The ``K`` recurrences share one block product per step (see the module docstring
    for the rule).

    Args:
        op: symmetric operator.
        V0: ``[P, K]`` start vectors.
        num_steps: ``m``.
        deflate: optional ``[P, r]`` orthonormal block; the recurrences then run on
            ``(I - U U^T) A (I - U U^T)`` restricted to the complement of ``span(U)``.
        basis_device: where the ``K`` bases live (default ``op.device``), or ``"disk"``:
            memory-mapped files as in :func:`~hesslab.linalg.eigenpairs` (arithmetic on
            ``op.device``, ``basis_chunk`` vectors at a time).
        basis_dir: directory of those files (default: the system temporary directory).
        basis_chunk: basis vectors per transfer with ``"disk"`` (default: 256 MiB worth).
        callback: called after every step with ``{"step", "num_matvecs"}``.

    Returns:
        :class:`QuadratureRule` (a named tuple: ``nodes, weights, residuals, steps,
        num_matvecs``).

    Raises:
        ConfigurationError: a start vector is zero or lies in the deflated space.
        NonSymmetricError: the operator is known not to be symmetric.
    """
    require_symmetric(op, "Lanczos quadrature")
    P, space = op.shape[0], space_of(op)  # a sharded operator: V0 is this rank's rows
    disk = isinstance(basis_device, str) and basis_device == "disk"
    wdev = op.device if basis_device is None or disk else torch.device(basis_device)
    m, K = int(num_steps), V0.shape[1]
    bases: list[Basis] = []
    try:
        kw = {"dtype": op.dtype, "device": wdev, "disk": disk, "chunk": basis_chunk}
        bases.extend(Basis(P, m, directory=basis_dir, space=space, **kw) for _ in range(K))
        U = None if deflate is None else deflate.to(dtype=op.dtype, device=wdev)
        return _recurrences(op, V0.detach().to(dtype=op.dtype, device=wdev), bases, U, callback)
    finally:
        for basis in bases:
            basis.close()


def _recurrences(
    op: LinearOperator,
    V0: Tensor,
    bases: list[Basis],
    U: Tensor | None,
    callback: Callable[[dict[str, Any]], None] | None,
) -> QuadratureRule:
    """The ``K`` recurrences (start block ``V0`` in the bases' dtype and device)."""
    space = space_of(op)
    P, K = space.global_size(V0.shape[0]), V0.shape[1]
    m = bases[0].m if bases else 0
    if U is not None:
        _, V0 = orthogonalize(U, V0.clone(), space=space)
    norms = col_norms(V0, space)
    if bool((norms == 0).any()):
        raise ConfigurationError("a probe vector is zero (or lies in the deflated space)")
    for kk, basis in enumerate(bases):
        basis.put(0, V0[:, kk : kk + 1] / float(norms[kk]))
    alpha = torch.zeros(K, m, dtype=f64)
    beta = torch.zeros(K, m, dtype=f64)
    steps = torch.zeros(K, dtype=torch.long)
    active = [True] * K
    orthos = [OrthogonalityEstimate(m, V0.dtype) for _ in range(K)]
    tridiagonals = [torch.zeros(m, m, dtype=f64) for _ in range(K)]
    num_matvecs, normest = 0, 0.0
    for j in range(m):
        idx = [kk for kk in range(K) if active[kk]]
        if not idx:
            break
        cols = [bases[kk].cols(j, j + 1) for kk in idx]
        Xa = cols[0] if len(cols) == 1 else torch.cat(cols, dim=1)  # one probe: no copy
        Xo = Xa.to(dtype=op.dtype, device=op.device).contiguous()
        Wa = owned(op.matmat(Xo).detach(), Xo).to(dtype=V0.dtype, device=V0.device)
        num_matvecs += len(idx)
        if U is not None:
            _, Wa = orthogonalize(U, Wa, space=space)
        normest = max(normest, float(col_norms(Wa, space).max()))
        for c, kk in enumerate(idx):
            w = Wa[:, c : c + 1].contiguous()
            T = tridiagonals[kk]
            a, bnorm, w, omega = _three_term(bases[kk], orthos[kk], T, w, j, U, normest)
            alpha[kk, j], steps[kk] = a, j + 1
            beta[kk, j] = bnorm
            if j + 1 < m:
                if bnorm <= BREAKDOWN_RTOL * max(normest, abs(a), 1e-300) or j + 1 >= P:
                    active[kk] = False
                else:
                    bases[kk].put(j + 1, w.div_(bnorm))
                    orthos[kk].set(j + 1, omega)
                    T[j, j + 1] = T[j + 1, j] = bnorm
        if callback is not None:
            callback({"step": j + 1, "num_matvecs": num_matvecs})
    return _rules(alpha, beta, steps, m, num_matvecs)


def _three_term(
    basis: Basis,
    ortho: OrthogonalityEstimate,
    T: Tensor,
    w: Tensor,
    j: int,
    U: Tensor | None,
    normest: float,
) -> tuple[float, float, Tensor, Tensor]:
    """One Lanczos step with partial reorthogonalization (Simon 1984) on ``w = A v_j``:
    ``alpha = v_j^T w``, ``w -= beta_{j-1} v_{j-1} + alpha v_j`` in one pass (and the
    projection off ``U``); a full Gram–Schmidt against ``v_0..v_j`` only when the
    omega-recurrence says the basis would lose semi-orthogonality. ``T`` (float64
    ``[m, m]``) is the tridiagonal so far, updated with ``alpha``. Returns
    ``(alpha, ||w||, w, omega)``, ``omega`` the new vector's estimates."""
    space = basis.space
    a = float(basis.tmm(j + 1, w, start=j)[0, 0])
    T[j, j] = a
    lo = max(j - 1, 0)
    basis.sub_mm_(j + 1, w, T[lo : j + 1, j : j + 1].to(dtype=w.dtype, device=w.device), start=lo)
    if U is not None:
        _, w = orthogonalize(U, w, space=space)
    bnorm = float(col_norms(w, space)[0])
    x = ortho.predict(T, j, j + 1, bnorm, max(normest, abs(a)))
    if ortho.needs_full(x):
        _, w = orthogonalize(basis, w, j + 1)
        if U is not None:
            _, w = orthogonalize(U, w, space=space)
        bnorm = float(col_norms(w, space)[0])
        x = ortho.full(x)
    return a, bnorm, w, x


def _rules(alpha: Tensor, beta: Tensor, steps: Tensor, m: int, num_matvecs: int) -> QuadratureRule:
    """Gauss rules (Golub–Welsch) of the tridiagonals ``(alpha, beta)`` of each recurrence."""
    K = alpha.shape[0]
    nodes = torch.zeros(K, m, dtype=f64)
    weights = torch.zeros(K, m, dtype=f64)
    residuals = torch.zeros(K, m, dtype=f64)
    for kk in range(K):
        j = int(steps[kk])
        T = torch.diag(alpha[kk, :j])
        if j > 1:
            off = beta[kk, : j - 1]
            T = T + torch.diag(off, 1) + torch.diag(off, -1)
        theta, S = torch.linalg.eigh(T)
        nodes[kk, :j] = theta
        nodes[kk, j:] = theta[-1]
        weights[kk, :j] = S[0, :] ** 2
        last = 0.0 if j < m else float(beta[kk, j - 1])
        residuals[kk, :j] = last * S[-1, :].abs()
    return QuadratureRule(nodes, weights, residuals, steps, num_matvecs)
