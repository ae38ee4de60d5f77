"""Thick-restart (block) Lanczos as a state machine: ``step``, ``restart``, ``extract``.

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

Orthogonality: single-vector Lanczos (``b = 1``) uses partial reorthogonalization
(Simon 1984, :class:`~hesslab.linalg.basis.OrthogonalityEstimate`): each step removes
only the couplings ``H`` already holds (the previous vector, or the kept Ritz vectors
after a restart) and ``alpha v_s``, and tracks the loss of orthogonality with the
omega-recurrence; a full Gram–Schmidt against the whole basis
(:func:`~hesslab.linalg.basis.orthogonalize`, block classical, repeated only when needed)
runs for two consecutive vectors whenever an estimate exceeds ``min(sqrt(eps), tol)``.
Only until the first thick restart: after it every step is fully reorthogonalized (the
omega-recurrence models plain Lanczos, and across restarts with a large cluster at the
wanted end, e.g. the null space of a trained ReLU network's Hessian when asking for the
smallest eigenvalues, its estimates missed a total loss of orthogonality: Ritz values of
-3.4e9 for a spectrum in [-0.002, 0.25]). Solves that converge without a restart, like
the top-1/top-5 solves at 1e-3 measured below, keep the partial savings.
The basis stays semi-orthogonal, so there are no ghost eigenvalues, and the true residuals
of the Ritz vectors stay within ``~tol ||A||`` of the Ritz residuals. This reads the basis
only at those steps: at P = 11M (float32) the vector work of a top-1 solve fell from
1.3x to 0.4x of the product time (``bench/krylov_overhead.py``). Block Lanczos
(``b > 1``) orthogonalizes every new block against the whole basis. The basis is kept in
the operator's dtype (see :mod:`hesslab.linalg.basis`); ``H``, the Ritz values and
residuals are float64 on the CPU. Convergence is checked after every product (an
``eigh`` of the ``n x n`` projected matrix, negligible next to a Hessian-vector
product), which saves the matvecs a check at restarts only would waste.

The shape follows scipy's ARPACK wrapper (a reverse-communication object driven by a
loop): :func:`~hesslab.linalg.lanczos.eigenpairs` checks its arguments, builds a
:class:`ThickRestartLanczos`, calls :meth:`~ThickRestartLanczos.step` (and
:meth:`~ThickRestartLanczos.restart` when the basis is full, then checkpoints
:meth:`~ThickRestartLanczos.state_dict`) until it reports done, and returns
:meth:`~ThickRestartLanczos.extract`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from hesslab.linalg.basis import (
    BREAKDOWN_RTOL,
    Basis,
    OrthogonalityEstimate,
    col_norms,
    gram_orthonormalize,
    orthogonalize,
    owned,
)
from hesslab.linalg.probes import draw_probes
from hesslab.linalg.results import EigenResult
from hesslab.operators.base import LinearOperator

__all__ = ["ThickRestartLanczos", "keep_count", "wanted_order"]

f64 = torch.float64


def wanted_order(theta: Tensor, which: str) -> Tensor:
    """Indices of ``theta`` from the wanted end of the spectrum inwards."""
    if which == "largest":
        key = -theta
    elif which == "smallest":
        key = theta
    else:
        key = -theta.abs()
    return torch.sort(key, stable=True).indices


def keep_count(k: int, n: int, m: int, b: int, num_converged: int) -> int:
    """Number of Ritz vectors kept at a thick restart.

    Keep the ``k`` wanted ones plus half of the remaining room (which keeps the next
    approximations of the wanted pairs in the basis, Wu & Simon 2000), at most
    ``m - 2b`` so that at least one new block fits before the next restart.
    """
    nk = k + max(0, (m - k - 2 * b)) // 2 + num_converged // 2
    return max(min(nk, m - 2 * b, n - 1), min(k, n - 1), 1)


class ThickRestartLanczos:
    """The state of a thick-restart (block) Lanczos eigensolve.

    Args:
        op: symmetric operator ``[P, P]``.
        k: number of wanted eigenpairs.
        which: ``"largest"``, ``"smallest"`` or ``"magnitude"``.
        tol: relative residual tolerance (``||A x - theta x|| <= tol ||A||_est``).
        block_size: ``b``.
        max_matvecs: budget of operator columns.
        basis: an empty :class:`~hesslab.linalg.basis.Basis` of capacity ``m`` (owned by
            the caller, who closes it).
        start: ``[P, j]`` start block (any dtype; columns need not be orthonormal).
        generator: randomness for the continuation of invariant subspaces.
        callback: called after every product (see :func:`~hesslab.linalg.eigenpairs`).

    After construction the basis holds the orthonormalized start block; each
    :meth:`step` applies ``A`` to the newest block. ``done`` says when to stop and
    ``full`` when :meth:`restart` must run before the next step.
    """

    def __init__(
        self,
        op: LinearOperator,
        k: int,
        which: str,
        *,
        tol: float,
        block_size: int,
        max_matvecs: int,
        basis: Basis,
        start: Tensor,
        generator: torch.Generator,
        callback: Callable[[dict[str, Any]], None] | None = None,
        reorthogonalization: str = "partial",
    ) -> None:
        self.op, self.k, self.which, self.tol = op, k, which, float(tol)
        self.b, self.max_matvecs, self.basis = block_size, max_matvecs, basis
        self.generator, self.callback = generator, callback
        self.space = basis.space  # the inner products (summed over ranks when sharded)
        self.P, self.m = self.space.global_size(basis.P), basis.m
        self.H = torch.zeros(self.m, self.m, dtype=f64)
        self.num_matvecs = self.num_restarts = self.steps = 0
        self.normest = 0.0
        self.first_breakdown: int | None = None
        self.prior_seconds, self.t0 = 0.0, time.perf_counter()
        self.done = self.full = False
        self._pending: dict[str, Any] = {}
        partial = reorthogonalization == "partial" and self.b == 1
        # a loss of orthogonality omega moves the true residuals of the Ritz vectors
        # from the Ritz residuals by about omega ||A||: keep omega below tol as well
        eps = torch.finfo(basis.dtype).eps
        threshold = min(eps**0.5, self.tol)
        self.ortho = OrthogonalityEstimate(self.m, basis.dtype, threshold) if partial else None
        self.partial_full_count: int | None = None  # set when a restart ends partial
        X0 = start.to(dtype=basis.dtype, device=basis.device, copy=True)
        scale = float(col_norms(X0, self.space).max()) if X0.shape[1] else 0.0
        Q0, _, _ = self._new_block(X0, 0, min(self.b, self.P), scale)
        basis.put(0, Q0)
        self.s, self.n = 0, Q0.shape[1]

    # --------------------------------------------------------------- products
    def apply(self, X: Tensor) -> Tensor:
        """``A X`` (counted) in the basis dtype on the basis' work device."""
        self.num_matvecs += X.shape[1]
        op = self.op
        Xo = X.to(dtype=op.dtype, device=op.device).contiguous()
        W = owned(op.matmat(Xo).detach(), Xo)  # the solver updates W in place
        return W.to(dtype=self.basis.dtype, device=self.basis.device)

    @property
    def seconds(self) -> float:
        """Wall time of the solve, interrupted runs included."""
        return self.prior_seconds + time.perf_counter() - self.t0

    # ------------------------------------------------------------------ steps
    def step(self) -> None:
        """Apply ``A`` to the newest block, update ``H``, the Ritz pairs and ``done``;
        append the next block when it fits (else set ``full``)."""
        self.steps += 1
        s, n, H = self.s, self.n, self.H
        W = self.apply(self.basis.cols(s, n))
        if self.ortho is None:
            norms = col_norms(W, self.space)
            col_norm = float(norms.max())
            C, W = orthogonalize(self.basis, W, n, norms=norms)
            Cc = C.cpu()
            H[:n, s:n] = Cc
            H[s:n, :n] = Cc.T
            blk = H[s:n, s:n].clone()
            H[s:n, s:n] = 0.5 * (blk + blk.T)
        else:
            self._local_orthogonalize(W, s, n)
        W, omega_q, beta = self._partial(W, s, n)
        if self.ortho is not None:  # ||A v_s||^2 = ||H[:, s]||^2 + beta^2 (no extra pass)
            col_norm = float(H[:n, s].square().sum().sqrt()) + (beta or 0.0)
        theta, Y = torch.linalg.eigh(H[:n, :n])
        self.normest = max(self.normest, float(theta.abs().max()))
        scale = max(self.normest, col_norm)
        Q, R, filled = self._new_block(W, n, min(self.b, self.P - n), scale, beta=beta)
        if filled:
            omega_q = None if omega_q is None else torch.full_like(omega_q, self.ortho.eps)
            if self.first_breakdown is None:
                self.first_breakdown = self.steps
        R = R.cpu()
        res = (
            torch.linalg.vector_norm(R @ Y[s:n, :], dim=0)
            if R.numel()
            else torch.zeros(n, dtype=f64)
        )
        order = wanted_order(theta, self.which)
        conv = res[order[: self.k]] <= self.tol * self.normest
        self._pending = {
            "theta": theta, "Y": Y, "Q": Q, "R": R, "res": res, "order": order,
            "omega_q": omega_q,
        }  # fmt: skip
        self._report(conv)
        self._advance(conv, Q, R, omega_q)

    def _advance(self, conv: Tensor, Q: Tensor, R: Tensor, omega_q: Tensor | None) -> None:
        """Decide ``done`` / ``full``, or append the new block ``Q`` (coupled by ``R``)."""
        s, n, H = self.s, self.n, self.H
        # after an invariant subspace, the Krylov space of the random continuation vector
        # gets as many steps as the first one took before convergence may be declared
        # (it may hold further copies of found eigenvalues, or larger ones)
        explored = self.first_breakdown is None or self.steps >= 2 * self.first_breakdown
        bq = Q.shape[1]
        if (bool(conv.all()) and explored) or bq == 0 or self.num_matvecs + bq > self.max_matvecs:
            self.done = True
        elif n + bq <= self.m:
            self.basis.put(n, Q)
            H[n : n + bq, s:n] = R
            H[s:n, n : n + bq] = R.T
            if omega_q is not None:
                self.ortho.set(n, omega_q)
            self.s, self.n = n, n + bq
        else:
            self.full = True

    def _local_orthogonalize(self, W: Tensor, s: int, n: int) -> None:
        """Partial reorthogonalization's local step (single vector ``v_s``, ``n = s + 1``):
        ``alpha = v_s^T W``, then in one pass ``W -= V[:, lo:n] [H[lo:s, s]; alpha]`` with
        the couplings ``H`` holds (the previous vector, or the kept Ritz vectors after a
        restart); ``H[s, s] = alpha``. (``alpha`` is taken before the couplings are
        removed: it differs from ``v_s^T (W - V H[lo:s, s])`` by ``O(omega ||A||)``, below
        the accuracy semi-orthogonality gives the projected matrix.)"""
        H = self.H
        nz = torch.nonzero(H[:s, s]).flatten()
        lo = int(nz[0]) if nz.numel() else s
        a = self.basis.tmm(n, W, start=s).cpu()
        H[s:n, s:n] = a
        D = H[lo:n, s:n].to(dtype=W.dtype, device=W.device)
        self.basis.sub_mm_(n, W, D, start=lo)

    def _partial(self, W: Tensor, s: int, n: int) -> tuple[Tensor, Tensor | None, float | None]:
        """``(W, omega, beta)``: with partial reorthogonalization, the estimates ``omega``
        of the new vector's inner products with the basis (after a full Gram–Schmidt when
        they exceed the threshold) and ``beta = ||W||``; ``(W, None, None)`` without."""
        if self.ortho is None:
            return W, None, None
        beta = float(col_norms(W, self.space)[0])
        H = self.H
        normest = max(self.normest, float(H[s, s].abs()))
        x = self.ortho.predict(H, s, n, beta, normest)
        if not self.ortho.needs_full(x):
            return W, x, beta
        # the removed components (below the threshold times beta) stay out of H, as in
        # Simon's method: H keeps the structure the omega-recurrence models
        _, W = orthogonalize(self.basis, W, n)
        return W, self.ortho.full(x), None

    def _report(self, conv: Tensor) -> None:
        if self.callback is None:
            return
        p = self._pending
        wanted = p["order"][: self.k]
        self.callback(
            {
                "num_matvecs": self.num_matvecs,
                "num_restarts": self.num_restarts,
                "basis_size": self.n,
                "ritz_values": p["theta"][wanted].clone(),
                "residual_norms": p["res"][wanted].clone(),
                "converged": conv.clone(),
                "norm_estimate": self.normest,
            }
        )

    def restart(self) -> None:
        """Thick restart: keep the ``nk`` Ritz vectors nearest the wanted end, then ``Q``."""
        p, s, n, H = self._pending, self.s, self.n, self.H
        theta, Y, Q, R = p["theta"], p["Y"], p["Q"], p["R"]
        conv = p["res"][p["order"][: self.k]] <= self.tol * self.normest
        nk = keep_count(self.k, n, self.m, self.b, int(conv.sum()))
        keep = p["order"][:nk]
        self.basis.restart(n, Y[:, keep])
        if self.ortho is not None:
            q = p["omega_q"]
            self.ortho.restart(Y[:, keep], n, q if q is not None and Q.shape[1] else Y[:0, 0])
        bq = Q.shape[1]
        self.basis.put(nk, Q)
        if self.ortho is not None:  # full reorthogonalization from the first restart on
            self.partial_full_count = self.ortho.full_count
            self.ortho = None
        H.zero_()
        H[:nk, :nk] = torch.diag(theta[keep])
        coupling = R @ Y[s:n, keep]
        H[nk : nk + bq, :nk] = coupling
        H[:nk, nk : nk + bq] = coupling.T
        self.s, self.n = nk, nk + bq
        self.num_restarts += 1
        self.full = False

    # ------------------------------------------------------------- new blocks
    def _new_block(
        self, W: Tensor, n: int, width: int, scale: float, beta: float | None = None
    ) -> tuple[Tensor, Tensor, int]:
        """Orthonormal block ``Q`` (``[P, <= width]``), ``R`` (float64) with ``W ~= Q R``,
        and the number of random columns added.

        ``W`` must already be orthogonal to the first ``n`` basis vectors. Directions of
        ``W`` with singular values below ``BREAKDOWN_RTOL * scale`` count as zero (an
        invariant subspace); they are replaced by random directions orthogonal to the
        basis and the kept ones (zero rows of ``R``), as long as the space has room.
        ``beta``: the norm of a single column ``W`` if known.
        """
        bw = W.shape[1]
        if width <= 0:
            return W[:, :0], torch.zeros(0, bw, dtype=f64), 0
        thresh = BREAKDOWN_RTOL * scale
        if bw == 1:
            beta = float(col_norms(W, self.space)[0]) if beta is None else beta
            if beta > thresh:
                Q, R = W.div_(beta), torch.full((1, 1), beta, dtype=f64)
            else:
                Q, R = W[:, :0], torch.zeros(0, 1, dtype=f64)
        else:
            U, S, Zh = self._svd(W)
            r = min(int((thresh < S).sum()), width)
            Q = U[:, :r]
            R = (S[:r, None] * Zh[:r]).to(dtype=f64, device="cpu")
        need = width - Q.shape[1]
        if need <= 0:
            return Q, R, 0
        fill = self._random_orthonormal(need, n, Q)
        R = torch.cat([R, torch.zeros(fill.shape[1], bw, dtype=f64)], 0)
        return torch.cat([Q, fill], dim=1), R, fill.shape[1]

    def _svd(self, W: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Thin SVD of the block ``W`` (from its Gram matrix when sharded)."""
        if not self.space.distributed:
            return torch.linalg.svd(W, full_matrices=False)
        return gram_orthonormalize(W, self.space, rtol=0.0)

    def _random_orthonormal(self, j: int, n: int, Q: Tensor) -> Tensor:
        """``j`` (or fewer, if the space is exhausted) random orthonormal columns orthogonal
        to the first ``n`` basis vectors and to ``Q``."""
        basis = self.basis
        j = min(j, self.P - n - Q.shape[1])
        if j <= 0:
            return Q[:, :0]
        Z = draw_probes(
            self.P, j, distribution="gaussian", generator=self.generator, device=basis.device
        ).to(basis.dtype)
        Z = self.space.local_part(Z)
        for _ in range(2):
            _, Z = orthogonalize(basis, Z, n)
            _, Z = orthogonalize(Q, Z, space=self.space)
            if self.space.distributed:
                Z, _, _ = gram_orthonormalize(Z, self.space, rtol=0.0)
            else:
                Z, _ = torch.linalg.qr(Z)
        return Z

    # ------------------------------------------------------------- extraction
    def extract(self, *, return_vectors: bool = True, true_residuals: bool = False) -> EigenResult:
        """The wanted Ritz pairs as an :class:`~hesslab.linalg.results.EigenResult`.

        ``true_residuals`` applies ``A`` to the ``k`` Ritz vectors (``k`` counted
        products) and reports ``||A x_i - theta_i x_i||`` (computed in float64) instead of
        the Ritz residuals (kept in ``info["ritz_residual_norms"]``).
        """
        p = self._pending
        wanted = p["order"][: self.k]
        values = p["theta"][wanted].clone()
        residuals = p["res"][wanted].clone()
        info: dict[str, Any] = {"block_size": self.b, "max_basis": self.m, "residual_kind": "ritz"}
        vectors = None
        if self.ortho is not None:
            info["reorthogonalization"] = "partial"
            info["full_reorthogonalizations"] = self.ortho.full_count
        elif self.partial_full_count is not None:
            info["reorthogonalization"] = "partial until the first restart, then full"
            info["full_reorthogonalizations"] = self.partial_full_count
        if return_vectors or true_residuals:
            X = self.basis.combine(self.n, p["Y"][:, wanted])
            if self.ortho is not None and X.shape[1] == 1:
                X = X / col_norms(X, self.space).to(X.dtype)
            if true_residuals:
                AX = self.apply(X).to(f64)
                vals = values.to(device=X.device)
                res_block = AX - X.to(f64) * vals
                if self.space.distributed:
                    true_res = col_norms(res_block, self.space).cpu()
                else:
                    true_res = torch.linalg.vector_norm(res_block, dim=0).cpu()
                info["ritz_residual_norms"] = residuals
                info["residual_kind"] = "true"
                residuals = true_res
            if return_vectors:
                vectors = X.to(dtype=self.op.dtype, device=self.op.device)
        return EigenResult(
            values=values,
            vectors=vectors,
            residual_norms=residuals,
            converged=residuals <= self.tol * self.normest,
            num_matvecs=self.num_matvecs,
            seconds=self.seconds,
            method="lanczos" if self.b == 1 else "block-lanczos",
            which=self.which,
            tol=self.tol,
            norm_estimate=self.normest,
            num_restarts=self.num_restarts,
            info=info,
        )

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed solve needs (taken right after a :meth:`restart`)."""
        return {
            "V": self.basis.state(),
            "H": self.H.clone(),
            "s": self.s,
            "n": self.n,
            "num_matvecs": self.num_matvecs,
            "num_restarts": self.num_restarts,
            "step": self.steps,
            "first_breakdown": self.first_breakdown,
            "normest": self.normest,
            "generator": self.generator.get_state(),
            "seconds": self.seconds,
            "ortho": None if self.ortho is None else self.ortho.state_dict(),
            "partial_full_count": self.partial_full_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (the generator's state is restored too)."""
        self.basis.load(state["V"])
        self.H.copy_(state["H"])
        self.s, self.n = state["s"], state["n"]
        self.num_matvecs, self.num_restarts = state["num_matvecs"], state["num_restarts"]
        self.steps, self.first_breakdown = state["step"], state["first_breakdown"]
        self.normest = state["normest"]
        self.generator.set_state(state["generator"])
        self.prior_seconds = float(state.get("seconds", 0.0))
        if self.ortho is not None and state.get("ortho") is not None:
            self.ortho.load_state_dict(state["ortho"])
        elif state.get("partial_full_count") is not None:  # saved after the first restart
            self.ortho = None
            self.partial_full_count = state["partial_full_count"]
        self.t0 = time.perf_counter()
        self.done = self.full = False
