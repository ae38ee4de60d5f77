"""Eigenpairs of symmetric operators: :func:`eigenpairs` (thick-restart Lanczos or dense).

The algorithm lives in :mod:`hesslab.linalg.thick_restart` (the solver's state machine)
and :mod:`hesslab.linalg.basis` (storage and Gram–Schmidt); this module checks the
arguments, sets up the start block, the basis and the checkpoint, drives the solver and
returns its result. :func:`lanczos_quadrature` (SLQ) is re-exported from
:mod:`hesslab.linalg.quadrature`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hesslab.errors import ConfigurationError, ConvergenceError
from hesslab.io import Checkpoint, as_checkpoint
from hesslab.linalg.basis import Basis, BasisStorageError, as_block, chunk_vectors, col_norms
from hesslab.linalg.memory import records_peak_memory
from hesslab.linalg.probes import draw_probes
from hesslab.linalg.quadrature import lanczos_quadrature
from hesslab.linalg.results import EigenResult
from hesslab.linalg.space import LOCAL, LocalSpace, shared_generator, space_of
from hesslab.linalg.thick_restart import ThickRestartLanczos, wanted_order
from hesslab.operators.base import LinearOperator, as_operator
from hesslab.validation import check_k_tol, require_symmetric

__all__ = ["BasisStorageError", "auto_block_size", "eigenpairs", "lanczos_quadrature"]

_WHICH = ("largest", "smallest", "magnitude")
_METHODS = ("lanczos", "dense", "auto")
#: ``method="auto"`` is dense up to this ``P`` (and up to ``4 *`` it when ``k > P/4``).
DENSE_MAX = 2000


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
@records_peak_memory
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
    method: str = "lanczos",
    on_nonconvergence: str = "return",
) -> EigenResult:
    """``k`` eigenpairs of a symmetric operator by thick-restart (block) Lanczos.

    Finds ``A x_i = lambda_i x_i`` for the ``k`` eigenvalues at the ``which`` end of the
    spectrum, with thick restarts (Wu & Simon, 2000) and, for ``block_size=1``, partial
    reorthogonalization (Simon, 1984: a full Gram–Schmidt against the basis only when the
    omega-recurrence estimates of ``|v_i^T v_j|`` exceed ``min(sqrt(eps), tol)``; blocks
    are always reorthogonalized fully);
    ``block_size > 1`` runs block Lanczos (Golub & Underwood, 1977) on ``b`` vectors per
    product, which also finds eigenvalues of multiplicity up to ``b``.

    Stopping rule: every wanted Ritz pair satisfies
    ``||A x_i - theta_i x_i|| <= tol * ||A||_est``, ``||A||_est`` the largest ``|theta|``
    seen so far (a lower bound on ``||A||_2`` that is accurate after a few steps).

    Reported residuals: by default the Ritz residuals from the Lanczos relation,
    ``||R y_i[last block]||`` (no extra products). With the basis kept orthogonal to
    ``min(sqrt(eps), tol)`` they equal the true residuals ``||A x_i - theta_i x_i||`` of
    the computed products up to about ``tol ||A||`` (full reorthogonalization:
    ``O(eps ||A||)``), ``eps`` that of ``op.dtype`` (the basis is kept in the operator's
    dtype; the projected matrix and all coefficients are float64); the products themselves
    carry the operator's rounding error (``~eps(op.dtype) ||A||``), which the relation
    cannot see. Measured cost of the float32 basis against a float64 one (same float32
    products, P = 2M and 11M, tol 1e-6): eigenvalue error ~4e-7 and ~7e-8 of ``||A||``
    (float64 basis: ~2e-8), half the memory and traffic. ``true_residuals=True``
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
        max_basis: largest basis size kept in memory (``P x max_basis`` numbers of
            ``op.dtype``);
            default ``max(2k + 20, 40, k + 3b)``, capped at ``P``.
        v0: start vector ``[P]`` or block ``[P, j]``, e.g. eigenvectors from an earlier
            call (warm start while tracking a Hessian through training). With
            ``block_size=1`` the columns are summed into one start vector; otherwise
            they fill the start block (grouped or padded with random vectors).
        generator: source of randomness for start and restart vectors (default: a fresh
            unseeded one). The same seed gives bit-identical results.
        block_size: ``None``/``1`` single-vector Lanczos; an int ``b``: block Lanczos;
            ``"auto"``: :func:`auto_block_size`.
        basis_device: where the Krylov basis (``P x max_basis`` in ``op.dtype``) lives: a device
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
            same product counts, eigenvalues agreeing to ~1e-13 relative in float64 (the
            basis has ``op.dtype``: ~1e-7 for a float32 operator).
        basis_dir: directory of the memory-mapped basis file with ``basis_device="disk"``
            (default: the system temporary directory, ``$TMPDIR``). The file's space is
            reserved up front (a full disk fails here, not midway), and on POSIX systems
            it is unlinked right after mapping, so nothing is left behind even if the
            process is killed; elsewhere it is removed when the solver returns or raises.
        basis_chunk: basis vectors per transfer with ``basis_device="disk"`` (default:
            as many as fit in 256 MiB, at least 1).
        return_vectors: also return the eigenvectors (in ``op.dtype`` on ``op.device``;
            orthonormal to about ``min(sqrt(eps), tol)``, ``eps`` that of ``op.dtype``).
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
        method: ``"lanczos"`` (default), ``"dense"`` (``eigh`` of the float64 matrix built
            from ``P`` products; exact, ``P^2`` memory) or ``"auto"``: dense when
            ``P <= 2000``, or ``k > P/4`` and ``P <= 8000`` (where Lanczos would need
            about as many products), else Lanczos. The Lanczos-only arguments (budgets,
            start vectors, basis, callback, checkpoint) are ignored by the dense path.
        on_nonconvergence: ``"return"`` (default): return the result, whose
            ``converged`` flags say which pairs met ``tol`` within ``max_matvecs``;
            ``"raise"``: raise :class:`~hesslab.errors.ConvergenceError` instead when
            some did not, carrying the result as its ``result`` attribute.

    Returns:
        :class:`~hesslab.linalg.results.EigenResult` with ``values`` ``[k]`` (largest first
        for ``"largest"``/``"magnitude"``, smallest first for ``"smallest"``), ``vectors``
        ``[P, k]``, ``residual_norms``, ``converged``, ``num_matvecs`` (operator columns;
        a block product of ``b`` columns counts ``b``), ``seconds``, ``num_restarts``;
        ``method`` is ``"lanczos"``, ``"block-lanczos"`` or ``"dense"``.

    Raises:
        ConfigurationError: invalid ``k``, ``which``, ``tol``, budgets or start vectors.
        BasisStorageError: the ``"disk"`` basis file cannot be created (missing directory,
            no space).
        ConvergenceError: with ``on_nonconvergence="raise"``, some pair did not converge.
    """
    op = as_operator(op)
    require_symmetric(op, "eigenpairs (Lanczos)")
    space = space_of(op)
    P = space.global_size(op.shape[0])
    k, b, m, max_matvecs = _check(op, k, which, tol, block_size, max_basis, max_matvecs)
    if method not in _METHODS:
        raise ConfigurationError(f"method must be one of {_METHODS}, got {method!r}")
    if on_nonconvergence not in ("return", "raise"):
        raise ConfigurationError(
            f"on_nonconvergence must be 'return' or 'raise', got {on_nonconvergence!r}"
        )
    if method == "dense" and space.distributed:
        raise ConfigurationError(
            "method='dense' needs the whole matrix on one process; a sharded operator "
            "takes method='lanczos' (or 'auto')"
        )
    if method == "dense" or (method == "auto" and use_dense(P, k) and not space.distributed):
        return _finish(_dense(op, k, which, tol, return_vectors), on_nonconvergence)
    generator = shared_generator(generator, space)
    basis = _basis(op, m, basis_device, basis_dir, basis_chunk)
    try:
        start = _start_block(v0, P, b, generator, basis.device, basis.dtype, space)
        solver = ThickRestartLanczos(
            op, k, which, tol=tol, block_size=b, max_matvecs=max_matvecs, basis=basis,
            start=start, generator=generator, callback=callback,
        )  # fmt: skip
        checkpoint = as_checkpoint(checkpoint)
        key = {"P": P, "k": k, "which": which, "tol": float(tol), "m": m, "b": b}
        if checkpoint is not None:
            state = checkpoint.load_state(key, "eigenpairs", mmap=basis.disk)
            if state is not None:
                solver.load_state_dict(state)
        while not solver.done:
            if solver.full:
                solver.restart()
                if checkpoint is not None and checkpoint.writable:
                    checkpoint.save({"key": key, **solver.state_dict()})
            solver.step()
        if checkpoint is not None:
            checkpoint.remove()
        result = solver.extract(return_vectors=return_vectors, true_residuals=true_residuals)
    finally:
        basis.close()
    return _finish(result, on_nonconvergence)


def use_dense(P: int, k: int) -> bool:
    """The choice of ``method="auto"``: dense ``eigh`` for small ``P`` (or large ``k/P``)."""
    return P <= DENSE_MAX or (4 * k > P and P <= 4 * DENSE_MAX)


def _finish(result: EigenResult, on_nonconvergence: str) -> EigenResult:
    if on_nonconvergence == "raise" and not result.all_converged:
        bad = int((~result.converged).sum())
        raise ConvergenceError(
            f"{bad} of {result.converged.numel()} eigenpairs did not reach tol={result.tol:g} "
            f"within {result.num_matvecs} products; raise max_matvecs or max_basis, or loosen "
            "tol (the partial result is the exception's .result)",
            result=result,
        )
    return result


def _check(
    op: LinearOperator, k: Any, which: str, tol: Any, block_size: Any, max_basis: Any,
    max_matvecs: Any,
) -> tuple[int, int, int, int]:  # fmt: skip
    """Validated ``(k, b, m, max_matvecs)`` (``P`` the global size of a sharded ``op``)."""
    P = space_of(op).global_size(op.shape[0])
    if which not in _WHICH:
        raise ConfigurationError(f"which must be one of {_WHICH}, got {which!r}")
    k = check_k_tol(P, k, tol)
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
    m = max(2 * k + 20, 40, k + 3 * b) if max_basis is None else int(max_basis)
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
    return k, b, m, int(max_matvecs)


def _basis(
    op: LinearOperator,
    m: int,
    basis_device: torch.device | str | None,
    basis_dir: str | os.PathLike[str] | None,
    basis_chunk: int | None,
) -> Basis:
    """The empty basis of ``m`` vectors where ``basis_device`` says (see :func:`eigenpairs`)."""
    P, space = op.shape[0], space_of(op)  # a sharded basis holds this rank's entries
    if isinstance(basis_device, str) and basis_device == "disk":
        return Basis(
            P, m, dtype=op.dtype, device=op.device, disk=True, chunk=basis_chunk,
            directory=basis_dir, space=space,
        )  # fmt: skip
    chunk_vectors(basis_chunk, P, m)  # validated in every mode
    bdev = op.device if basis_device is None else torch.device(basis_device)
    pin = bdev.type == "cpu" and op.device.type == "cuda" and torch.cuda.is_available()
    return Basis(P, m, dtype=op.dtype, device=bdev, pin=pin, space=space)


def _start_block(
    v0: Any,
    P: int,
    b: int,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype = torch.float64,
    space: LocalSpace = LOCAL,
) -> Tensor:
    """The ``[P, b]`` start block: ``v0`` (float64, normalized columns, summed for
    ``b = 1``, grouped into ``b`` columns or padded with random ones) or ``b`` random
    Gaussian columns drawn directly in ``dtype`` (the basis dtype: no float64 draw and
    conversion of ``P`` entries). In a sharded ``space`` ``P`` is the global size, random
    columns are drawn at full size and sliced, and ``v0`` is this rank's shard."""
    f64 = torch.float64
    if v0 is None:
        gdev = generator.device
        full = torch.randn((P, b), generator=generator, dtype=dtype, device=gdev)
        return space.local_part(full).to(device)
    if space.distributed:
        X0 = as_block(v0, v0.shape[0], "v0").to(dtype=f64, device=device)
        norms = col_norms(X0, space)
    else:
        X0 = as_block(v0, P, "v0").to(dtype=f64, device=device)
        norms = torch.linalg.vector_norm(X0, dim=0)
    X0 = X0[:, norms > 0] / norms[norms > 0]
    if b == 1:
        X0 = X0.sum(dim=1, keepdim=True) if X0.shape[1] else X0
    elif X0.shape[1] > b:
        G = torch.zeros(X0.shape[1], b, dtype=f64, device=device)
        G[torch.arange(X0.shape[1]), torch.arange(X0.shape[1]) % b] = 1.0
        X0 = X0 @ G
    if X0.shape[1] < b:
        fill = draw_probes(
            P, b - X0.shape[1], distribution="gaussian", generator=generator, device=device
        )
        X0 = torch.cat([X0, space.local_part(fill)], dim=1)
    return X0


def _dense(op: LinearOperator, k: int, which: str, tol: float, return_vectors: bool) -> EigenResult:
    """``k`` eigenpairs from ``eigh`` of the float64 matrix (``P`` products)."""
    t0 = time.perf_counter()
    P = op.shape[0]
    A = op.to_dense().to(torch.float64)
    A = 0.5 * (A + A.T)
    theta, U = torch.linalg.eigh(A)
    wanted = wanted_order(theta, which)[:k]
    values, X = theta[wanted], U[:, wanted]
    residuals = torch.linalg.vector_norm(A @ X - X * values, dim=0).cpu()
    normest = float(theta.abs().max())
    return EigenResult(
        values=values.cpu(),
        vectors=X.to(dtype=op.dtype, device=op.device) if return_vectors else None,
        residual_norms=residuals,
        converged=residuals <= tol * normest,
        num_matvecs=P,
        seconds=time.perf_counter() - t0,
        method="dense",
        which=which,
        tol=float(tol),
        norm_estimate=normest,
        info={"residual_kind": "true"},
    )
