"""Eigenpairs of symmetric operators by thick-restart (block) Lanczos.

The method (Wu & Simon, 2000, "Thick-restart Lanczos method for large symmetric
eigenvalue problems", SIAM J. Matrix Anal. Appl. 22(2)) builds an orthonormal Krylov
basis ``V_n`` of ``A`` from a start vector (or a start block of ``b`` vectors for the
block variant, Golub & Underwood 1977), keeps the projected matrix ``H_n = V_n^T A V_n``,
and extracts Ritz pairs ``(theta_i, V_n y_i)`` from ``H_n y_i = theta_i y_i``. The Lanczos
relation

    A V_n = V_n H_n + Q R E_last^T

(``Q R`` the part of the newest block's image orthogonal to the basis, ``E_last`` the
selector of the newest block) gives every Ritz residual for free:
``||A V_n y_i - theta_i V_n y_i|| = ||R y_i[last block]||``. When the basis is full, the
``nk`` Ritz vectors closest to the wanted end of the spectrum are kept together with ``Q``
(a thick restart: the kept block of ``H`` is diagonal, coupled to ``Q`` by ``R Y``), and
the recurrence continues.

Every basis vector is reorthogonalized against the whole basis with classical
Gram–Schmidt applied twice ("twice is enough", Giraud, Langou & Rozložník 2005; a third
pass runs when the second still cancels a lot), so there are no ghost eigenvalues. The
basis, ``H`` and all recurrences are float64 whatever the operator's dtype; a basis
vector is converted to ``op.dtype``/``op.device`` only for the product.

Convergence is checked after every product (an ``eigh`` of the ``n x n`` projected
matrix, negligible next to a Hessian-vector product), which saves the matvecs a check at
restarts only would waste.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hesslab.errors import ConfigurationError, HesslabError
from hesslab.io import Checkpoint, as_checkpoint
from hesslab.linalg.results import EigenResult
from hesslab.operators.base import LinearOperator, as_operator
from hesslab.validation import require_symmetric

__all__ = ["BasisStorageError", "auto_block_size", "eigenpairs", "lanczos_quadrature"]

logger = logging.getLogger(__name__)

_WHICH = ("largest", "smallest", "magnitude")
#: Relative size (to the norm estimate) below which a new Krylov direction counts as zero
#: (an invariant subspace was found): the direction is replaced by a random one.
_BREAKDOWN_RTOL = 1e-12


# --------------------------------------------------------------------------- helpers
def _default_generator(generator: torch.Generator | None) -> torch.Generator:
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    if not isinstance(generator, torch.Generator):
        raise ConfigurationError(
            f"generator must be a torch.Generator, got {type(generator).__name__}; "
            "create one with torch.Generator().manual_seed(0)"
        )
    return generator


def _randn(P: int, j: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """Standard normal ``[P, j]`` float64 block drawn on the generator's device."""
    Z = torch.randn(P, j, generator=generator, dtype=torch.float64, device=generator.device)
    return Z.to(device)


def _orthogonalize(V: Tensor | _DiskColumns, W: Tensor) -> tuple[Tensor, Tensor]:
    """Project ``W`` onto the orthogonal complement of the orthonormal columns of ``V``.

    ``V`` is a tensor or a :class:`_DiskColumns` view of a memory-mapped basis (then the
    two products run chunk by chunk on ``W``'s device).

    Classical Gram–Schmidt twice (a third pass when the second pass still removed more
    than half of some column's norm). Returns the accumulated coefficients ``C = V^T W``
    (``[n, b]``) and the projected ``W``.
    """
    C = torch.zeros(V.shape[1], W.shape[1], dtype=W.dtype, device=W.device)
    if V.shape[1] == 0:
        return C, W
    for p in range(3):
        before = torch.linalg.vector_norm(W, dim=0)
        D = V.T @ W if isinstance(V, Tensor) else V.tmm(W)
        W = W - (V @ D if isinstance(V, Tensor) else V.mm(D))
        C = C + D
        if p >= 1:
            after = torch.linalg.vector_norm(W, dim=0)
            if bool((after >= 0.5 * before).all()):
                break
    return C, W


def _as_matrix(x: Any, P: int, name: str) -> Tensor:
    X = torch.as_tensor(x) if not isinstance(x, Tensor) else x
    X = X.detach()
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


# ------------------------------------------------------------------- basis storage
#: Default device budget of one chunk of a memory-mapped basis (``basis_chunk=None``).
_CHUNK_BYTES = 256 * 2**20
#: Unlink the basis file right after mapping it (POSIX keeps the mapping valid).
_UNLINK_EARLY = os.name == "posix"


class BasisStorageError(HesslabError, OSError):
    """The memory-mapped Krylov basis (``basis_device="disk"``) could not be created."""


