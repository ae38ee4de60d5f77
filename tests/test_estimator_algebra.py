"""Stochastic estimators with fixed probes against explicit dense formulas (to ~1e-10).

The statistical tests (``test_trace.py``, ``test_diagonal.py``) check unbiasedness over
seeds; a small bias (an off-by-one in a normalisation, a wrong projector) hides inside
their error bars. Here the probes are fixed: each estimator is called with a seeded
generator, the same probes are re-drawn from a clone of that generator through the public
:func:`~hesslab.linalg.probes.draw_probes` (same order, same distribution), and the
estimate (value, standard error and every per-probe sample) is recomputed from the
papers' formulas with dense float64 algebra: projectors ``Q Q^T`` of explicit bases, no
downdating, no recurrences. Any change of the formula fails, whatever the seed.
"""

from __future__ import annotations

import math

import pytest
import torch

from hesslab.linalg.diagonal import diagonal
from hesslab.linalg.probes import draw_probes
from hesslab.linalg.trace import frobenius_sq, trace

P = 40
RTOL = 1e-10


def _matrix(kind: str = "spiked", seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "spiked":
        lam = torch.cat(
            [
                torch.tensor([30.0, 20.0, 12.0, -9.0, 6.0], dtype=torch.float64),
                0.4 * torch.randn(P - 5, generator=g, dtype=torch.float64) + 0.1,
            ]
        )
    else:  # low rank 5 (the rank-deficient paths)
        lam = torch.zeros(P, dtype=torch.float64)
        lam[:5] = torch.tensor([5.0, 3.0, 2.0, -1.5, 1.0], dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    A = (Q * lam) @ Q.T
    return 0.5 * (A + A.T)


def _orth(W: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of range(W) (numerical rank by SVD, relative 1e-10)."""
    U, S, _ = torch.linalg.svd(W, full_matrices=False)
    if S.numel() == 0 or float(S.max()) == 0.0:
        return W[:, :0]
    return U[:, S > 1e-10 * float(S.max())]


def _krylov_basis(A: torch.Tensor, Omega: torch.Tensor, dim: int) -> torch.Tensor:
    """Orthonormal basis of span[Omega, A Omega, A^2 Omega, ...] truncated to ``dim``."""
    Q = _orth(Omega)
    block = Q
    while Q.shape[1] < dim:
        W = A @ block
        for _ in range(2):
            W = W - Q @ (Q.T @ W)
        block = _orth(W)
        Q = torch.cat([Q, block], dim=1)
    assert Q.shape[1] == dim, "the test needs dim to be a multiple of the block width"
    return Q


def _clone(g: torch.Generator) -> torch.Generator:
    c = torch.Generator()
    c.set_state(g.get_state())
    return c


def _draw(g: torch.Generator, K: int, distribution: str) -> torch.Tensor:
    return draw_probes(P, K, distribution=distribution, generator=g)


def _deflated_samples(A, Q, X, *, normalize: bool, kind: str = "trace") -> torch.Tensor:
    """Hutchinson samples of the deflated operator with the explicit projector."""
    Pi = torch.eye(P, dtype=torch.float64) - Q @ Q.T
    Xp = Pi @ X
    if kind == "trace":
        s = (Xp * (A @ Xp)).sum(0)
    else:
        s = ((A @ Xp) ** 2).sum(0)
    if normalize:
        s = s * (P - Q.shape[1]) / (Xp * Xp).sum(0)
    return s


def _check(est, value: float, samples: torch.Tensor) -> None:
    assert est.samples is not None and est.samples.shape == samples.shape
    torch.testing.assert_close(
        est.samples, samples, rtol=RTOL, atol=RTOL * float(samples.abs().max())
    )
    assert est.value == pytest.approx(value, rel=RTOL)
    se = float(samples.std(unbiased=True)) / math.sqrt(samples.numel())
    assert est.stderr == pytest.approx(se, rel=1e-8)


# ------------------------------------------------------------------------- Hutchinson
@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_fixed_probes(distribution):
    A = _matrix()
    g = torch.Generator().manual_seed(5)
    V = _draw(_clone(g), 24, distribution)
    est = trace(A, 24, method="hutchinson", distribution=distribution, generator=g)
    s = (V * (A @ V)).sum(0)
    _check(est, float(s.mean()), s)
    g = torch.Generator().manual_seed(6)
    V = _draw(_clone(g), 24, distribution)
    fro = frobenius_sq(A, 24, method="hutchinson", distribution=distribution, generator=g)
    s = ((A @ V) ** 2).sum(0)
    _check(fro, float(s.mean()), s)


# -------------------------------------------------------------------------- Hutch++
@pytest.mark.parametrize("distribution", ["rademacher", "gaussian", "sphere"])
def test_hutchpp_fixed_probes(distribution):
    """Meyer et al. (2021): tr(Q^T A Q) + Hutchinson on (I-QQ^T) A (I-QQ^T), Q = orth(A S)."""
    A, N = _matrix(), 30
    g = torch.Generator().manual_seed(1)
    c = _clone(g)
    S = _draw(c, N // 3, distribution)
    Q = _orth(A @ S)
    G = _draw(c, N - 2 * (N // 3), distribution)
    est = trace(A, N, method="hutch++", distribution=distribution, generator=g)
    assert est.num_matvecs == N and est.info["sketch_dim"] == Q.shape[1] == N // 3
    s = _deflated_samples(A, Q, G, normalize=distribution != "rademacher")
    _check(est, float(torch.trace(Q.T @ A @ Q)) + float(s.mean()), s)


# --------------------------------------------------------------------------- XTrace
def _xtrace_dense(A: torch.Tensor, Omega: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Epperly, Tropp & Webber (2024), the exchangeable estimator written out densely.

    For each probe ``i``: ``Q_i = orth(A Omega_{-i})``, ``x_i = (I - Q_i Q_i^T) omega_i``,
    ``t_i = tr(Q_i^T A Q_i) + x_i^T A x_i`` (times ``(P - rank Q_i) / ||x_i||^2`` for
    rotation-invariant probes: ``x_i/||x_i||`` is uniform on the sphere of the complement,
    whose dimension is ``P - m + 1`` for a full-rank sketch).
    """
    m = Omega.shape[1]
    out = torch.empty(m, dtype=torch.float64)
    Y = A @ Omega
    for i in range(m):
        Qi = _orth(torch.cat([Y[:, :i], Y[:, i + 1 :]], dim=1))
        x = Omega[:, i] - Qi @ (Qi.T @ Omega[:, i])
        q = float(x @ A @ x)
        if normalize:
            q *= (P - Qi.shape[1]) / float(x @ x)
        out[i] = float(torch.trace(Qi.T @ A @ Qi)) + q
    return out


@pytest.mark.parametrize("kind", ["spiked", "lowrank"])
@pytest.mark.parametrize("distribution", ["rademacher", "gaussian", "sphere"])
def test_xtrace_fixed_probes(distribution, kind):
    A, N = _matrix(kind), 16
    g = torch.Generator().manual_seed(2)
    Omega = _draw(_clone(g), N // 2, distribution)
    est = trace(A, N, method="xtrace", distribution=distribution, generator=g)
    assert est.info["path"] == ("downdate" if kind == "spiked" else "rank-deficient")
    s = _xtrace_dense(A, Omega, normalize=distribution != "rademacher")
    _check(est, float(s.mean()), s)


def test_xtrace_complement_dimension_is_p_minus_m_plus_1():
    """The normalisation factor itself: with probes rescaled so that ``||x_i|| = 1`` the
    quadratic part of each estimate is ``(P - m + 1) x_i^T A x_i``; an operator that is the
    identity on the complement of the sketch makes it exactly ``P - m + 1``."""
    N = 12
    m = N // 2
    g = torch.Generator().manual_seed(4)
    A = torch.eye(P, dtype=torch.float64)
    est = trace(A, N, method="xtrace", distribution="gaussian", generator=g)
    # tr(Q_i^T I Q_i) = m - 1 and x^T x / ||x||^2 * (P - m + 1) = P - m + 1: total P exactly
    assert torch.allclose(est.samples, torch.full((m,), float(P), dtype=torch.float64), rtol=1e-12)


# --------------------------------------------------------------------------- krylov
@pytest.mark.parametrize("kind", ["trace", "frobenius"])
@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_krylov_fixed_probes(distribution, kind):
    """Block-Krylov deflation: pilot probes X0, start block Omega (Gaussian), remainder
    probes; every entry of ``split_history`` (pilot variance of the deflated remainder over
    the products left) and the chosen dimension are recomputed densely too."""
    A, N = _matrix(), 36
    m_min = math.ceil(N / 4)  # 9 pilot probes, b = round(36/12) = 3 divides N - m_min
    fn = trace if kind == "trace" else frobenius_sq
    g = torch.Generator().manual_seed(8)
    c = _clone(g)
    est = fn(A, N, distribution=distribution, generator=g)
    b, d, used = est.info["krylov_block"], est.info["krylov_dim"], est.info["krylov_products"]
    assert b == 3 and d > 0 and d % b == 0 and used % b == 0
    X0 = _draw(c, m_min, distribution)
    Omega = _draw(c, b, "gaussian")
    X1 = _draw(c, N - m_min - used, distribution)
    norm = distribution != "rademacher"
    # the adaptive split: pilot variances for every dimension tried
    pilot = {}
    for dim, v in est.info["split_history"]:
        Qd = _krylov_basis(A, Omega, dim) if dim else A[:, :0]
        var = float(_deflated_samples(A, Qd, X0, normalize=norm and dim > 0, kind=kind).var())
        pilot[dim] = var
        assert v == pytest.approx(var / (N - dim), rel=1e-8)
    assert d == min(pilot, key=lambda k: (pilot[k], k))
    Q = _krylov_basis(A, Omega, d)
    exact = float(torch.trace(Q.T @ A @ Q)) if kind == "trace" else float(((A @ Q) ** 2).sum())
    s = _deflated_samples(A, Q, torch.cat([X0, X1], 1), normalize=norm, kind=kind)
    assert est.num_matvecs == N
    _check(est, exact + float(s.mean()), s)


# ------------------------------------------------------------------------- diagonal
def test_hutchinson_diagonal_fixed_probes():
    """Bekas et al. (2007): (sum_k v_k * A v_k) / (sum_k v_k * v_k), delta-method stderr."""
    A, N = _matrix(), 20
    g = torch.Generator().manual_seed(9)
    V = _draw(_clone(g), N, "gaussian")
    est = diagonal(A, N, method="hutchinson", distribution="gaussian", generator=g)
    a, bb = V * (A @ V), V * V
    d = a.sum(1) / bb.sum(1)
    se = ((a - d[:, None] * bb).pow(2).sum(1) / (N * (N - 1))).sqrt() / bb.mean(1)
    torch.testing.assert_close(est.values, d, rtol=RTOL, atol=RTOL)
    torch.testing.assert_close(est.stderr, se, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("kind", ["spiked", "lowrank"])
def test_xdiag_fixed_probes(kind):
    """Epperly, Tropp & Webber (2024), XDiag: d_i = diag(P_i A) + w_i * (I - P_i) A w_i,
    P_i the projector on range(A Omega_{-i}); mean and std/sqrt(m) over i."""
    A, N = _matrix(kind), 16
    m = N // 2
    g = torch.Generator().manual_seed(10)
    Omega = _draw(_clone(g), m, "rademacher")
    est = diagonal(A, N, method="xdiag", generator=g)
    Y = A @ Omega
    D = torch.empty(P, m, dtype=torch.float64)
    for i in range(m):
        Qi = _orth(torch.cat([Y[:, :i], Y[:, i + 1 :]], dim=1))
        Pi = Qi @ Qi.T
        D[:, i] = torch.diagonal(Pi @ A) + Omega[:, i] * ((torch.eye(P) - Pi) @ A @ Omega[:, i])
    scale = float(D.abs().max())
    torch.testing.assert_close(est.values, D.mean(1), rtol=RTOL, atol=RTOL * scale)
    se = D.std(dim=1, unbiased=True) / math.sqrt(m)
    torch.testing.assert_close(est.stderr, se, rtol=1e-8, atol=1e-9 * scale)
