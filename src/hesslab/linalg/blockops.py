"""Column kernels of the Krylov methods: norms, inner products and ``V^T W`` of blocks.

Lower-precision (float32) blocks are reduced in chunks whose partial sums add in float64
(a plain float32 sum over 11M entries loses ~1e-4 relative); every kernel takes the
inner-product space (:mod:`hesslab.linalg.space`) and sums over the ranks of a sharded one.
Used by :mod:`hesslab.linalg.basis` (storage) and :mod:`hesslab.linalg.gram_schmidt`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hesslab.errors import ConfigurationError
from hesslab.linalg.space import LOCAL, LocalSpace

__all__ = ["as_block", "col_dots", "col_norms", "owned", "rows_times"]


def as_block(x: Any, P: int, name: str) -> Tensor:
    """``x`` (a vector ``[P]`` or a block ``[P, j]``, tensor or array) as a finite ``[P, j]``
    floating tensor (integer input becomes float64), detached."""
    X = (torch.as_tensor(x) if not isinstance(x, Tensor) else x).detach()
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] != P:
        raise ConfigurationError(
            f"{name} must be a vector [{P}] or a block [{P}, j], got shape {tuple(X.shape)}"
        )
    if not X.is_floating_point():
        X = X.to(torch.float64)
    if not bool(torch.isfinite(X).all()):
        raise ConfigurationError(f"{name} contains NaN or inf; pass finite start vectors")
    return X


def owned(W: Tensor, X: Tensor) -> Tensor:
    """``W`` (an operator's product of ``X``), cloned when it shares ``X``'s memory: the
    solvers update products in place."""
    if W.untyped_storage().data_ptr() == X.untyped_storage().data_ptr():
        return W.clone()
    return W


#: Entries per partial sum of :func:`col_norms` (a float32 sum over millions of entries
#: loses ~1e-4 relative; over 1024 it loses ~1e-7, and the partial sums add in float64).
_NORM_CHUNK = 1024


def col_norms(W: Tensor, space: LocalSpace = LOCAL) -> Tensor:
    """Column norms of ``W [P, j]`` as a float64 tensor on ``W``'s device.

    Float64 input: ``torch.linalg.vector_norm``. Lower precision: norms of chunks of
    1024 entries, combined in float64 (as accurate as a float64 norm to ~1e-9, at the cost
    of one pass over ``W`` and without a float64 copy of it). In a sharded ``space``
    (:mod:`hesslab.linalg.space`) the squared local norms are summed over the ranks.
    """
    if space.distributed:
        return space.reduce_sum(col_norms(W).square()).sqrt()
    if W.dtype == torch.float64 or W.shape[0] < 4 * _NORM_CHUNK:
        return torch.linalg.vector_norm(W, dim=0, dtype=torch.float64)
    P, j = W.shape
    cut = P - P % _NORM_CHUNK
    parts = torch.linalg.vector_norm(W[:cut].reshape(-1, _NORM_CHUNK, j), dim=1)
    sq = parts.to(torch.float64).square().sum(0)
    if cut < P:
        sq += W[cut:].to(torch.float64).square().sum(0)
    return sq.sqrt()


#: Rows per chunk of :func:`col_dots` (the product of two chunks stays in cache).
_COL_DOT_ROWS = 2**13


def col_dots(X: Tensor, Y: Tensor, space: LocalSpace = LOCAL) -> Tensor:
    """Column-wise inner products ``sum_i X[i, j] Y[i, j]`` of two ``[P, j]`` blocks.

    Over chunks of 8192 rows, so the elementwise product never exists at full size
    (``(X * Y).sum(0)`` writes and reads a ``[P, j]`` temporary: at ``P = 1M``, ``j = 24``
    in float64, 190 MB); the chunk sums add in ``X``'s dtype. Summed over the ranks of a
    sharded ``space``.
    """
    if space.distributed:
        return space.reduce_sum(col_dots(X, Y))
    P = X.shape[0]
    if P <= 2 * _COL_DOT_ROWS:
        return (X * Y).sum(0)
    out = torch.zeros(X.shape[1], dtype=X.dtype, device=X.device)
    for a in range(0, P, _COL_DOT_ROWS):
        out += (X[a : a + _COL_DOT_ROWS] * Y[a : a + _COL_DOT_ROWS]).sum(0)
    return out


#: Entries per partial inner product of :func:`rows_times`.
_DOT_CHUNK = 2**15


def rows_times(Vt: Tensor, W: Tensor, space: LocalSpace = LOCAL) -> Tensor:
    """``Vt @ W`` (``[n, P] @ [P, j]``) as a float64 ``[n, j]``.

    Float64 input: one product. Lower precision: partial products over chunks of 32768
    entries (strided views, no copies) added in float64. A float32 BLAS product of length
    P = 11M sums in float32 and loses ~1e-4 relative when the terms share a sign (as in
    ``v^T A v``); the partial sums lose ~2e-8, for ~25% more time than one product.
    Summed over the ranks of a sharded ``space``.
    """
    if space.distributed:
        return space.reduce_sum(rows_times(Vt, W))
    c = _DOT_CHUNK
    P = W.shape[0]
    if W.dtype == torch.float64 or P <= 2 * c:
        return (Vt @ W).to(torch.float64)
    if W.shape[1] == 1:
        return _rows_times_vector(Vt, W[:, 0])[:, None]
    starts = range(0, P, c)
    parts = W.new_empty(len(starts), Vt.shape[0], W.shape[1])
    for i, a in enumerate(starts):
        torch.mm(Vt[:, a : a + c], W[a : a + c], out=parts[i])
    return parts.to(torch.float64).sum(0)


#: Entries per partial sum of :func:`_rows_times_vector`.
_MV_CHUNK = 2**16


def _rows_times_vector(Vt: Tensor, w: Tensor) -> Tensor:
    """``Vt @ w`` for one vector ``w [P]``: matrix-vector products (BLAS-2, whose kernels
    keep several partial sums, ~1e-7 relative per 65536 entries in float32) over chunks,
    added in float64. A ``[n, P] @ [P, 1]`` matrix product is 4x slower here and sums
    sequentially (~1e-4 relative at P = 11M)."""
    c = _MV_CHUNK
    P = w.shape[0]
    starts = range(0, P, c)
    parts = w.new_empty(len(starts), Vt.shape[0])
    for i, a in enumerate(starts):
        torch.mv(Vt[:, a : a + c], w[a : a + c], out=parts[i])
    return parts.to(torch.float64).sum(0)
