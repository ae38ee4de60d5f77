"""One block Gram–Schmidt for every Krylov method of :mod:`hesslab.linalg`.

:func:`orthogonalize`: block classical Gram–Schmidt as two matrix products
(``C = V^T W``, ``W -= V C``, BLAS-3 for a block, in place on ``W``), repeated only when a
column lost more than ``1 - 1/sqrt(2)`` of its norm in the pass ("twice is enough":
Kahan–Parlett, Parlett 1998 §6.9; Giraud, Langou & Rozložník 2005). A third pass runs when
the second still cancels that much (a direction nearly inside the basis).
:func:`orthonormalize` (SVD + QR, or :func:`gram_orthonormalize`'s CholeskyQR2-like Gram
passes in a sharded space) gives an orthonormal basis of what is left.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from hesslab.linalg.blockops import col_norms
from hesslab.linalg.space import LOCAL, LocalSpace

if TYPE_CHECKING:
    from hesslab.linalg.basis import Basis

__all__ = ["gram_orthonormalize", "orthogonalize", "orthonormalize"]

#: Keep a Gram–Schmidt pass when every column kept at least this fraction of its norm.
_ETA = 1.0 / math.sqrt(2.0)


def orthogonalize(
    V: Tensor | Basis,
    W: Tensor,
    n: int | None = None,
    *,
    norms: Tensor | None = None,
    space: LocalSpace = LOCAL,
) -> tuple[Tensor, Tensor]:
    """Project ``W`` onto the orthogonal complement of orthonormal vectors, in place.

    Args:
        V: a ``[P, n]`` tensor of orthonormal columns, or a :class:`Basis` (its first
            ``n`` vectors).
        W: ``[P, j]`` block, overwritten with its projection (same dtype as ``V``).
        n: with a :class:`Basis`, how many of its vectors (default: all in use).
        norms: the column norms of ``W`` if the caller has them (saves a pass).
        space: the inner-product space of a tensor ``V`` (a :class:`Basis` has its own).

    Returns:
        ``(C, W)``: the accumulated coefficients ``C = V^T W_in`` (``[n, j]``, float64) and
        the projected ``W``. Block classical Gram–Schmidt; a pass is repeated when a
        column's norm dropped below ``1/sqrt(2)`` of its norm before the pass
        (Kahan–Parlett), at most three passes. The norm after a pass is judged from
        ``||w - V d||^2 = ||w||^2 - ||d||^2`` (exact for orthonormal ``V``, and accurate
        where the decision is taken), so a pass that is kept costs no extra norm.
    """
    if isinstance(V, Tensor):
        n = V.shape[1]
    else:
        space = V.space
        n = V.n if n is None else n
    C = torch.zeros(n, W.shape[1], dtype=torch.float64, device=W.device)
    if n == 0 or W.shape[1] == 0:
        return C, W
    if norms is None:
        before = col_norms(W, space)
    else:
        before = norms.to(device=W.device, dtype=torch.float64)
    for p in range(3):
        if isinstance(V, Tensor):
            D = space.reduce_sum(V.T @ W)
            W.addmm_(V, D, alpha=-1)
            D = D.to(torch.float64)
        else:
            D = V.tmm(n, W)
            V.sub_mm_(n, W, D.to(W.dtype))
        C += D
        kept_sq = before.square() - D.square().sum(0)
        if bool((kept_sq >= _ETA**2 * before.square()).all()) or p == 2:
            break
        before = col_norms(W, space)
    return C, W


def orthonormalize(
    W: Tensor, Q: Tensor | None = None, *, rtol: float = 1e-10, space: LocalSpace = LOCAL
) -> Tensor:
    """Orthonormal basis of the part of ``range(W)`` orthogonal to ``range(Q)``.

    :func:`orthogonalize` against ``Q`` (on a copy of ``W``), then an SVD that drops
    directions whose singular value is below ``rtol`` times the largest column norm of
    ``W`` (numerical rank deficiency, e.g. an invariant subspace has been found), then one
    more projection and a QR so the result is orthogonal to ``Q`` to working precision.
    May return 0 columns. In a sharded ``space`` the SVD and QR are replaced by
    :func:`gram_orthonormalize` (the same span; the columns may differ by a rotation).
    """
    if space.distributed:
        return _orthonormalize_sharded(W, Q, rtol, space)
    scale = float(col_norms(W).max()) if W.numel() else 0.0
    if scale == 0.0:
        return W[:, :0]
    has_q = Q is not None and Q.shape[1] > 0
    if has_q:
        _, W = orthogonalize(Q, W.clone())
    U, S, _ = torch.linalg.svd(W, full_matrices=False)
    U = U[:, S > rtol * scale]
    if has_q and U.shape[1] > 0:
        _, U = orthogonalize(Q, U.contiguous())
        U, _ = torch.linalg.qr(U)
    return U


#: Smallest relative singular value :func:`gram_orthonormalize` resolves (float64 Gram).
_GRAM_RTOL = 1e-7


def gram_orthonormalize(
    W: Tensor, space: LocalSpace, rtol: float = 1e-10, scale: float | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``(U, S, Zh)`` with ``W ~= U diag(S) Zh`` from the Gram matrix, for sharded blocks.

    ``G = W^T W`` (float64, summed over the ranks) ``= Z diag(S^2) Z^T`` (``eigh``); the
    directions with ``S > rtol * max column norm`` are kept and ``U = W Z S^-1``, then
    once more from ``U`` (two passes, as CholeskyQR2: Fukaya et al. 2014, "CholeskyQR2:
    a simple and communication-avoiding algorithm"), so ``U`` is orthonormal to working
    precision for ``cond(W)`` up to ``~eps^-1/2``. Every rank gets the same ``S, Zh``.
    A singular value from the Gram matrix is accurate only down to ``~sqrt(eps_64)`` of
    the largest column norm, so directions below ``max(rtol, 1e-7)`` times it count as
    zero (an SVD resolves them down to ``rtol``). ``scale``: the norm the thresholds are
    relative to (default: the largest column norm of ``W``).
    """
    f64 = torch.float64
    G = space.reduce_sum((W.T @ W).to(f64))
    if scale is None:
        scale = float(G.diagonal().clamp_min(0).max().sqrt()) if G.numel() else 0.0
    if not math.isfinite(scale) or scale == 0.0:
        return W[:, :0], torch.zeros(0, dtype=f64, device=W.device), G[:0]
    lam, Z = torch.linalg.eigh(G)
    lam, Z = lam.flip(0), Z.flip(1)
    S = lam.clamp_min(0).sqrt()
    keep = S > max(rtol, _GRAM_RTOL) * scale
    S, Z = S[keep], Z[:, keep]
    U = W @ (Z / S).to(W.dtype)
    G2 = space.reduce_sum((U.T @ U).to(f64))
    lam2, Z2 = torch.linalg.eigh(G2)
    U = U @ (Z2 / lam2.clamp_min(torch.finfo(f64).tiny).sqrt()).to(W.dtype) @ Z2.T.to(W.dtype)
    return U, S, Z.T


def _orthonormalize_sharded(W: Tensor, Q: Tensor | None, rtol: float, space: LocalSpace) -> Tensor:
    """:func:`orthonormalize` for sharded blocks (Gram matrices instead of SVD and QR)."""
    scale = float(col_norms(W, space).max()) if W.shape[1] else 0.0
    if scale == 0.0:
        return W[:, :0]
    has_q = Q is not None and Q.shape[1] > 0
    if has_q:
        _, W = orthogonalize(Q, W.clone(), space=space)
    U, _, _ = gram_orthonormalize(W, space, rtol, scale)  # relative to W before projection
    if has_q and U.shape[1] > 0:
        _, U = orthogonalize(Q, U.contiguous(), space=space)
        U, _, _ = gram_orthonormalize(U, space, rtol)
    return U
