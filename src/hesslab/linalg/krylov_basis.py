"""Krylov-basis bookkeeping: the loss-of-orthogonality estimate and a block Krylov space.

:class:`OrthogonalityEstimate` drives the partial reorthogonalization of thick-restart
Lanczos (:mod:`hesslab.linalg.thick_restart`); :class:`KrylovBasis` builds the block
Krylov spaces of the trace estimators (:mod:`hesslab.linalg.trace`) with full
reorthogonalization by :func:`~hesslab.linalg.gram_schmidt.orthonormalize`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from hesslab.linalg.gram_schmidt import orthonormalize
from hesslab.linalg.space import LOCAL

__all__ = ["KrylovBasis", "OrthogonalityEstimate"]


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