class _DiskColumns:
    """Columns ``[:n]`` of a basis stored transposed (``Vt [m, P]``, one row per vector,
    usually memory-mapped), optionally followed by ``extra`` columns already on ``device``.

    Provides the two products of :func:`_orthogonalize` without ever holding more than
    about ``chunk`` basis vectors on ``device``: ``V^T W`` by chunks of ``chunk`` vectors
    (each entry one full-length dot product) and ``V D`` by chunks of rows (each entry one
    full-length sum over the vectors).
    """

    def __init__(
        self, Vt: Tensor, n: int, chunk: int, device: torch.device, extra: Tensor | None = None
    ) -> None:
        self.Vt, self.n, self.chunk, self.device = Vt, n, chunk, device
        self.extra = extra
        self.P = Vt.shape[1]
        q = 0 if extra is None else extra.shape[1]
        self.shape = (self.P, n + q)

    def with_columns(self, Q: Tensor) -> _DiskColumns:
        extra = Q if self.extra is None else torch.cat([self.extra, Q], dim=1)
        return _DiskColumns(self.Vt, self.n, self.chunk, self.device, extra)

    def tmm(self, W: Tensor) -> Tensor:
        """``V^T W`` (``[n(+q), j]`` on ``W``'s device)."""
        parts = [
            self.Vt[a : min(a + self.chunk, self.n)].to(W.device) @ W
            for a in range(0, self.n, self.chunk)
        ]
        if self.extra is not None:
            parts.append(self.extra.T @ W)
        if not parts:
            return torch.zeros(0, W.shape[1], dtype=W.dtype, device=W.device)
        return torch.cat(parts, dim=0)

    def mm(self, D: Tensor) -> Tensor:
        """``V D`` (``[P, j]`` on ``D``'s device)."""
        return _rows_times(self.Vt, self.n, D[: self.n], self.chunk) + (
            0 if self.extra is None else self.extra @ D[self.n :]
        )


