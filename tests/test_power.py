"""power_iteration with Hotelling deflation against eigh and against Lanczos."""

from __future__ import annotations

import pytest
import torch

from hesslab.errors import ConfigurationError
from hesslab.linalg.lanczos import eigenpairs
from hesslab.linalg.power import power_iteration
from tests.spectra import spiked_bulk, with_spectrum


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_agrees_with_eigh_and_lanczos_on_separated_spectrum() -> None:
    lam = spiked_bulk(200, [10.0, -6.0, 3.0])  # magnitude order 10, -6, 3
    A = with_spectrum(lam, seed=1)
    # Hotelling deflation leaves each pair a residual floor of about the residuals of the
    # pairs deflated before it, so ask for 1e-8 rather than 1e-10
    res = power_iteration(A, 3, tol=1e-8, generator=gen())
    assert res.method == "power" and res.which == "magnitude"
    assert res.all_converged
    assert torch.allclose(res.values, torch.tensor([10.0, -6.0, 3.0]).double(), rtol=1e-10)
    X = res.vectors
    true_res = torch.linalg.vector_norm(A @ X - X * res.values, dim=0)
    assert torch.allclose(true_res, res.residual_norms, atol=1e-12)
    lz = eigenpairs(A, 3, "magnitude", tol=1e-8, generator=gen())
    assert torch.allclose(res.values, lz.values, rtol=1e-10)
    assert float((X.T @ lz.vectors).abs().diagonal().min()) > 1 - 1e-8
    assert lz.num_matvecs < res.num_matvecs


def test_budget_and_unconverged_flags() -> None:
    lam = torch.linspace(0.0, 1.0, 100, dtype=torch.float64)
    A = with_spectrum(lam, seed=2)
    res = power_iteration(A, 2, tol=1e-12, max_matvecs=20, generator=gen())
    assert res.num_matvecs <= 20
    assert not res.all_converged


def test_warm_start_and_determinism() -> None:
    lam = spiked_bulk(150, [5.0, 3.0])
    A = with_spectrum(lam, seed=3)
    cold = power_iteration(A, 1, tol=1e-8, generator=gen())
    warm = power_iteration(A, 1, tol=1e-8, v0=cold.vectors[:, 0], generator=gen())
    assert warm.num_matvecs <= 2
    again = power_iteration(A, 1, tol=1e-8, generator=gen())
    assert torch.equal(cold.vectors, again.vectors)


def test_bad_input() -> None:
    with pytest.raises(ConfigurationError):
        power_iteration(torch.eye(5, dtype=torch.float64), 6)
    with pytest.raises(ConfigurationError):
        power_iteration(torch.eye(5, dtype=torch.float64), 2, max_matvecs=1)
