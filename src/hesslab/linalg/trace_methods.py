"""The estimators behind :func:`hesslab.linalg.trace.trace` and its ``frobenius_sq``.

Their methods, references and accuracy are in :mod:`hesslab.linalg.trace`'s docstring.

* :class:`Deflated`: an exact part on ``range(Q)`` plus Hutchinson remainder probes
  (``"hutchinson"`` with an empty ``Q``, ``"hutch++"``, ``"krylov"``).
* :func:`krylov_deflation`: the block-Krylov deflation with its adaptive split, using the
  :class:`Pilot` remainder probes, re-deflated block by block for free.
* :class:`XTrace` and :func:`xtrace_estimates`: the exchangeable leave-one-out estimator
  (Epperly, Tropp & Webber, SIMAX 2024).
* :func:`exact_sum`: ``sum_i e_i^T A e_i`` (or ``||A e_i||^2``) with unit vectors.

Blocks are in the :class:`~hesslab.linalg.probes.Engine`'s working dtype; every sample
and exact part is float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hesslab.linalg.basis import KrylovBasis, col_dots, orthonormalize
from hesslab.linalg.probes import Engine, mean_stderr, remainder_samples

__all__ = [
    "PROBE_MEMORY",
    "Deflated",
    "Pilot",
    "XTrace",
    "exact_part",
    "exact_sum",
    "krylov_deflation",
    "probe_chunk",
    "xtrace_estimates",
]

#: bytes that one round of remainder probes may hold (the float64 probes, their products
#: and the operator-dtype copy): larger rounds are drawn and applied in chunks
PROBE_MEMORY = 2**30


def probe_chunk(P: int, K: int) -> int:
    """Probes per chunk of a ``K``-probe round.

    ``K`` when ``24 P K`` bytes fit :data:`PROBE_MEMORY`, else as many as fit (at least 1).

    Below the limit the ``K`` probes are one draw (the results of small problems are those
    of one block); above it, e.g. ``K = 192`` at ``P = 11.2M`` (17 GB of float64 probes
    at once), each chunk is its own draw, so the probes differ from one block's draw but
    memory stays at :data:`PROBE_MEMORY`.
    """
    if K <= 0:
        return 1
    return K if 24 * P * K <= PROBE_MEMORY else max(1, PROBE_MEMORY // (24 * P))


class Deflated:
    """State of a deflated Hutchinson estimate: exact part on ``range(Q)`` + remainder probes."""

    def __init__(self, engine: Engine, Q: Tensor, Z: Tensor, exact_part: float, kind: str):
        self.engine, self.Q, self.Z, self.exact_part, self.kind = engine, Q, Z, exact_part, kind
        self.normalize = engine.distribution != "rademacher" and Q.shape[1] > 0
        self.samples = torch.zeros(0, dtype=torch.float64, device=engine.device)

    def add_probes(self, X: Tensor, AX: Tensor) -> None:
        """Add the remainder samples of probes ``X`` with products ``A X``."""
        s = remainder_samples(
            X, AX, self.Q, self.Z, normalize=self.normalize, kind=self.kind,
            space=self.engine.space,
        )  # fmt: skip
        self.samples = torch.cat([self.samples, s])

    def draw(self, K: int) -> None:
        """Draw ``K`` more probes (chunked, :func:`probe_chunk`) and add their samples."""
        step = probe_chunk(self.engine.P, K)
        for start in range(0, K, step):
            X = self.engine.probes(min(step, K - start))
            self.add_probes(X, self.engine.apply(X))

    def estimate(self) -> tuple[float, float]:
        """``(exact part + mean sample, standard error of the mean)``."""
        mean, se = mean_stderr(self.samples)
        return self.exact_part + mean, se


class Pilot:
    """The pilot probes ``X`` and products ``A X``, deflated block by block (no products).

    After :meth:`deflate` with every block of ``Q`` (and ``Z = A Q``) so far, ``x = (I -
    QQ^T) v`` and ``A x = A v - Z (Q^T v)`` as in :func:`remainder_samples`, at the cost of
    the newest block only.
    """

    def __init__(self, X: Tensor, AX: Tensor, kind: str, engine: Engine) -> None:
        self.X, self.AX, self.kind = X.clone(), AX.clone(), kind
        self.space, self.P = engine.space, engine.P

    def deflate(self, Qn: Tensor, Zn: Tensor) -> None:
        """Deflate by the newest block ``Qn`` (orthogonal to the earlier ones), ``Zn = A Qn``."""
        C = self.space.reduce_sum(Qn.T @ self.X)
        self.X.addmm_(Qn, C, alpha=-1)
        self.AX.addmm_(Zn, C, alpha=-1)

    def samples(self, normalize: bool, d: int) -> Tensor:
        """The float64 remainder samples after deflation by ``d`` directions."""
        X, AX, sp = self.X, self.AX, self.space
        s = col_dots(X, AX, sp) if self.kind == "trace" else col_dots(AX, AX, sp)
        s = s.to(torch.float64)
        return s * ((self.P - d) / col_dots(X, X, sp).to(torch.float64)) if normalize else s


def krylov_deflation(
    engine: Engine, num_matvecs: int, kind: str, krylov_block: int | None
) -> tuple[Deflated, dict]:
    """Block-Krylov deflation with an adaptive split (see the module docstring)."""
    N = num_matvecs
    m_min = max(2, math.ceil(N / 4))
    b = krylov_block if krylov_block is not None else max(1, min(16, round(N / 12)))
    b = min(b, engine.P, N - m_min)
    X0 = engine.probes(m_min)
    AX0 = engine.apply(X0)
    if b < 1:
        empty = engine.zeros()
        st = Deflated(engine, empty, empty, 0.0, kind)
        st.add_probes(X0, AX0)
        st.draw(N - engine.num_matvecs)
        return st, {"krylov_dim": 0, "krylov_block": 0, "num_samples": st.samples.numel()}
    kb = KrylovBasis(engine, engine.probes(b, "gaussian"), capacity=N - m_min)
    norm = engine.distribution != "rademacher"
    pilot = Pilot(X0, AX0, kind, engine)
    var = {0: float(pilot.samples(False, 0).var())}
    best = var[0] / N
    history = [(0, best)]
    blocks = 0
    while kb.next_block_size > 0:
        room = N - m_min - kb.dim
        if room < 1:
            break
        d0 = kb.dim
        kb.extend(max_cols=room)
        blocks += 1
        pilot.deflate(kb.Q[:, d0:], kb.Z[:, d0:])
        var[kb.dim] = float(pilot.samples(norm, kb.dim).var())
        v = var[kb.dim] / (N - kb.dim)
        history.append((kb.dim, v))
        # the first block (random directions) deflates nothing by itself: judge from the 2nd
        if blocks >= 2:
            if v >= best:
                break
            best = v
    # keep the prefix of the basis whose pilot remainder variance is smallest (d = 0: the
    # deflation did not pay, e.g. a flat spectrum; plain Hutchinson with the probes left)
    d = min(var, key=lambda k: (var[k], k))
    Q, Z = kb.Q[:, :d], kb.Z[:, :d]
    exact = exact_part(Q, Z, kind, engine)
    st = Deflated(engine, Q, Z, exact, kind)
    if d == kb.dim:  # the pilot is deflated by exactly this Q already
        st.samples = pilot.samples(st.normalize, d)
    else:
        st.add_probes(X0, AX0)
    st.draw(N - engine.num_matvecs)
    info = {
        "krylov_dim": d,
        "krylov_block": b,
        "krylov_products": kb.dim,
        "num_samples": st.samples.numel(),
        "exact_part": exact,
        "split_history": history,
    }
    return st, info


def exact_part(Q: Tensor, Z: Tensor, kind: str, engine: Engine) -> float:
    """``tr(Q^T A Q)`` (``kind="trace"``) or ``||A Q||_F^2`` from ``Z = A Q``.

    Summed in float64 over the columns (each column's sum in the blocks' dtype, chunked).
    """
    sp = engine.space
    cols = col_dots(Q, Z, sp) if kind == "trace" else col_dots(Z, Z, sp)
    return float(cols.to(torch.float64).sum())


def xtrace_estimates(
    Omega: Tensor, Y: Tensor, Q: Tensor, Z: Tensor, *, normalize: bool
) -> tuple[Tensor, str]:
    """The ``m`` leave-one-out XTrace estimates from ``Y = A Omega``, ``Q``, ``Z = A Q``.

    For column ``i``, ``P_i`` projects onto ``range(Y_{-i})``, a subspace of ``range(Q)``.
    With ``Y = Q R`` (``R`` square and invertible when ``Y`` has full rank ``m``), the unit
    vector ``s_i = R^{-T} e_i / ||R^{-T} e_i||`` spans the part of ``range(R)`` orthogonal
    to every other column, so ``P_i = Q (I - s_i s_i^T) Q^T`` (rank-one downdate). With
    ``H = Q^T A Q``, ``W = Q^T Omega``, ``c_i = s_i^T w_i``, ``u_i = w_i - c_i s_i`` and
    ``x_i = (I - P_i) omega_i = omega_i - Q u_i``:

        ``tr(A P_i) = tr H - s_i^T H s_i``,
        ``x_i^T A x_i = omega_i^T y_i - 2 u_i^T r_i + u_i^T H u_i``,
        ``||x_i||^2 = ||omega_i||^2 - ||w_i||^2 + c_i^2``,

    and the estimate is ``tr(A P_i) + x_i^T A x_i`` (times ``n/||x_i||^2`` on the
    ``n = P - m + 1`` dimensional complement for rotation-invariant probes). When ``Y`` is
    rank deficient each ``P_i`` is formed from an SVD of ``R`` without column ``i``.
    """
    P, m = Omega.shape
    f64 = torch.float64
    H = (Q.T @ Z).to(f64)
    H = 0.5 * (H + H.T)
    W = (Q.T @ Omega).to(f64)
    R = (Q.T @ Y).to(f64)
    oy = col_dots(Omega, Y).to(f64)
    om2 = col_dots(Omega, Omega).to(f64)
    if Q.shape[1] == m:
        Sinv = torch.linalg.solve(R.T, torch.eye(m, dtype=R.dtype, device=R.device))
        S = Sinv / torch.linalg.vector_norm(Sinv, dim=0, keepdim=True)
        c = (S * W).sum(0)
        U = W - S * c
        lowrank = torch.trace(H) - (S * (H @ S)).sum(0)
        xAx = oy - 2.0 * (U * R).sum(0) + (U * (H @ U)).sum(0)
        xx = om2 - (W * W).sum(0) + c * c
        n = torch.full_like(xx, float(P - m + 1))
        path = "downdate"
    else:
        lowrank = torch.empty(m, dtype=torch.float64, device=Omega.device)
        xAx, xx, n = torch.empty_like(lowrank), torch.empty_like(lowrank), torch.empty_like(lowrank)
        for i in range(m):
            Ui = orthonormalize(torch.cat([R[:, :i], R[:, i + 1 :]], dim=1))
            ci = Ui @ (Ui.T @ W[:, i])
            lowrank[i] = torch.trace(Ui.T @ H @ Ui)
            xAx[i] = oy[i] - 2.0 * (ci @ R[:, i]) + ci @ (H @ ci)
            xx[i] = om2[i] - ci @ ci
            n[i] = P - Ui.shape[1]
        path = "rank-deficient"
    if normalize:
        safe = xx > 0
        xAx = torch.where(safe, xAx * n / torch.where(safe, xx, torch.ones_like(xx)), 0.0)
    return lowrank + xAx, path


class XTrace:
    """XTrace's probes ``Omega``, sketch ``Y = A Omega``, basis ``Q = orth(Y)``, ``Z = A Q``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.Omega = engine.zeros()
        self.Y, self.Q, self.Z = self.Omega, self.Omega, self.Omega
        self.normalize = engine.distribution != "rademacher"
        self.path = ""

    def add(self, m: int) -> None:
        """Add ``m`` probes and their sketch columns (``2 m`` products)."""
        e = self.engine
        Om = e.probes(m)
        Y = e.apply(Om)
        Qa = orthonormalize(Y, self.Q)
        Za = e.apply(Qa)
        self.Omega = torch.cat([self.Omega, Om], 1)
        self.Y = torch.cat([self.Y, Y], 1)
        self.Q = torch.cat([self.Q, Qa], 1)
        self.Z = torch.cat([self.Z, Za], 1)

    def estimate(self) -> tuple[float, float, Tensor]:
        """``(mean, stderr, leave-one-out estimates)``."""
        est, self.path = xtrace_estimates(
            self.Omega, self.Y, self.Q, self.Z, normalize=self.normalize
        )
        mean, se = mean_stderr(est)
        return mean, se, est


def exact_sum(engine: Engine, kind: str) -> float:
    """``sum_i e_i^T A e_i`` (or ``||A e_i||^2``) over the unit vectors, in blocks."""
    P = engine.P
    step = engine.block_size or 256
    total = 0.0
    for start in range(0, P, step):
        E = engine.unit_block(start, min(P, start + step))
        AE = engine.apply(E)
        total += exact_part(E, AE, kind, engine)
    return total
