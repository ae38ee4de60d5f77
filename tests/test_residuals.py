"""Reported residuals equal the true residuals ``||A x - theta x||``, computed densely.

An accuracy test only sees that a converged eigenvalue is right; a residual reported 5x
too small passes it (the solver merely stops early, and the answer is still close). Here
every solver is stopped *before* convergence (residuals of order 1e-3..1), so the
reported residual norms can be compared with the true ones to a relative 1e-6, and the
``converged`` flags with the tolerance applied to the true residuals. The SLQ density is
recomputed from its (re-drawn) probes with a dense Lanczos basis: nodes, weights and Ritz
residuals; its default kernel width is checked against the documented formula and the
density of an exactly resolved spectrum against the dense Gaussian-smoothed density.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from hesslab.linalg.density import spectral_density
from hesslab.linalg.lanczos import eigenpairs
from hesslab.linalg.power import power_iteration
from hesslab.linalg.probes import draw_probes

P = 60


def _matrix(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lam = torch.cat(
        [
            torch.tensor([9.0, 7.5, 6.8, -6.0, 5.1], dtype=torch.float64),
            torch.linspace(-2.0, 3.0, P - 5, dtype=torch.float64),
        ]
    )
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    A = (Q * lam) @ Q.T
    return 0.5 * (A + A.T), lam


def _true_residuals(A, X, theta) -> torch.Tensor:
    X = X.to(torch.float64)
    return torch.linalg.vector_norm(A @ X - X * theta, dim=0)


def _check_residuals(A, res, *, rtol=1e-6) -> None:
    true = _true_residuals(A, res.vectors, res.values)
    # unconverged on purpose: a relative comparison is meaningful only far above rounding
    # (~eps ||A|| = 2e-15 here)
    assert float(true.min()) > 1e-8 * float(torch.linalg.matrix_norm(A, 2))
    torch.testing.assert_close(res.residual_norms, true, rtol=rtol, atol=0.0)
    assert torch.equal(res.converged, res.residual_norms <= res.tol * res.norm_estimate)
    # the vectors are orthonormal and theta is their Rayleigh quotient
    V = res.vectors.to(torch.float64)
    torch.testing.assert_close(
        V.T @ V, torch.eye(V.shape[1], dtype=torch.float64), atol=1e-10, rtol=0
    )
    torch.testing.assert_close(((V * (A @ V)).sum(0)), res.values, atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    ("which", "block_size", "max_basis", "max_matvecs"),
    [
        ("largest", None, None, 12),  # single vector, no restart
        ("smallest", None, 12, 16),  # single vector, restarted
        ("magnitude", 3, None, 12),  # block, no restart
        ("largest", 3, 15, 30),  # block, restarted
    ],
)
def test_eigenpairs_ritz_residuals_are_true_residuals(which, block_size, max_basis, max_matvecs):
    A, _ = _matrix()
    res = eigenpairs(
        A,
        3,
        which,
        tol=1e-12,
        max_matvecs=max_matvecs,
        max_basis=max_basis,
        block_size=block_size,
        generator=torch.Generator().manual_seed(1),
    )
    assert res.info["residual_kind"] == "ritz"
    assert (res.num_restarts > 0) == (max_basis is not None)
    assert not res.converged.any()
    _check_residuals(A, res)


def test_eigenpairs_true_residuals_option():
    A, _ = _matrix(1)
    kw = dict(tol=1e-12, max_matvecs=14, generator=torch.Generator().manual_seed(2))
    res = eigenpairs(A, 2, **kw, true_residuals=True)
    assert res.info["residual_kind"] == "true" and res.num_matvecs == 14 + 2
    _check_residuals(A, res, rtol=1e-10)
    torch.testing.assert_close(
        res.info["ritz_residual_norms"], res.residual_norms, rtol=1e-6, atol=0
    )


def test_eigenpairs_converged_residuals_bound_true_residuals():
    A, lam = _matrix(2)
    res = eigenpairs(A, 3, tol=1e-8, generator=torch.Generator().manual_seed(3))
    assert res.all_converged
    true = _true_residuals(A, res.vectors, res.values)
    eps_part = 1e3 * torch.finfo(torch.float64).eps * float(lam.abs().max())
    assert bool((true <= 1.01 * res.residual_norms + eps_part).all()), (true, res.residual_norms)
    assert bool((true <= 1e-8 * res.norm_estimate * 1.01 + eps_part).all())


def test_power_iteration_residuals_are_true_residuals():
    A, _ = _matrix(3)
    res = power_iteration(
        A, 2, tol=1e-12, max_matvecs=20, generator=torch.Generator().manual_seed(4)
    )
    assert res.info["residual_kind"] == "true" and not res.converged.any()
    true = _true_residuals(A, res.vectors, res.values)
    torch.testing.assert_close(res.residual_norms, true, rtol=1e-10, atol=0.0)


# ---------------------------------------------------------------------------- density
def _dense_lanczos(A: torch.Tensor, v: torch.Tensor, m: int):
    """Nodes, weights and Ritz residuals of ``m`` Lanczos steps from ``v``, densely:
    orthonormal Krylov basis ``Q`` (Gram-Schmidt twice), ``T = Q^T A Q = S diag(theta) S^T``,
    weights ``(e_1^T s_j)^2``, residuals ``||A Q s_j - theta_j Q s_j||``."""
    Q = (v / v.norm())[:, None]
    for _ in range(m - 1):
        w = A @ Q[:, -1:]
        for _ in range(2):
            w = w - Q @ (Q.T @ w)
        Q = torch.cat([Q, w / w.norm()], dim=1)
    theta, S = torch.linalg.eigh(Q.T @ A @ Q)
    X = Q @ S
    return theta, S[0] ** 2, _true_residuals(A, X, theta)


@pytest.mark.parametrize("deflate", [0, 2])
def test_density_nodes_weights_and_ritz_residuals_dense(deflate):
    A, _ = _matrix(4)
    m, K = 10, 2
    g = torch.Generator().manual_seed(5)
    c = torch.Generator()
    c.set_state(g.get_state())
    dens = spectral_density(A, m, K, generator=g, deflate=deflate, deflate_tol=1e-3)
    Aop = A
    if deflate:
        # the deflation eigensolve draws from the generator first: repeat it exactly
        eig = eigenpairs(A, deflate, "magnitude", tol=1e-3, generator=c)
        torch.testing.assert_close(dens.outliers, eig.values, rtol=0, atol=0)
        true = _true_residuals(A, eig.vectors, eig.values)
        torch.testing.assert_close(dens.outlier_residuals, true, rtol=1e-6, atol=0.0)
        assert float(true.max()) > 1e-8 * 9.0  # stopped at tol 1e-3: far above rounding
        U, _ = torch.linalg.qr(eig.vectors.to(torch.float64))
        Pi = torch.eye(P, dtype=torch.float64) - U @ U.T
        Aop = Pi @ A @ Pi
    V = draw_probes(P, K, distribution="rademacher", generator=c)
    for kk in range(K):
        v = V[:, kk] if not deflate else Pi @ V[:, kk]
        theta, w, r = _dense_lanczos(Aop, v, m)
        scale = float(theta.abs().max())
        torch.testing.assert_close(dens.nodes[kk], theta, rtol=0, atol=1e-9 * scale)
        torch.testing.assert_close(dens.weights[kk], w, rtol=0, atol=1e-9)
        torch.testing.assert_close(dens.ritz_residuals[kk], r, rtol=1e-6, atol=1e-9 * scale)
    assert float(dens.ritz_residuals.max()) > 1e-3  # unconverged nodes are compared


def test_density_default_sigma_and_smoothed_density():
    """With ``m = P`` steps the rule is the exact spectrum (every node locked at 1/P): the
    default broadened density is ``(1/P) sum_i N(x; lambda_i, sigma^2)`` with the documented
    ``sigma = sqrt(1e-5) * (lambda_max - lambda_min)`` (Ghorbani et al., 2019)."""
    A, lam = _matrix(5)
    dens = spectral_density(A, P, generator=torch.Generator().manual_seed(6))
    lam = torch.sort(lam).values
    width = float(lam[-1] - lam[0])
    assert dens.width() == pytest.approx(width, rel=1e-10)
    sigma = math.sqrt(1e-5) * width
    grid = torch.cat([dens.grid(512), lam, lam + 0.5 * sigma])  # peaks and flanks
    z = (grid[:, None] - lam[None, :]) / sigma
    truth = torch.exp(-0.5 * z * z).sum(1) / (P * sigma * math.sqrt(2 * math.pi))
    got = dens.evaluate(grid)
    torch.testing.assert_close(got, truth, rtol=1e-6, atol=1e-9 * float(truth.max()))
    torch.testing.assert_close(dens.evaluate(grid, sigma=sigma), got, rtol=1e-9, atol=0)
    # a wider kernel is a different density (the check above is not kernel-blind)
    assert float((dens.evaluate(grid, sigma=3 * sigma) - got).abs().max()) > 0.1 * float(
        truth.max()
    )


def test_thick_restart_keeps_more_than_the_wanted_pairs():
    """Wu & Simon (2000): a thick restart keeps the ``k`` wanted Ritz vectors plus about
    half of the remaining room, so the basis right after a restart (seen by the callback)
    is well above ``k + b``; keeping only ``k`` would cost far more products."""
    A, _ = _matrix(6)
    sizes = []
    res = eigenpairs(
        A,
        2,
        tol=1e-10,
        max_basis=20,
        generator=torch.Generator().manual_seed(7),
        callback=lambda d: sizes.append(d["basis_size"]),
    )
    assert res.num_restarts >= 1 and res.all_converged
    drops = [b for a, b in itertools.pairwise(sizes) if b < a]
    assert drops and min(drops) >= 2 + (20 - 2 - 2) // 2, sizes
