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

import os
import tempfile

import numpy as np
import torch
from torch import Tensor

from hesslab.errors import ConfigurationError, HesslabError, MemoryLimitError
from hesslab.linalg.blockops import as_block, col_dots, col_norms, owned, rows_times
from hesslab.linalg.gram_schmidt import gram_orthonormalize, orthogonalize, orthonormalize
from hesslab.linalg.krylov_basis import KrylovBasis, OrthogonalityEstimate
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

#: Default device budget of one chunk of a memory-mapped basis (``basis_chunk=None``).
_CHUNK_BYTES = 256 * 2**20
#: Unlink the basis file right after mapping it (POSIX keeps the mapping valid).
_UNLINK_EARLY = os.name == "posix"
#: Relative size (to the norm estimate) below which a new Krylov direction counts as zero
#: (an invariant subspace was found): the direction is replaced by a random one.
BREAKDOWN_RTOL = 1e-12


class BasisStorageError(HesslabError, OSError):
    """The memory-mapped Krylov basis (``basis_device="disk"``) could not be created."""


def chunk_vectors(basis_chunk: int | None, P: int, m: int, itemsize: int = 8) -> int:
    """Vectors per transfer of a ``"disk"`` basis (default: 256 MiB worth, at least 1)."""
    if basis_chunk is None:
        return int(max(1, min(m, _CHUNK_BYTES // (itemsize * P))))
    if not isinstance(basis_chunk, (int, np.integer)) or basis_chunk < 1:
        raise ConfigurationError(
            f"basis_chunk must be a positive int (basis vectors per transfer), got {basis_chunk!r}"
        )
    return int(basis_chunk)


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