def _rows_times(Vt: Tensor, n: int, Y: Tensor, chunk: int) -> Tensor:
    """``Vt[:n].T @ Y`` by chunks of rows, each at most ``chunk * P`` numbers on the device."""
    P = Vt.shape[1]
    out = torch.empty(P, Y.shape[1], dtype=Y.dtype, device=Y.device)
    if n == 0:
        return out.zero_()
    rows = max(1, (chunk * P) // n)
    for r in range(0, P, rows):
        out[r : r + rows] = Vt[:n, r : r + rows].T.to(Y.device) @ Y
    return out


class _MemoryBasis:
    """The Krylov basis ``V [P, m]`` as one tensor on ``device`` (the default storage)."""

    def __init__(self, P: int, m: int, device: torch.device, pin: bool) -> None:
        self.V = torch.zeros(P, m, dtype=torch.float64, device=device, pin_memory=pin)
        self.device = self.V.device

    def cols(self, a: int, b: int) -> Tensor:
        return self.V[:, a:b]

    def view(self, n: int) -> Tensor:
        return self.V[:, :n]

    def put(self, a: int, Q: Tensor) -> None:
        self.V[:, a : a + Q.shape[1]] = Q

    def combine(self, n: int, Y: Tensor) -> Tensor:
        return self.V[:, :n] @ Y.to(self.device)

    def restart(self, n: int, Yk: Tensor) -> None:
        nk = Yk.shape[1]
        self.V[:, :nk] = self.V[:, :n] @ Yk.to(self.device)
        self.V[:, nk:] = 0

    def state(self) -> Tensor:
        return self.V.cpu()

    def load(self, V: Tensor) -> None:
        self.V.copy_(V.to(self.device))

    def close(self) -> None:
        pass


class _DiskBasis:
    """The Krylov basis in a memory-mapped float64 file, one contiguous row per vector.

    Products and the arithmetic on the newest block run on ``device``; at most ``chunk``
    basis vectors (or the equivalent number of rows) are on ``device`` at a time. The file
    is created in ``directory`` (default: the system temporary directory), unlinked at
    once on POSIX systems (so nothing is left behind even if the process is killed) and
    removed by :meth:`close` otherwise.
    """

    def __init__(
        self,
        P: int,
        m: int,
        device: torch.device,
        chunk: int,
        directory: str | os.PathLike[str] | None,
        shape: tuple[int, ...] | None = None,
    ) -> None:
        shape = (m, P) if shape is None else shape
        nbytes = 8 * math.prod(shape)
        try:
            fd, path = tempfile.mkstemp(prefix="hesslab-basis-", suffix=".f64", dir=directory)
        except OSError as exc:
            raise BasisStorageError(
                f"cannot create the memory-mapped Krylov basis in {directory or 'the temp dir'}"
                f" ({exc}); pass basis_dir= an existing writable directory"
            ) from exc
        self.path: str | None = path
        try:
            try:
                if hasattr(os, "posix_fallocate") and nbytes:
                    os.posix_fallocate(fd, 0, nbytes)  # no SIGBUS later on a full disk
                else:
                    os.ftruncate(fd, nbytes)
            finally:
                os.close(fd)
            mm = np.memmap(path, dtype=np.float64, mode="r+", shape=shape) if nbytes else None
        except OSError as exc:
            self.close()
            raise BasisStorageError(
                f"cannot allocate {nbytes / 2**30:.2f} GiB for the memory-mapped Krylov basis "
                f"in {os.path.dirname(path)} ({exc}); free disk space or pass another basis_dir="
            ) from exc
        if _UNLINK_EARLY:
            os.remove(path)  # the mapping stays valid; the space is freed when it is dropped
            self.path = None
        self.store = torch.zeros(shape, dtype=torch.float64) if mm is None else torch.from_numpy(mm)
        self.Vt = self.store  # [m, P] for eigenpairs
        self.device, self.chunk, self.P = device, chunk, P

    def cols(self, a: int, b: int) -> Tensor:
        return self.Vt[a:b].T.to(self.device)

    def view(self, n: int) -> _DiskColumns:
        return _DiskColumns(self.Vt, n, self.chunk, self.device)

    def put(self, a: int, Q: Tensor) -> None:
        self.Vt[a : a + Q.shape[1]] = Q.T.to("cpu")

    def combine(self, n: int, Y: Tensor) -> Tensor:
        return _rows_times(self.Vt, n, Y.to(self.device), self.chunk)

    def restart(self, n: int, Yk: Tensor) -> None:
        nk = Yk.shape[1]
        Yk = Yk.to(self.device)
        rows = max(1, (self.chunk * self.P) // max(n, 1))
        for r in range(0, self.P, rows):
            # each chunk of rows is read completely before it is overwritten
            block = self.Vt[:n, r : r + rows].T.to(self.device) @ Yk
            self.Vt[:nk, r : r + rows] = block.T.to("cpu")
        # columns >= nk are never read before they are overwritten: no zeroing pass

    def state(self) -> Tensor:
        # a [P, m] view; torch.save writes the numbers, not a reference to the mapping
        return self.Vt.T

    def load(self, V: Tensor) -> None:
        self.Vt.copy_(V.T)

    def close(self) -> None:
        self.Vt = self.store = None  # type: ignore[assignment]
        if self.path is not None:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            self.path = None


def _chunk_columns(basis_chunk: int | None, P: int, m: int) -> int:
    if basis_chunk is None:
        return int(max(1, min(m, _CHUNK_BYTES // (8 * P))))
    if not isinstance(basis_chunk, (int, np.integer)) or basis_chunk < 1:
        raise ConfigurationError(
            f"basis_chunk must be a positive int (basis vectors per transfer), got {basis_chunk!r}"
        )
    return int(basis_chunk)


def _order(theta: Tensor, which: str) -> Tensor:
    """Indices of ``theta`` from the wanted end of the spectrum inwards."""
    if which == "largest":
        key = -theta
    elif which == "smallest":
        key = theta
    else:
        key = -theta.abs()
    return torch.sort(key, stable=True).indices


def auto_block_size(k: int, P: int, device: torch.device | str = "cpu") -> int:
    """The block size ``block_size="auto"`` picks: ``1`` on a CPU; on a GPU ``4`` when
    ``k >= 4`` (never more than ``P``), else ``1``.

    Measured with ``python bench/eigen.py --block`` on the trained-MLP Hessian (P = 3,466,
    float64, tol 1e-6, 2 CPU threads): operator columns (block products) to convergence
    for ``b = 1, 2, 4, 8`` were ``k=1``: 14, 20 (10), 32 (8), 64 (8); ``k=5``: 25, 34 (17),
    48 (12), 80 (10); ``k=10``: 32, 42 (21), 60 (15), 96 (12); ``k=20``: 55, 66 (33),
    88 (22), 120 (15). A block method needs more columns; it wins only if a product of
    ``K`` columns costs well under ``K`` single products. For that operator on the CPU a
    block of 2, 4, 8 cost 2.1x, 3.0x, 6.6x a single product, and the measured time to
    convergence was lowest with ``b = 1`` for every ``k``, hence ``1`` on a CPU. On a
    GPU, where a ``K``-column HVP costs about ``1 + 0.1 (K - 1)`` single products (a model,
    not measured in this benchmark), ``b = 4`` costs 0.62x (k=5), 0.61x (k=10) and 0.52x
    (k=20) of ``b = 1`` and ``b = 8`` is no better. Blocks also find eigenvalues of
    multiplicity up to ``b``: pass ``block_size`` explicitly when that matters.
    """
    if torch.device(device).type != "cuda" or k < 4:
        return 1
    return int(min(4, P))


# ----------------------------------------------------------------------- eigenpairs
def eigenpairs(
    op: Any,
    k: int = 1,
    which: str = "largest",
    *,
    tol: float = 1e-6,
    max_matvecs: int | None = None,
    max_basis: int | None = None,
    v0: Tensor | np.ndarray | None = None,
    generator: torch.Generator | None = None,
    block_size: int | str | None = None,
    basis_device: torch.device | str | None = None,
    basis_dir: str | os.PathLike[str] | None = None,
    basis_chunk: int | None = None,
    return_vectors: bool = True,
    true_residuals: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
    checkpoint: str | os.PathLike[str] | Checkpoint | None = None,
) -> EigenResult:
    """``k`` eigenpairs of a symmetric operator by thick-restart (block) Lanczos.

    Finds ``A x_i = lambda_i x_i`` for the ``k`` eigenvalues at the ``which`` end of the
    spectrum, with full reorthogonalization and thick restarts (Wu & Simon, 2000);
    ``block_size > 1`` runs block Lanczos (Golub & Underwood, 1977) on ``b`` vectors per
    product, which also finds eigenvalues of multiplicity up to ``b``.

    Stopping rule: every wanted Ritz pair satisfies
    ``||A x_i - theta_i x_i|| <= tol * ||A||_est``, ``||A||_est`` the largest ``|theta|``
    seen so far (a lower bound on ``||A||_2`` that is accurate after a few steps).

    Reported residuals: by default the Ritz residuals from the Lanczos relation,
    ``||R y_i[last block]||`` (no extra products). With full reorthogonalization they
    equal the true residuals ``||A x_i - theta_i x_i||`` of the computed products up to
    ``O(eps_64 ||A||)``; the products themselves carry the operator's rounding error
    (``~eps(op.dtype) ||A||``), which the relation cannot see. ``true_residuals=True``
    applies ``A`` once more to the ``k`` vectors (``k`` more matvecs, counted) and reports
    ``||A x_i - theta_i x_i||`` instead (``info["ritz_residual_norms"]`` keeps the other).

    Multiplicities: single-vector Lanczos sees a single copy of a repeated eigenvalue in
    exact arithmetic; a second copy appears only when the Krylov space becomes invariant
    (then a random direction orthogonal to the basis continues it, and convergence is not
    declared before that continuation had as many steps as the first Krylov space; for
    small ``P`` this exhausts the space and the result is exact) or through rounding.
    Use ``block_size >= multiplicity`` when repeated eigenvalues matter.

    Args:
        op: symmetric operator ``[P, P]`` (anything :func:`~hesslab.as_operator` accepts).
        k: number of eigenpairs, ``1 <= k <= P``.
        which: ``"largest"`` (algebraically), ``"smallest"`` or ``"magnitude"``.
        tol: relative residual tolerance (see above).
        max_matvecs: budget of operator columns (default ``max(1000, 100 k)``).
        max_basis: largest basis size kept in memory (``P x max_basis`` float64 numbers);
            default ``max(2k + 20, 40, k + 3b)``, capped at ``P``.
        v0: start vector ``[P]`` or block ``[P, j]``, e.g. eigenvectors from an earlier
            call (warm start while tracking a Hessian through training). With
            ``block_size=1`` the columns are summed into one start vector; otherwise
            they fill the start block (grouped or padded with random vectors).
        generator: source of randomness for start and restart vectors (default: a fresh
            unseeded one). The same seed gives bit-identical results.
        block_size: ``None``/``1`` single-vector Lanczos; an int ``b``: block Lanczos;
            ``"auto"``: :func:`auto_block_size`.
        basis_device: where the Krylov basis (``P x max_basis`` float64) lives: a device
            (default ``op.device``), e.g. ``"cpu"`` to keep a large basis off the GPU while
            products run there (the basis is then in pinned host memory when ``op`` is on
            CUDA, and reorthogonalization runs on the CPU); or ``"disk"``: a memory-mapped
            file (see ``basis_dir``) for a basis that fits neither beside the model on the
            device nor in host memory. With ``"disk"`` the products, the newest block and
            all arithmetic run on ``op.device``, and basis vectors travel there
            ``basis_chunk`` at a time (for reorthogonalization, restarts and the Ritz
            vectors), so the device holds ``O(P * (basis_chunk + block_size + k))`` numbers
            rather than ``O(P * max_basis)``; the host needs only page cache. Results equal
            the in-memory ones up to rounding (the chunked products sum in another order):
            same product counts, eigenvalues agreeing to ~1e-13 relative.
        basis_dir: directory of the memory-mapped basis file with ``basis_device="disk"``
            (default: the system temporary directory, ``$TMPDIR``). The file's space is
            reserved up front (a full disk fails here, not midway), and on POSIX systems
            it is unlinked right after mapping, so nothing is left behind even if the
            process is killed; elsewhere it is removed when the solver returns or raises.
        basis_chunk: basis vectors per transfer with ``basis_device="disk"`` (default:
            as many as fit in 256 MiB, at least 1).
        return_vectors: also return the eigenvectors (in ``op.dtype`` on ``op.device``).
        true_residuals: report true residual norms (``k`` extra matvecs), see above.
        callback: called after every product with a dict: ``num_matvecs``,
            ``num_restarts``, ``basis_size``, ``ritz_values``, ``residual_norms``,
            ``converged``, ``norm_estimate`` (wanted pairs, float64 CPU tensors).
        checkpoint: a file path, or a :class:`hesslab.io.Checkpoint` (a read-only one
            resumes without writing: the non-zero ranks of a torchrun job). The full
            solver state (basis, projected matrix, counters, generator state, seconds so
            far) is saved there atomically after every thick
            restart; a later call with the same arguments and the same file resumes from
            it and returns bit-identical results to an uninterrupted run (products are
            deterministic). The file is removed when the solver returns normally. The
            saved basis is a plain tensor in every ``basis_device`` mode (a ``"disk"``
            basis is written out, not referenced), so a checkpoint written with one mode
            resumes in another.

    Returns:
        :class:`~hesslab.linalg.results.EigenResult` with ``values`` ``[k]`` (largest first
        for ``"largest"``/``"magnitude"``, smallest first for ``"smallest"``), ``vectors``
        ``[P, k]``, ``residual_norms``, ``converged``, ``num_matvecs`` (operator columns;
        a block product of ``b`` columns counts ``b``), ``seconds``, ``num_restarts``;
        ``method`` is ``"lanczos"`` or ``"block-lanczos"``.

    Raises:
        ConfigurationError: invalid ``k``, ``which``, ``tol``, budgets or start vectors.
        BasisStorageError: the ``"disk"`` basis file cannot be created (missing directory,
            no space).
    """
    t0 = time.perf_counter()
    op = as_operator(op)
    require_symmetric(op, "eigenpairs (Lanczos)")
    P = op.shape[0]
    if which not in _WHICH:
        raise ConfigurationError(f"which must be one of {_WHICH}, got {which!r}")
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= P:
        raise ConfigurationError(f"k must be an integer in [1, P={P}], got {k!r}")
    k = int(k)
    if not (isinstance(tol, (int, float)) and tol >= 0 and math.isfinite(tol)):
        raise ConfigurationError(f"tol must be a finite number >= 0, got {tol!r}")
    if block_size is None:
        b = 1
    elif block_size == "auto":
        b = auto_block_size(k, P, op.device)
    elif isinstance(block_size, (int, np.integer)) and block_size >= 1:
        b = min(int(block_size), P)
    else:
        raise ConfigurationError(
            f"block_size must be None, a positive int or 'auto', got {block_size!r}"
        )
    if max_basis is None:
        m = max(2 * k + 20, 40, k + 3 * b)
    else:
        m = int(max_basis)
    m = min(m, P)
    if m < P and m < k + 2 * b:
        raise ConfigurationError(
            f"max_basis={m} is too small for k={k} and block_size={b}: it needs at least "
            f"k + 2*block_size = {k + 2 * b} (or P={P}); increase max_basis"
        )
    if max_matvecs is None:
        max_matvecs = max(1000, 100 * k)
    if max_matvecs < b:
        raise ConfigurationError(
            f"max_matvecs={max_matvecs} is smaller than one block of {b} products; "
            "increase max_matvecs"
        )
    generator = _default_generator(generator)
    disk = isinstance(basis_device, str) and basis_device == "disk"
    chunk = _chunk_columns(basis_chunk, P, m)
    bdev = op.device if basis_device is None or disk else torch.device(basis_device)
    wdev = op.device if disk else bdev  # where the newest block and products live
    f64 = torch.float64

    num_matvecs = 0

    def apply(X: Tensor) -> Tensor:
        nonlocal num_matvecs
        num_matvecs += X.shape[1]
        Y = op.matmat(X.to(dtype=op.dtype, device=op.device).contiguous())
        return Y.detach().to(dtype=f64, device=wdev)

    # ------------------------------------------------------------ start block
    if v0 is not None:
        X0 = _as_matrix(v0, P, "v0").to(dtype=f64, device=wdev)
        norms = torch.linalg.vector_norm(X0, dim=0)
        X0 = X0[:, norms > 0] / norms[norms > 0]
        if b == 1:
            X0 = X0.sum(dim=1, keepdim=True) if X0.shape[1] else X0
        elif X0.shape[1] > b:
            G = torch.zeros(X0.shape[1], b, dtype=f64, device=wdev)
            G[torch.arange(X0.shape[1]), torch.arange(X0.shape[1]) % b] = 1.0
            X0 = X0 @ G
        if X0.shape[1] < b:
            X0 = torch.cat([X0, _randn(P, b - X0.shape[1], generator, wdev)], dim=1)
    else:
        X0 = _randn(P, b, generator, wdev)

    basis: _MemoryBasis | _DiskBasis
    if disk:
        basis = _DiskBasis(P, m, op.device, chunk, basis_dir)
    else:
        pin = bdev.type == "cpu" and op.device.type == "cuda" and torch.cuda.is_available()
        basis = _MemoryBasis(P, m, bdev, pin)
    try:
        H = torch.zeros(m, m, dtype=f64)
        normest = 0.0
        Q0, _, _ = _new_block(
            X0,
            basis.view(0),
            min(b, P),
            float(torch.linalg.vector_norm(X0, dim=0).max()),
            generator,
        )
        bq = Q0.shape[1]
        basis.put(0, Q0)
        s, n = 0, bq
        num_restarts = 0
        step = 0
        first_breakdown: int | None = None
        ckpt_key = {"P": P, "k": k, "which": which, "tol": float(tol), "m": m, "b": b}
        checkpoint = as_checkpoint(checkpoint)
        prior_seconds = 0.0
        state = (
            None if checkpoint is None else checkpoint.load_state(ckpt_key, "eigenpairs", mmap=disk)
        )
        if state is not None:
            basis.load(state["V"])
            del state["V"]
            H.copy_(state["H"])
            s, n, num_matvecs, num_restarts = (
                state["s"],
                state["n"],
                state["num_matvecs"],
                state["num_restarts"],
            )
            step, first_breakdown, normest = (
                state["step"],
                state["first_breakdown"],
                state["normest"],
            )
            generator.set_state(state["generator"])
            prior_seconds = float(state.get("seconds", 0.0))

        def save_checkpoint() -> None:
            if checkpoint is None or not checkpoint.writable:
                return
            state = {
                "key": ckpt_key,
                "V": basis.state(),
                "H": H.clone(),
                "s": s,
                "n": n,
                "num_matvecs": num_matvecs,
                "num_restarts": num_restarts,
                "step": step,
                "first_breakdown": first_breakdown,
                "normest": normest,
                "generator": generator.get_state(),
                "seconds": prior_seconds + time.perf_counter() - t0,
            }
            checkpoint.save(state)

        while True:
            step += 1
            W = apply(basis.cols(s, n))
            col_norm = float(torch.linalg.vector_norm(W, dim=0).max())
            C, W = _orthogonalize(basis.view(n), W)
            Cc = C.cpu()
            H[:n, s:n] = Cc
            H[s:n, :n] = Cc.T
            blk = H[s:n, s:n].clone()
            H[s:n, s:n] = 0.5 * (blk + blk.T)
            theta, Y = torch.linalg.eigh(H[:n, :n])
            normest = max(normest, float(theta.abs().max()))
            Q, R, filled = _new_block(
                W, basis.view(n), min(b, P - n), max(normest, col_norm), generator
            )
            if filled and first_breakdown is None:
                first_breakdown = step
            bq = Q.shape[1]
            R = R.cpu()
            res_all = (
                torch.linalg.vector_norm(R @ Y[s:n, :], dim=0)
                if R.numel()
                else (torch.zeros(n, dtype=f64))
            )
            order = _order(theta, which)
            wanted = order[:k]
            conv = res_all[wanted] <= tol * normest
            if callback is not None:
                callback(
                    {
                        "num_matvecs": num_matvecs,
                        "num_restarts": num_restarts,
                        "basis_size": n,
                        "ritz_values": theta[wanted].clone(),
                        "residual_norms": res_all[wanted].clone(),
                        "converged": conv.clone(),
                        "norm_estimate": normest,
                    }
                )
            # after an invariant subspace, the Krylov space of the random continuation vector
            # gets as many steps as the first one took before convergence may be declared
            # (it may hold further copies of found eigenvalues, or larger ones)
            explored = first_breakdown is None or step >= 2 * first_breakdown
            if (bool(conv.all()) and explored) or bq == 0 or num_matvecs + bq > max_matvecs:
                break
            if n + bq <= m:
                basis.put(n, Q)
                H[n : n + bq, s:n] = R
                H[s:n, n : n + bq] = R.T
                s, n = n, n + bq
                continue
            # thick restart: keep the nk Ritz vectors nearest the wanted end, then Q
            nk = _keep_count(k, n, m, b, int(conv.sum()))
            keep = order[:nk]
            Yk = Y[:, keep]
            basis.restart(n, Yk)
            basis.put(nk, Q)
            H.zero_()
            H[:nk, :nk] = torch.diag(theta[keep])
            coupling = R @ Y[s:n, keep]
            H[nk : nk + bq, :nk] = coupling
            H[:nk, nk : nk + bq] = coupling.T
            s, n = nk, nk + bq
            num_restarts += 1
            save_checkpoint()

        if checkpoint is not None:
            checkpoint.remove()
        values = theta[wanted].clone()
        residuals = res_all[wanted].clone()
        converged = residuals <= tol * normest
        vectors = None
        info: dict[str, Any] = {"block_size": b, "max_basis": m, "residual_kind": "ritz"}
        if return_vectors or true_residuals:
            X = basis.combine(n, Y[:, wanted])
            if true_residuals:
                AX = apply(X)
                true_res = torch.linalg.vector_norm(AX - X * values.to(X.device), dim=0).cpu()
                info["ritz_residual_norms"] = residuals
                info["residual_kind"] = "true"
                residuals = true_res
                converged = residuals <= tol * normest
            if return_vectors:
                vectors = X.to(dtype=op.dtype, device=op.device)
        return EigenResult(
            values=values,
            vectors=vectors,
            residual_norms=residuals,
            converged=converged,
            num_matvecs=num_matvecs,
            seconds=prior_seconds + time.perf_counter() - t0,
            method="lanczos" if b == 1 else "block-lanczos",
            which=which,
            tol=float(tol),
            norm_estimate=normest,
            num_restarts=num_restarts,
            info=info,
        )
    finally:
        basis.close()


def _keep_count(k: int, n: int, m: int, b: int, num_converged: int) -> int:
    """Number of Ritz vectors kept at a thick restart.

    Keep the ``k`` wanted ones plus half of the remaining room (which keeps the next
    approximations of the wanted pairs in the basis, Wu & Simon 2000), at most
    ``m - 2b`` so that at least one new block fits before the next restart.
    """
    nk = k + max(0, (m - k - 2 * b)) // 2 + num_converged // 2
    return max(min(nk, m - 2 * b, n - 1), min(k, n - 1), 1)


def _new_block(
    W: Tensor, V: Tensor | _DiskColumns, width: int, scale: float, generator: torch.Generator
) -> tuple[Tensor, Tensor, int]:
    """Orthonormal block ``Q`` (``[P, <= width]``), ``R`` with ``W ~= Q R``, and the number
    of random columns added.

    ``W`` must already be orthogonal to ``V``. Directions of ``W`` with singular values
    below ``_BREAKDOWN_RTOL * scale`` count as zero (an invariant subspace); they are
    replaced by random directions orthogonal to ``V`` and the kept ones (zero rows of
    ``R``), as long as the space has room (``width``).
    """
    P, bw = W.shape
    f64 = W.dtype
    if width <= 0:
        return W[:, :0], torch.zeros(0, bw, dtype=f64, device=W.device), 0
    thresh = _BREAKDOWN_RTOL * scale
    if bw == 1:
        beta = torch.linalg.vector_norm(W[:, 0])
        if float(beta) > thresh:
            Q, R = W / beta, beta.reshape(1, 1)
        else:
            Q, R = W[:, :0], torch.zeros(0, 1, dtype=f64, device=W.device)
    else:
        U, S, Zh = torch.linalg.svd(W, full_matrices=False)
        r = min(int((thresh < S).sum()), width)
        Q = U[:, :r]
        R = S[:r, None] * Zh[:r]
    need = width - Q.shape[1]
    if need > 0:
        VQ = torch.cat([V, Q], dim=1) if isinstance(V, Tensor) else V.with_columns(Q)
        fill = _random_orthonormal(P, need, VQ, generator)
        R = torch.cat([R, torch.zeros(fill.shape[1], bw, dtype=f64, device=W.device)], 0)
        Q = torch.cat([Q, fill], dim=1)
        return Q, R, fill.shape[1]
    return Q, R, 0


def _random_orthonormal(
    P: int, j: int, V: Tensor | _DiskColumns, generator: torch.Generator
) -> Tensor:
    """``j`` (or fewer, if the space is exhausted) random orthonormal columns ``_|_ V``."""
    j = min(j, P - V.shape[1])
    if j <= 0:
        return torch.zeros(P, 0, dtype=torch.float64, device=V.device)
    Z = _randn(P, j, generator, V.device)
    _, Z = _orthogonalize(V, Z)
    Qz, Rz = torch.linalg.qr(Z)
    _, Qz = _orthogonalize(V, Qz)
    Qz, _ = torch.linalg.qr(Qz)
    return Qz


# ----------------------------------------------------------------- SLQ recurrence
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
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Run ``K`` independent Lanczos recurrences and return their Gauss quadratures.

    For each start vector ``v`` (a column of ``V0``), ``m = num_steps`` Lanczos steps with
    full reorthogonalization give the tridiagonal ``T_m``; with ``T_m = S diag(theta) S^T``
    the Gauss quadrature rule for the spectral measure ``mu_v = sum_i (u_i^T v)^2/||v||^2
    delta_{lambda_i}`` has nodes ``theta`` and weights ``S[0, :]^2``, exact for polynomials
    of degree ``<= 2m - 1`` (Golub & Meurant, 2010, "Matrices, Moments and Quadrature").
    The ``K`` recurrences share one block product per step. A recurrence that finds an
    invariant subspace after ``j < m`` steps stops there (its rule is then exact); its
    remaining nodes repeat the last node with weight 0.

    Args:
        op: symmetric operator.
        V0: ``[P, K]`` start vectors.
        num_steps: ``m``.
        deflate: optional ``[P, r]`` orthonormal block (float64); the recurrences then run
            on ``(I - U U^T) A (I - U U^T)`` restricted to the complement of ``span(U)``.
        basis_device: where the ``K`` bases live (default ``op.device``), or ``"disk"``:
            one memory-mapped file as in :func:`eigenpairs` (arithmetic on
            ``op.device``, ``basis_chunk`` vectors at a time).
        basis_dir: directory of that file (default: the system temporary directory).
        basis_chunk: basis vectors per transfer with ``"disk"`` (default: 256 MiB worth).
        callback: called after every step with ``{"step", "num_matvecs"}``.

    Returns:
        ``(nodes [K, m], weights [K, m], residuals [K, m], steps [K], num_matvecs)``,
        float64 CPU tensors; ``residuals`` are the Ritz residual norms
        ``beta_m |S[m-1, j]|`` of the nodes (0 for a recurrence that found an invariant
        subspace).
    """
    require_symmetric(op, "Lanczos quadrature")
    P = op.shape[0]
    f64 = torch.float64
    disk = isinstance(basis_device, str) and basis_device == "disk"
    bdev = op.device if basis_device is None or disk else torch.device(basis_device)
    V0 = V0.detach().to(dtype=f64, device=bdev)
    K = V0.shape[1]
    m = int(num_steps)
    store: _DiskBasis | None = None
    if disk:
        chunk = _chunk_columns(basis_chunk, P, m)
        store = _DiskBasis(P, m, op.device, chunk, basis_dir, shape=(K, m, P))
    try:
        return _quadrature(op, V0, m, deflate=deflate, bdev=bdev, store=store, callback=callback)
    finally:
        if store is not None:
            store.close()


def _quadrature(
    op: LinearOperator,
    V0: Tensor,
    m: int,
    *,
    deflate: Tensor | None,
    bdev: torch.device,
    store: _DiskBasis | None,
    callback: Callable[[dict[str, Any]], None] | None,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """The body of :func:`lanczos_quadrature` (bases in memory, or in ``store [K, m, P]``)."""
    P = op.shape[0]
    f64 = torch.float64
    K = V0.shape[1]
    U = None if deflate is None else deflate.to(dtype=f64, device=bdev)
    if U is not None:
        _, V0 = _orthogonalize(U, V0)
    basis = torch.zeros(K, P, m if store is None else 0, dtype=f64, device=bdev)
    alpha = torch.zeros(K, m, dtype=f64)
    beta = torch.zeros(K, m, dtype=f64)
    steps = torch.zeros(K, dtype=torch.long)
    norms = torch.linalg.vector_norm(V0, dim=0)
    if bool((norms == 0).any()):
        raise ConfigurationError("a probe vector is zero (or lies in the deflated space)")
    if store is None:
        basis[:, :, 0] = (V0 / norms).T
    else:
        store.store[:, 0] = (V0 / norms).T.cpu()
    active = torch.ones(K, dtype=torch.bool)
    num_matvecs = 0
    normest = 0.0
    for j in range(m):
        idx = torch.nonzero(active).flatten()
        if idx.numel() == 0:
            break
        Xa = basis[idx, :, j].T if store is None else store.store[idx, j].T.to(bdev)  # [P, Ka]
        Wa = (
            op.matmat(Xa.to(dtype=op.dtype, device=op.device).contiguous())
            .detach()
            .to(dtype=f64, device=bdev)
        )
        num_matvecs += Xa.shape[1]
        if U is not None:
            _, Wa = _orthogonalize(U, Wa)
        normest = max(normest, float(torch.linalg.vector_norm(Wa, dim=0).max()))
        for c, kk in enumerate(idx.tolist()):
            w = Wa[:, c : c + 1]
            Vk: Tensor | _DiskColumns = (
                basis[kk, :, : j + 1]
                if store is None
                else _DiskColumns(store.store[kk], j + 1, store.chunk, bdev)
            )
            C, w = _orthogonalize(Vk, w)
            a = float(C[j, 0])
            if U is not None:
                _, w = _orthogonalize(U, w)
            alpha[kk, j] = a
            steps[kk] = j + 1
            bnorm = float(torch.linalg.vector_norm(w))
            beta[kk, j] = bnorm
            if j + 1 < m:
                if bnorm <= _BREAKDOWN_RTOL * max(normest, abs(a), 1e-300) or j + 1 >= P:
                    active[kk] = False
                elif store is None:
                    basis[kk, :, j + 1] = w[:, 0] / bnorm
                else:
                    store.store[kk, j + 1] = (w[:, 0] / bnorm).cpu()
        if callback is not None:
            callback({"step": j + 1, "num_matvecs": num_matvecs})
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
    return nodes, weights, residuals, steps, num_matvecs
