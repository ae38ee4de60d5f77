"""Synthetic symmetric matrices with known spectra, and a tiny-MLP Hessian, for the
Krylov-method tests (test_lanczos, test_power, test_density, test_logdet), and an
operator that stops after a given number of products, for the resume tests."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from hesslab.operators import DenseOperator, LinearOperator


class Interrupted(Exception):
    """The interruption :class:`StoppingOperator` raises (from inside a product)."""


class StoppingOperator(LinearOperator):
    """A dense operator that counts its product calls and raises at call ``fail_at``."""

    def __init__(self, A: Tensor, fail_at: int | None = None) -> None:
        super().__init__(A.shape[0], A.dtype, A.device)
        self.inner = DenseOperator(A)
        self.fail_at = fail_at
        self.calls = 0

    def _matmat(self, V: Tensor) -> Tensor:
        if self.fail_at is not None and self.calls == self.fail_at:
            raise Interrupted
        self.calls += 1
        return self.inner.matmat(V)


def spiked_matrix(P: int = 60, seed: int = 0) -> Tensor:
    """A dense float64 ``[P, P]`` matrix with eigenvalues 40, 25, 12, -6 and a bulk in [0, 1)."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([40.0, 25.0, 12.0, -6.0]), torch.rand(P - 4, generator=g)])
    return (Q * lam) @ Q.T


def with_spectrum(eigenvalues: Tensor, seed: int = 0) -> Tensor:
    """``Q diag(eigenvalues) Q^T`` with a random orthogonal ``Q`` (float64)."""
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    P = lam.numel()
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    A = (Q * lam) @ Q.T
    return 0.5 * (A + A.T)


def spiked_bulk(P: int, outliers: list[float], seed: int = 0, neg: float = 0.05) -> Tensor:
    """Model-like spectrum: a bulk in ``[-neg, 1]`` concentrated near 0, plus outliers."""
    g = torch.Generator().manual_seed(seed + 1000)
    u = torch.rand(P, generator=g, dtype=torch.float64)
    bulk = u**4 - neg * torch.rand(P, generator=g, dtype=torch.float64) ** 2
    bulk[: len(outliers)] = torch.tensor(outliers, dtype=torch.float64)
    return bulk


def cases() -> dict[str, Tensor]:
    """Named spectra (eigenvalue vectors) crossing the hard cases."""
    P = 200
    spectra = {
        "spiked": spiked_bulk(P, [50.0, 30.0, 20.0, 12.0, 9.0, 7.0, 5.0]),
        "clustered": torch.cat(
            [
                torch.tensor([10.0, 10.0 + 1e-3, 10.0 + 2e-3, 9.99, 5.0]),
                torch.linspace(-1, 1, P - 5, dtype=torch.float64),
            ]
        ),
        "negative": -spiked_bulk(P, [40.0, 25.0, 10.0, 8.0, 6.0, 4.0, 3.0], seed=3),
        "tiny_gap": torch.cat(
            [
                torch.tensor([1.0, 1.0 - 1e-6, 0.9, 0.8, 0.7]),
                torch.rand(P - 5, generator=torch.Generator().manual_seed(5)).double() * 0.5,
            ]
        ),
        "indefinite": torch.linspace(-3.0, 2.0, P, dtype=torch.float64) ** 3,
    }
    return spectra


@functools.lru_cache(maxsize=4)
def tiny_mlp_hessian(seed: int = 0, hidden: int = 8) -> Tensor:
    """Dense float64 Hessian of the mean cross-entropy of a 5-h-h-3 tanh MLP (torch.func)."""
    from torch.func import functional_call, hessian

    g = torch.Generator().manual_seed(seed)
    X = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(hidden, 3),
    ).double()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(t: Tensor) -> Tensor:
        params, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            params[n] = t[i : i + s.numel()].view(s)
            i += s.numel()
        out = functional_call(model, params, (X,))
        return torch.nn.functional.cross_entropy(out, y)

    H = hessian(loss)(theta)
    return (0.5 * (H + H.T)).detach()
