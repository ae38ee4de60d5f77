"""Noise-injecting optimizers: increments have the documented mean and covariance."""

from __future__ import annotations

import math

import pytest
import torch

from hesslab import Objective
from hesslab.errors import ConfigurationError
from hesslab.models import mlp
from hesslab.train.optim import (
    HessianShapedNoiseGD,
    NoisyGD,
    SGDNoiseSampler,
    flat_parameters,
)


def _params(P: int, seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(torch.randn(P - 2, dtype=torch.float64, generator=g))
    b = torch.nn.Parameter(torch.randn(2, dtype=torch.float64, generator=g))
    return [w, b]


def _increments(opt, params, draws: int) -> torch.Tensor:
    """``[draws, P]`` increments of ``opt.step()`` from the same start, zero gradient."""
    start = [p.detach().clone() for p in params]
    out = []
    for _ in range(draws):
        with torch.no_grad():
            for p, s in zip(params, start, strict=True):
                p.copy_(s)
                p.grad = torch.zeros_like(p)
        before = flat_parameters(opt).clone()
        opt.step()
        out.append(flat_parameters(opt) - before)
    with torch.no_grad():
        for p, s in zip(params, start, strict=True):
            p.copy_(s)
    return torch.stack(out)


def _cov(X: torch.Tensor) -> torch.Tensor:
    Xc = X - X.mean(0)
    return Xc.T @ Xc / (X.shape[0] - 1)


def _rel_fro(A: torch.Tensor, B: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(A - B) / torch.linalg.matrix_norm(B))


def _wishart_rel_bound(Sigma: torch.Tensor, draws: int, k: float = 4.0) -> float:
    """``k`` times the standard deviation of ``‖Ĉ − Σ‖_F / ‖Σ‖_F`` for Gaussian draws:
    ``E‖Ĉ − Σ‖²_F ≈ (‖Σ‖²_F + (tr Σ)²) / n``."""
    fro2 = float(torch.linalg.matrix_norm(Sigma) ** 2)
    tr = float(torch.trace(Sigma))
    return k * math.sqrt((fro2 + tr**2) / draws / fro2)


@pytest.mark.parametrize(
    "convention,factor", [("langevin", lambda lr: lr), ("sgd", lambda lr: lr**2)]
)
def test_noisy_gd_increment_covariance(convention, factor):
    P, lr, sigma, draws = 6, 0.04, 0.7, 4000
    params = _params(P)
    opt = NoisyGD(
        params, lr=lr, noise_std=sigma, convention=convention,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    X = _increments(opt, params, draws)
    Sigma = factor(lr) * sigma**2 * torch.eye(P, dtype=torch.float64)
    err = _rel_fro(_cov(X), Sigma)
    assert err < _wishart_rel_bound(Sigma, draws)
    # the mean is zero within 4 standard errors per coordinate
    se = math.sqrt(factor(lr) * sigma**2 / draws)
    assert float(X.mean(0).abs().max()) < 4.5 * se


def test_noisy_gd_subspace_noise_lies_in_subspace():
    P, r, lr, sigma, draws = 7, 2, 0.09, 1.3, 4000
    params = _params(P)
    U = torch.linalg.qr(
        torch.randn(P, r, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ).Q
    opt = NoisyGD(
        params, lr=lr, noise_std=sigma, subspace=U, generator=torch.Generator().manual_seed(2)
    )
    X = _increments(opt, params, draws)
    residual = X - (X @ U) @ U.T
    assert float(residual.abs().max()) < 1e-12 * float(X.abs().max())
    Sigma = lr * sigma**2 * torch.eye(r, dtype=torch.float64)
    err = _rel_fro(_cov(X @ U), Sigma)
    assert err < _wishart_rel_bound(Sigma, draws)
    opt.set_subspace(None)
    assert opt.subspace is None


def test_noisy_gd_rejects_bad_subspace():
    params = _params(5)
    with pytest.raises(ConfigurationError, match="orthonormal"):
        NoisyGD(params, lr=0.1, noise_std=1.0, subspace=2 * torch.eye(5, 2, dtype=torch.float64))
    with pytest.raises(ConfigurationError, match="P=5"):
        NoisyGD(params, lr=0.1, noise_std=1.0, subspace=torch.eye(4, 2, dtype=torch.float64))
    with pytest.raises(ConfigurationError, match="convention"):
        NoisyGD(params, lr=0.1, convention="ito")


@pytest.mark.parametrize("cls", ["noisy", "shaped"])
def test_no_noise_step_is_exact_gd(cls):
    params = _params(5)
    g = torch.Generator().manual_seed(99)
    grads = [torch.randn(p.shape, dtype=p.dtype, generator=g) for p in params]
    for p, gr in zip(params, grads, strict=True):
        p.grad = gr.clone()
    before = [p.detach().clone() for p in params]
    if cls == "noisy":
        opt = NoisyGD(params, lr=0.3, noise_std=0.0)
    else:
        opt = HessianShapedNoiseGD(
            params, lr=0.3, noise_fn=lambda s, t: torch.ones_like(t), noise_scale=0.0
        )
    opt.step()
    for p, b, gr in zip(params, before, grads, strict=True):
        assert torch.equal(p.detach(), b.add(gr, alpha=-0.3))  # what torch.optim.SGD does
        assert torch.allclose(p.detach(), b - 0.3 * gr, rtol=0, atol=1e-15)


def _tiny_problem(N: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 3, dtype=torch.float64, generator=g)
    y = torch.randint(0, 2, (N,), generator=g)
    model = mlp(3, (2,), 2, seed=seed, dtype=torch.float64).eval()
    return model, (x, y)


def _dense_per_sample(model, data) -> torch.Tensor:
    """``[P, N]`` per-sample gradients by plain autograd, one point at a time."""
    x, y = data
    cols = []
    for i in range(x.shape[0]):
        loss = torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, list(model.parameters()))
        cols.append(torch.cat([gr.reshape(-1) for gr in grads]))
    return torch.stack(cols, 1)


@pytest.mark.parametrize("replacement", [True, False])
def test_sgd_noise_sampler_covariance_matches_dense(replacement):
    model, data = _tiny_problem()
    N, B, draws = 12, 3, 6000
    obj = Objective(model, "ce", data)
    sampler = SGDNoiseSampler(obj, B, replacement=replacement)
    G = _dense_per_sample(model, data)
    Gc = G - G.mean(1, keepdim=True)
    C = Gc @ Gc.T / N
    f = 1 / B if replacement else (N - B) / (B * (N - 1))
    C_B = f * C
    assert torch.allclose(sampler.covariance(), C_B, atol=1e-12)
    X = sampler.sample(num_samples=draws, generator=torch.Generator().manual_seed(5)).T
    err = _rel_fro(_cov(X), C_B)
    assert err < _wishart_rel_bound(C_B, draws)
    assert err > 0  # really random


def test_sgd_noise_sampler_equals_minibatch_gradient_covariance():
    """Independent check of the convention: C_B equals the empirical covariance of actual
    with-replacement minibatch gradients (many draws)."""
    model, data = _tiny_problem(N=8, seed=1)
    B, draws = 2, 20000
    C_B = SGDNoiseSampler(Objective(model, "ce", data), B).covariance()
    G = _dense_per_sample(model, data)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 8, (draws, B), generator=g)
    gB = G[:, idx].mean(-1).T  # [draws, P]
    assert _rel_fro(_cov(gB), C_B) < _wishart_rel_bound(C_B, draws)


def test_hessian_shaped_increment_covariance_and_determinism():
    model, data = _tiny_problem()
    lr, B, draws = 0.1, 4, 800
    obj = Objective(model, "ce", data)
    C_B = SGDNoiseSampler(obj, B).covariance()
    params = list(model.parameters())

    def make(seed):
        return HessianShapedNoiseGD(
            params,
            lr=lr,
            batch_size=B,
            objective=obj,
            generator=torch.Generator().manual_seed(seed),
        )

    X = _increments(make(0), params, draws)
    Sigma = lr**2 * C_B
    assert _rel_fro(_cov(X), Sigma) < _wishart_rel_bound(Sigma, draws)
    a = _increments(make(7), params, 3)
    b = _increments(make(7), params, 3)
    c = _increments(make(8), params, 3)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_noisy_gd_deterministic_given_generator():
    def run(seed):
        params = _params(6)
        opt = NoisyGD(params, lr=0.1, noise_std=0.5, generator=torch.Generator().manual_seed(seed))
        for _ in range(5):
            for p in params:
                p.grad = p.detach().clone()
            opt.step()
        return flat_parameters(opt)

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_hessian_shaped_rejects_mismatched_parameters():
    model, data = _tiny_problem()
    obj = Objective(model, "ce", data)
    other = mlp(3, (4,), 2, dtype=torch.float64)
    with pytest.raises(ConfigurationError, match="same model"):
        HessianShapedNoiseGD(other.parameters(), lr=0.1, batch_size=2, objective=obj)
    with pytest.raises(ConfigurationError, match="exactly one"):
        HessianShapedNoiseGD(model.parameters(), lr=0.1, batch_size=2)
    with pytest.raises(ConfigurationError, match="batch_size"):
        SGDNoiseSampler(obj, 13)
