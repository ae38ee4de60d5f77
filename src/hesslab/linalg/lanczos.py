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
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hesslab.errors import ConfigurationError
from hesslab.linalg.results import EigenResult
from hesslab.operators.base import LinearOperator, as_operator

__all__ = ["auto_block_size", "eigenpairs", "lanczos_quadrature"]

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


def _orthogonalize(V: Tensor, W: Tensor) -> tuple[Tensor, Tensor]:
    """Project ``W`` onto the orthogonal complement of the orthonormal columns of ``V``.

    Classical Gram–Schmidt twice (a third pass when the second pass still removed more
    than half of some column's norm). Returns the accumulated coefficients ``C = V^T W``
    (``[n, b]``) and the projected ``W``.
    """
    C = torch.zeros(V.shape[1], W.shape[1], dtype=W.dtype, device=W.device)
    if V.shape[1] == 0:
        return C, W
    for p in range(3):
        before = torch.linalg.vector_norm(W, dim=0)
        D = V.T @ W
        W = W - V @ D
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
    return_vectors: bool = True,
    true_residuals: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
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
        basis_device: where the Krylov basis lives (default ``op.device``); e.g. ``"cpu"``
            to keep a large basis off the GPU while products run there.
        return_vectors: also return the eigenvectors (in ``op.dtype`` on ``op.device``).
        true_residuals: report true residual norms (``k`` extra matvecs), see above.
        callback: called after every product with a dict: ``num_matvecs``,
            ``num_restarts``, ``basis_size``, ``ritz_values``, ``residual_norms``,
            ``converged``, ``norm_estimate`` (wanted pairs, float64 CPU tensors).
        checkpoint: a file path. The full solver state (basis, projected matrix,
            counters, generator state) is saved there atomically after every thick
            restart; a later call with the same arguments and the same file resumes from
            it and returns bit-identical results to an uninterrupted run (products are
            deterministic). The file is removed when the solver returns normally.

    Returns:
        :class:`~hesslab.linalg.results.EigenResult` with ``values`` ``[k]`` (largest first
        for ``"largest"``/``"magnitude"``, smallest first for ``"smallest"``), ``vectors``
        ``[P, k]``, ``residual_norms``, ``converged``, ``num_matvecs`` (operator columns;
        a block product of ``b`` columns counts ``b``), ``seconds``, ``num_restarts``;
        ``method`` is ``"lanczos"`` or ``"block-lanczos"``.

    Raises:
        ConfigurationError: invalid ``k``, ``which``, ``tol``, budgets or start vectors.
    """
    t0 = time.perf_counter()
    op = as_operator(op)
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
    bdev = op.device if basis_device is None else torch.device(basis_device)
    f64 = torch.float64

    num_matvecs = 0

    def apply(X: Tensor) -> Tensor:
        nonlocal num_matvecs
        num_matvecs += X.shape[1]
        Y = op.matmat(X.to(dtype=op.dtype, device=op.device).contiguous())
        return Y.detach().to(dtype=f64, device=bdev)

    # ------------------------------------------------------------ start block
    if v0 is not None:
        X0 = _as_matrix(v0, P, "v0").to(dtype=f64, device=bdev)
        norms = torch.linalg.vector_norm(X0, dim=0)
        X0 = X0[:, norms > 0] / norms[norms > 0]
        if b == 1:
            X0 = X0.sum(dim=1, keepdim=True) if X0.shape[1] else X0
        elif X0.shape[1] > b:
            G = torch.zeros(X0.shape[1], b, dtype=f64, device=bdev)
            G[torch.arange(X0.shape[1]), torch.arange(X0.shape[1]) % b] = 1.0
            X0 = X0 @ G
        if X0.shape[1] < b:
            X0 = torch.cat([X0, _randn(P, b - X0.shape[1], generator, bdev)], dim=1)
    else:
        X0 = _randn(P, b, generator, bdev)

    V = torch.zeros(P, m, dtype=f64, device=bdev)
    H = torch.zeros(m, m, dtype=f64)
    normest = 0.0
    Q0, _, _ = _new_block(
        X0, V[:, :0], min(b, P), float(torch.linalg.vector_norm(X0, dim=0).max()), generator
    )
    bq = Q0.shape[1]
    V[:, :bq] = Q0
    s, n = 0, bq
    num_restarts = 0
    step = 0
    first_breakdown: int | None = None
    ckpt_key = {"P": P, "k": k, "which": which, "tol": float(tol), "m": m, "b": b}
    if checkpoint is not None and os.path.exists(checkpoint):
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state.get("key") != ckpt_key:
            raise ConfigurationError(
                f"checkpoint {checkpoint} was written by eigenpairs with {state.get('key')}, "
                f"not {ckpt_key}; use the same arguments or remove the file"
            )
        V.copy_(state["V"].to(bdev))
        H.copy_(state["H"])
        s, n, num_matvecs, num_restarts = (
            state["s"],
            state["n"],
            state["num_matvecs"],
            state["num_restarts"],
        )
        step, first_breakdown, normest = state["step"], state["first_breakdown"], state["normest"]
        generator.set_state(state["generator"])

    def save_checkpoint() -> None:
        if checkpoint is None:
            return
        state = {
            "key": ckpt_key,
            "V": V.cpu(),
            "H": H.clone(),
            "s": s,
            "n": n,
            "num_matvecs": num_matvecs,
            "num_restarts": num_restarts,
            "step": step,
            "first_breakdown": first_breakdown,
            "normest": normest,
            "generator": generator.get_state(),
        }
        tmp = f"{os.fspath(checkpoint)}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, checkpoint)

    while True:
        step += 1
        W = apply(V[:, s:n])
        col_norm = float(torch.linalg.vector_norm(W, dim=0).max())
        C, W = _orthogonalize(V[:, :n], W)
        Cc = C.cpu()
        H[:n, s:n] = Cc
        H[s:n, :n] = Cc.T
        blk = H[s:n, s:n].clone()
        H[s:n, s:n] = 0.5 * (blk + blk.T)
        theta, Y = torch.linalg.eigh(H[:n, :n])
        normest = max(normest, float(theta.abs().max()))
        Q, R, filled = _new_block(W, V[:, :n], min(b, P - n), max(normest, col_norm), generator)
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
            V[:, n : n + bq] = Q
            H[n : n + bq, s:n] = R
            H[s:n, n : n + bq] = R.T
            s, n = n, n + bq
            continue
        # thick restart: keep the nk Ritz vectors nearest the wanted end, then Q
        nk = _keep_count(k, n, m, b, int(conv.sum()))
        keep = order[:nk]
        Yk = Y[:, keep]
        V[:, :nk] = V[:, :n] @ Yk.to(bdev)
        V[:, nk:] = 0
        V[:, nk : nk + bq] = Q
        H.zero_()
        H[:nk, :nk] = torch.diag(theta[keep])
        coupling = R @ Y[s:n, keep]
        H[nk : nk + bq, :nk] = coupling
        H[:nk, nk : nk + bq] = coupling.T
        s, n = nk, nk + bq
        num_restarts += 1
        save_checkpoint()

    if checkpoint is not None and os.path.exists(checkpoint):
        os.remove(checkpoint)
    values = theta[wanted].clone()
    residuals = res_all[wanted].clone()
    converged = residuals <= tol * normest
    vectors = None
    info: dict[str, Any] = {"block_size": b, "max_basis": m, "residual_kind": "ritz"}
    if return_vectors or true_residuals:
        X = V[:, :n] @ Y[:, wanted].to(bdev)
        if true_residuals:
            AX = apply(X)
            true_res = torch.linalg.vector_norm(AX - X * values.to(bdev), dim=0).cpu()
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
        seconds=time.perf_counter() - t0,
        method="lanczos" if b == 1 else "block-lanczos",
        which=which,
        tol=float(tol),
        norm_estimate=normest,
        num_restarts=num_restarts,
        info=info,
    )


def _keep_count(k: int, n: int, m: int, b: int, num_converged: int) -> int:
    """Number of Ritz vectors kept at a thick restart.

    Keep the ``k`` wanted ones plus half of the remaining room (which keeps the next
    approximations of the wanted pairs in the basis, Wu & Simon 2000), at most
    ``m - 2b`` so that at least one new block fits before the next restart.
    """
    nk = k + max(0, (m - k - 2 * b)) // 2 + num_converged // 2
    return max(min(nk, m - 2 * b, n - 1), min(k, n - 1), 1)


def _new_block(
    W: Tensor, V: Tensor, width: int, scale: float, generator: torch.Generator
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
        fill = _random_orthonormal(P, need, torch.cat([V, Q], dim=1), generator)
        R = torch.cat([R, torch.zeros(fill.shape[1], bw, dtype=f64, device=W.device)], 0)
        Q = torch.cat([Q, fill], dim=1)
        return Q, R, fill.shape[1]
    return Q, R, 0


def _random_orthonormal(P: int, j: int, V: Tensor, generator: torch.Generator) -> Tensor:
    """``j`` (or fewer, if the space is exhausted) random orthonormal columns ``_|_ V``."""
    j = min(j, P - V.shape[1])
    if j <= 0:
        return V[:, :0]
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
        basis_device: where the ``K`` bases live (default ``op.device``).
        callback: called after every step with ``{"step", "num_matvecs"}``.

    Returns:
        ``(nodes [K, m], weights [K, m], residuals [K, m], steps [K], num_matvecs)``,
        float64 CPU tensors; ``residuals`` are the Ritz residual norms
        ``beta_m |S[m-1, j]|`` of the nodes (0 for a recurrence that found an invariant
        subspace).
    """
    P = op.shape[0]
    f64 = torch.float64
    bdev = op.device if basis_device is None else torch.device(basis_device)
    V0 = V0.detach().to(dtype=f64, device=bdev)
    K = V0.shape[1]
    m = int(num_steps)
    U = None if deflate is None else deflate.to(dtype=f64, device=bdev)
    if U is not None:
        _, V0 = _orthogonalize(U, V0)
    basis = torch.zeros(K, P, m, dtype=f64, device=bdev)
    alpha = torch.zeros(K, m, dtype=f64)
    beta = torch.zeros(K, m, dtype=f64)
    steps = torch.zeros(K, dtype=torch.long)
    norms = torch.linalg.vector_norm(V0, dim=0)
    if bool((norms == 0).any()):
        raise ConfigurationError("a probe vector is zero (or lies in the deflated space)")
    basis[:, :, 0] = (V0 / norms).T
    active = torch.ones(K, dtype=torch.bool)
    num_matvecs = 0
    normest = 0.0
    for j in range(m):
        idx = torch.nonzero(active).flatten()
        if idx.numel() == 0:
            break
        Xa = basis[idx, :, j].T  # [P, Ka]
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
            Vk = basis[kk, :, : j + 1]
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
                else:
                    basis[kk, :, j + 1] = w[:, 0] / bnorm
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
