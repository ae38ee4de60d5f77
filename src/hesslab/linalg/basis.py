"""Orthonormal Krylov bases: storage (device, host or disk) and one block Gram–Schmidt.

Every Krylov method of :mod:`hesslab.linalg` (thick-restart Lanczos, the SLQ recurrences,
the trace estimators' deflation spaces) orthogonalizes new directions against a basis with
:func:`orthogonalize`: block classical Gram–Schmidt as two matrix products
(``C = V^T W``, ``W -= V C``, BLAS-3 for a block, in place on ``W``), repeated only when a
column lost more than ``1 - 1/sqrt(2)`` of its norm in the pass ("twice is enough":
Kahan–Parlett, Parlett 1998 §6.9; Giraud, Langou & Rozložník 2005). A third pass runs when
the second still cancels that much (a direction nearly inside the basis).

Precision: the basis is kept in the operator's (product) dtype, so a float32 operator
has a float32 basis (half the memory and traffic of float64, no conversion per product);
the Gram–Schmidt coefficients are accumulated, and every projected matrix and recurrence
coefficient kept, in float64. The loss of orthogonality of a float32 basis is
``O(eps_32)`` (the reorthogonalization keeps it there), which bounds the accuracy of Ritz
values at ``~eps_32 ||A||``, the accuracy of the float32 products themselves.

:class:`Basis` stores up to ``m`` vectors of length ``P`` as the rows of ``Vt [m, P]``
(each vector contiguous) on a device, or in a memory-mapped file (``"disk"``); with a
file, at most ``chunk`` vectors (or the same number of entries) travel to the work
device at a time.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hesslab.errors import ConfigurationError, HesslabError, MemoryLimitError
from hesslab.linalg.space import LOCAL, LocalSpace

__all__ = [
    "Basis",
    "BasisStorageError",
    "KrylovBasis",
    "OrthogonalityEstimate",
    "as_block",
    "chunk_vectors",
    "col_dots",
    "col_norms",
    "gram_orthonormalize",
    "orthogonalize",
    "orthonormalize",
    "owned",
]

#: Keep a Gram–Schmidt pass when every column kept at least this fraction of its norm.
_ETA = 1.0 / math.sqrt(2.0)
#: Default device budget of one chunk of a memory-mapped basis (``basis_chunk=None``).
_CHUNK_BYTES = 256 * 2**20
#: Unlink the basis file right after mapping it (POSIX keeps the mapping valid).
_UNLINK_EARLY = os.name == "posix"
#: Relative size (to the norm estimate) below which a new Krylov direction counts as zero
#: (an invariant subspace was found): the direction is replaced by a random one.
BREAKDOWN_RTOL = 1e-12


class BasisStorageError(HesslabError, OSError):
    """The memory-mapped Krylov basis (``basis_device="disk"``) could not be created."""


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


def chunk_vectors(basis_chunk: int | None, P: int, m: int, itemsize: int = 8) -> int:
    """Vectors per transfer of a ``"disk"`` basis (default: 256 MiB worth, at least 1)."""
    if basis_chunk is None:
        return int(max(1, min(m, _CHUNK_BYTES // (itemsize * P))))
    if not isinstance(basis_chunk, (int, np.integer)) or basis_chunk < 1:
        raise ConfigurationError(
            f"basis_chunk must be a positive int (basis vectors per transfer), got {basis_chunk!r}"
        )
    return int(basis_chunk)


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


def gram_orthonormalize(
    W: Tensor, space: LocalSpace, rtol: float = 1e-10
) -> tuple[Tensor, Tensor, Tensor]:
    """``(U, S, Zh)`` with ``W ~= U diag(S) Zh`` from the Gram matrix, for sharded blocks.

    ``G = W^T W`` (float64, summed over the ranks) ``= Z diag(S^2) Z^T`` (``eigh``); the
    directions with ``S > rtol * max column norm`` are kept and ``U = W Z S^-1``, then
    once more from ``U`` (two passes, as CholeskyQR2: Fukaya et al. 2014, "CholeskyQR2:
    a simple and communication-avoiding algorithm"), so ``U`` is orthonormal to working
    precision for ``cond(W)`` up to ``~eps^-1/2``. Every rank gets the same ``S, Zh``.
    """
    f64 = torch.float64
    G = space.reduce_sum((W.T @ W).to(f64))
    scale = float(G.diagonal().clamp_min(0).max().sqrt()) if G.numel() else 0.0
    lam, Z = torch.linalg.eigh(G)
    lam, Z = lam.flip(0), Z.flip(1)
    S = lam.clamp_min(0).sqrt()
    keep = S > rtol * scale if scale > 0 else S > 0
    S, Z = S[keep], Z[:, keep]
    U = W @ (Z / S).to(W.dtype)
    G2 = space.reduce_sum((U.T @ U).to(f64))
    lam2, Z2 = torch.linalg.eigh(G2)
    U = U @ (Z2 / lam2.clamp_min(torch.finfo(f64).tiny).sqrt()).to(W.dtype) @ Z2.T.to(W.dtype)
    return U, S, Z.T


def _orthonormalize_sharded(W: Tensor, Q: Tensor | None, rtol: float, space: LocalSpace) -> Tensor:
    """:func:`orthonormalize` for sharded blocks (Gram matrices instead of SVD and QR)."""
    if W.numel() == 0 and W.shape[1] == 0:
        return W[:, :0]
    has_q = Q is not None and Q.shape[1] > 0
    if has_q:
        _, W = orthogonalize(Q, W.clone(), space=space)
    U, _, _ = gram_orthonormalize(W, space, rtol)
    if has_q and U.shape[1] > 0:
        _, U = orthogonalize(Q, U.contiguous(), space=space)
        U, _, _ = gram_orthonormalize(U, space, 0.0)
    return U


def _does_not_fit(m: int, P: int, dtype: torch.dtype, device: torch.device, exc: BaseException):
    """The error for a basis whose ``m x P`` allocation failed: it names the way out."""
    size = m * P * torch.empty(0, dtype=dtype).element_size()
    return MemoryLimitError(
        f"the Krylov basis ({m} vectors of {P} {dtype} entries, {size / 2**30:.2f} GiB) does "
        f"not fit in memory on {device} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
        "; pass basis_device='disk' (a memory-mapped file, basis_dir= chooses its folder) or "
        "basis_device='cpu' (host memory), or fewer steps / a smaller k"
    )


class Basis:
    """Up to ``m`` orthonormal vectors of length ``P`` (rows of ``Vt [m, P]``).

    Args:
        P: vector length.
        m: capacity (vectors).
        dtype: storage and arithmetic dtype (the operator's).
        device: where products meet the basis: the work device. A memory basis is stored
            there; with ``store="cpu"`` and a CUDA work device the rows are in pinned host
            memory and the Gram–Schmidt runs on the CPU (``device`` is then the CPU).
        disk: store the rows in a memory-mapped file in ``directory`` (default: the
            system temporary directory), at most ``chunk`` vectors on ``device`` at a
            time. The file's space is reserved up front; on POSIX it is unlinked at once,
            so nothing is left behind even if the process is killed.
        pin: pin a CPU store (its products run on a CUDA device).
        chunk: vectors per transfer of a disk basis.
        directory: folder of the file of a disk basis.
        space: the inner-product space of the vectors (:mod:`hesslab.linalg.space`): a
            sharded basis stores this rank's ``P`` entries (``P`` is the local size) and
            :meth:`tmm` sums over the ranks.

    Raises:
        BasisStorageError: the file cannot be created or its space not reserved.
    """

    def __init__(
        self,
        P: int,
        m: int,
        *,
        dtype: torch.dtype,
        device: torch.device,
        disk: bool = False,
        pin: bool = False,
        chunk: int | None = None,
        directory: str | os.PathLike[str] | None = None,
        space: LocalSpace = LOCAL,
    ) -> None:
        self.P, self.m, self.dtype, self.device = P, m, dtype, torch.device(device)
        self.space = space
        self.n = 0  # vectors in use (maintained by the solver that owns the basis)
        self.written = 0  # rows ever written (the rest are uninitialized)
        self.path: str | None = None
        self.disk = disk
        if disk:
            self.chunk = chunk_vectors(chunk, P, m, torch.empty(0, dtype=dtype).element_size())
            self.Vt = self._map(directory)
        else:
            self.chunk = m
            try:
                self.Vt = torch.empty(m, P, dtype=dtype, device=self.device, pin_memory=pin)
            except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError included
                raise _does_not_fit(m, P, dtype, self.device, exc) from exc

    # ----------------------------------------------------------------- storage
    def _map(self, directory: str | os.PathLike[str] | None) -> Tensor:
        np_dtype = torch.empty(0, dtype=self.dtype).numpy().dtype
        nbytes = np_dtype.itemsize * self.m * self.P
        try:
            fd, path = tempfile.mkstemp(prefix="hesslab-basis-", suffix=".bin", dir=directory)
        except OSError as exc:
            raise BasisStorageError(
                f"cannot create the memory-mapped Krylov basis in {directory or 'the temp dir'}"
                f" ({exc}); pass basis_dir= an existing writable directory"
            ) from exc
        self.path = path
        try:
            try:
                if hasattr(os, "posix_fallocate") and nbytes:
                    os.posix_fallocate(fd, 0, nbytes)  # no SIGBUS later on a full disk
                else:
                    os.ftruncate(fd, nbytes)
            finally:
                os.close(fd)
            mm = (
                np.memmap(path, dtype=np_dtype, mode="r+", shape=(self.m, self.P))
                if nbytes
                else None
            )
        except OSError as exc:
            self.close()
            raise BasisStorageError(
                f"cannot allocate {nbytes / 2**30:.2f} GiB for the memory-mapped Krylov basis "
                f"in {os.path.dirname(path)} ({exc}); free disk space or pass another basis_dir="
            ) from exc
        if _UNLINK_EARLY:
            os.remove(path)  # the mapping stays valid; the space is freed when it is dropped
            self.path = None
        self.written = self.m  # a fresh file reads as zeros
        return torch.zeros(self.m, self.P, dtype=self.dtype) if mm is None else torch.from_numpy(mm)

    def close(self) -> None:
        """Drop the storage (and remove the file of a disk basis where it still exists)."""
        self.Vt = None  # type: ignore[assignment]
        if self.path is not None:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            self.path = None

    def state(self) -> Tensor:
        """The stored vectors as a ``[P, m]`` tensor (a view; ``torch.save`` writes the
        numbers, not a reference to a mapping). Rows never written read as zero."""
        if self.written < self.m:
            self.Vt[self.written :].zero_()
            self.written = self.m
        return self.Vt.T

    def load(self, V: Tensor) -> None:
        """Overwrite the store with ``V [P, m]`` (a :meth:`state`)."""
        self.Vt.copy_(V.T)
        self.written = self.m

    # ------------------------------------------------------------------ access
    def cols(self, a: int, b: int) -> Tensor:
        """Vectors ``a..b-1`` as ``[P, b-a]`` columns on the work device (a view in memory)."""
        return self.Vt[a:b].T.to(self.device)

    def put(self, a: int, Q: Tensor) -> None:
        """Store the columns of ``Q [P, j]`` as vectors ``a..a+j-1``."""
        if Q.shape[1] == 1:  # a plain 1-D copy (8x faster than via the [1, P] view)
            self.Vt[a].copy_(Q[:, 0])
        else:
            self.Vt[a : a + Q.shape[1]] = Q.T.to(self.Vt.device)
        self.written = max(self.written, a + Q.shape[1])

    def _row_chunks(self, n: int):
        """Slices of the ``P`` entries, each at most ``chunk * P`` numbers for ``n`` vectors."""
        if not self.disk:
            yield slice(0, self.P)
            return
        rows = max(1, (self.chunk * self.P) // max(n, 1))
        for r in range(0, self.P, rows):
            yield slice(r, r + rows)

    # -------------------------------------------------------------- products
    def tmm(self, n: int, W: Tensor, start: int = 0) -> Tensor:
        """``V[:, start:n]^T W`` (``[n - start, j]`` float64 on ``W``'s device, see
        :func:`rows_times`)."""
        if not self.disk:
            return rows_times(self.Vt[start:n], W, self.space)
        parts = [
            rows_times(self.Vt[a : min(a + self.chunk, n)].to(W.device), W)
            for a in range(start, n, self.chunk)
        ]
        out = torch.cat(parts, 0) if parts else W.new_zeros(0, W.shape[1], dtype=torch.float64)
        return self.space.reduce_sum(out)

    def sub_mm_(self, n: int, W: Tensor, D: Tensor, start: int = 0) -> None:
        """``W -= V[:, start:n] D`` in place (``D [n - start, j]`` in ``W``'s dtype)."""
        for r in self._row_chunks(n - start):
            W[r].addmm_(self.Vt[start:n, r].T.to(W.device), D, alpha=-1)

    def combine(self, n: int, Y: Tensor) -> Tensor:
        """``V[:, :n] Y`` for a float64 ``Y [n, j]``: ``[P, j]`` on the work device."""
        Y = Y.to(dtype=self.dtype, device=self.device)
        out = torch.empty(self.P, Y.shape[1], dtype=self.dtype, device=self.device)
        for r in self._row_chunks(n):
            torch.mm(self.Vt[:n, r].T.to(self.device), Y, out=out[r])
        return out

    def restart(self, n: int, Y: Tensor) -> None:
        """Replace the first ``j`` vectors by ``V[:, :n] Y`` (``Y [n, j]``, ``j <= n``) in
        place, a slab of entries at a time (each read completely before it is written)."""
        j = Y.shape[1]
        Yt = Y.T.to(dtype=self.dtype, device=self.device).contiguous()
        slab = max(1, (2**22) // max(n, 1)) if not self.disk else None
        chunks = (
            (slice(r, r + slab) for r in range(0, self.P, slab)) if slab else self._row_chunks(n)
        )
        for r in chunks:
            block = Yt @ self.Vt[:n, r].to(self.device)
            self.Vt[:j, r] = block.to(self.Vt.device)


class OrthogonalityEstimate:
    """Estimates ``omega[i, j] ~ v_i^T v_j`` of the loss of orthogonality of a Lanczos basis.

    Partial reorthogonalization (Simon 1984, "The Lanczos algorithm with partial
    reorthogonalization", Math. Comp. 42; Parlett & Scott 1979 for the selective
    variant): a Lanczos step orthogonalizes the new vector only against the vectors it is
    coupled to (the previous one, or the kept Ritz vectors after a thick restart) and
    tracks the inner products it did not remove with the omega-recurrence; a full
    Gram–Schmidt against the whole basis runs only when some estimate exceeds
    ``threshold`` (default ``sqrt(eps)``, semi-orthogonality: the projected matrix then
    equals the projection of ``A`` onto an orthonormal basis of the same space up to
    ``O(eps ||A||)``, so its Ritz values have full accuracy and no ghost copies), and then
    for two consecutive vectors (the next inherits the loss through the recurrence).

    The recurrence, for any projected matrix ``H`` (tridiagonal, or the arrowhead of a
    thick restart): with ``A V_{:s} = V_{:n} H_{:n,:s}`` up to rounding and the new
    ``beta q = A v_s - sum_i H[i, s] v_i``,
    ``beta v_k^T q = ((H Omega - Omega H)[k, s])`` with ``Omega = V^T V - I``, plus the
    rounding of the step, modelled as ``noise * eps * ||A||_est`` added in the direction of
    the estimate (Simon's ``theta``). A thick restart ``V <- V Y`` maps ``Omega`` to
    ``Y^T Omega Y``.

    Args:
        m: basis capacity.
        dtype: the basis dtype (its ``eps``).
        threshold: reorthogonalize when an estimate exceeds this (default ``sqrt(eps)``).
    """

    #: Rounding of one step, in units of ``eps ||A||_est / beta``.
    NOISE = 4.0

    def __init__(self, m: int, dtype: torch.dtype, threshold: float | None = None) -> None:
        self.eps = float(torch.finfo(dtype).eps)
        self.threshold = math.sqrt(self.eps) if threshold is None else float(threshold)
        self.omega = torch.zeros(m, m, dtype=torch.float64)
        self.force = False
        self.full_count = 0

    def predict(self, H: Tensor, s: int, n: int, beta: float, normest: float) -> Tensor:
        """Estimated ``v_k^T q`` (``k < n``) of the new vector ``q`` made from ``A v_s``
        (single-vector step, ``n = s + 1`` vectors in use, ``H`` float64 ``[>= n, >= n]``)."""
        Hn, On = H[:n, :n], self.omega[:n, :n]
        beta = max(beta, 1e-300)
        x = (Hn @ On[:, s] - On @ Hn[:, s]) / beta
        noise = min(self.NOISE * self.eps * max(normest, 1e-300) / beta, 1.0)
        x = (x + torch.where(x >= 0, noise, -noise)).clamp_(-1.0, 1.0)  # |v^T q| <= 1
        x[s] = noise
        return x

    def needs_full(self, x: Tensor) -> bool:
        """Whether the vector with estimates ``x`` must be reorthogonalized fully (the
        estimates exceed the threshold, or the previous vector was)."""
        if self.force:
            self.force = False
            return True
        if x.numel() and float(x.abs().max()) > self.threshold:
            self.force = True
            return True
        return False

    def full(self, x: Tensor) -> Tensor:
        """Estimates after a full reorthogonalization (rounding level)."""
        self.full_count += 1
        return torch.full_like(x, self.eps)

    def set(self, n: int, x: Tensor) -> None:
        """Record the estimates ``x [n]`` of vector ``n`` against vectors ``0..n-1``."""
        self.omega[n, :n] = x
        self.omega[:n, n] = x
        self.omega[n, n] = 0.0

    def restart(self, Y: Tensor, n: int, q: Tensor) -> None:
        """After ``V[:, :nk] <- V[:, :n] Y`` (``Y [n, nk]`` orthonormal columns) with the
        pending vector ``q`` (estimates ``q [n]``) placed at ``nk``."""
        nk = Y.shape[1]
        On = self.omega[:n, :n]
        kept = Y.T @ On @ Y
        kept = kept + torch.where(kept >= 0, self.eps, -self.eps)
        kept.fill_diagonal_(0.0)
        qk = Y.T @ q if q.numel() else torch.zeros(nk, dtype=torch.float64)
        self.omega.zero_()
        self.omega[:nk, :nk] = kept
        self.set(nk, qk + torch.where(qk >= 0, self.eps, -self.eps))

    def state_dict(self) -> dict[str, Any]:
        """The estimates and flags (for a checkpoint)."""
        return {"omega": self.omega.clone(), "force": self.force, "full": self.full_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        self.omega.copy_(state["omega"])
        self.force, self.full_count = bool(state["force"]), int(state["full"])


class KrylovBasis:
    """Orthonormal basis ``Q`` of a block Krylov space with the products ``Z = A Q``.

    ``K_q(A, Omega) = span[Omega, A Omega, ..., A^{q-1} Omega]`` is built one block at a
    time by block Lanczos with full reorthogonalisation: ``Q_1 = orth(Omega)``,
    ``Q_{j+1} = orth((I - Q Q^T) A Q_j)``. Each :meth:`extend` applies ``A`` to the newest
    block (``b`` products) and so gives ``tr(Q^T A Q) = sum_j tr(Q_j^T A Q_j)`` exactly for
    all blocks built so far: a Krylov space of dimension ``d`` costs ``d`` products.

    Args:
        engine: anything with ``apply(V) -> A V``, ``P`` and ``device`` (an
            :class:`~hesslab.linalg.probes.Engine`).
        start: ``[P, b]`` start block.
        capacity: most columns the space will hold (storage is allocated once, one row
            per vector so that only the pages of vectors in use are touched; ``Q`` and
            ``Z`` are ``[P, d]`` views of it).
    """

    def __init__(self, engine: Any, start: Tensor, capacity: int) -> None:
        self.engine = engine
        self.space = getattr(engine, "space", LOCAL)
        kw = {"dtype": start.dtype, "device": engine.device}
        self._Qt = torch.empty(capacity, start.shape[0], **kw)  # this rank's rows if sharded
        self._Zt = torch.empty(capacity, start.shape[0], **kw)
        self._d = 0
        self._next = orthonormalize(start, space=self.space)
        self.trace_part = 0.0

    @property
    def Q(self) -> Tensor:
        """``[P, d]`` orthonormal basis."""
        return self._Qt[: self._d].T

    @property
    def Z(self) -> Tensor:
        """``[P, d]`` products ``A Q``."""
        return self._Zt[: self._d].T

    @property
    def dim(self) -> int:
        """Dimension ``d`` of the space whose products are known."""
        return self._d

    @property
    def next_block_size(self) -> int:
        """Number of products the next :meth:`extend` costs (0 when the space is invariant)."""
        return self._next.shape[1]

    def extend(self, max_cols: int | None = None) -> int:
        """Apply ``A`` to the next block (at most ``max_cols`` columns, within the capacity);
        return the columns added."""
        room = self._Qt.shape[0] - self._d
        cols = room if max_cols is None else min(max_cols, room)
        Qn = self._next[:, :cols]
        if Qn.shape[1] == 0:
            return 0
        Zn = self.engine.apply(Qn)
        self.trace_part += float(self.space.reduce_sum((Qn * Zn).sum()))
        d, j = self._d, Qn.shape[1]
        self._Qt[d : d + j] = Qn.T
        self._Zt[d : d + j] = Zn.T
        self._d = d + j
        self._next = orthonormalize(Zn, self.Q, space=self.space)
        return j
