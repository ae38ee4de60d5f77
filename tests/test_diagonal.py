"""Diagonal estimators (Hutchinson/BKS, XDiag, exact) against dense float64 truth."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from hesslab.errors import ConfigurationError
from hesslab.linalg.diagonal import diagonal
from hesslab.linalg.results import DiagonalEstimate
from hesslab.operators.base import DenseOperator, FunctionOperator

P = 150
SEEDS = 200


@functools.cache
def spiked() -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    lam = torch.cat(
        [
            torch.linspace(60.0, 6.0, 8, dtype=torch.float64),
            0.4 * torch.randn(P - 8, generator=g, dtype=torch.float64),
        ]
    )
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    A = (Q * lam) @ Q.T
    return 0.5 * (A + A.T)


@functools.cache
def runs(method: str, distribution: str = "rademacher"):
    A = DenseOperator(spiked())
    vals, ses = [], []
    for seed in range(SEEDS):
        est = diagonal(
            A, 64, method=method, distribution=distribution,
            generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        assert est.num_matvecs == 64
        vals.append(est.values)
        ses.append(est.stderr)
    return torch.stack(vals), torch.stack(ses)


@pytest.mark.parametrize("method", ["hutchinson", "xdiag"])
def test_unbiased_and_stderr_calibrated(method):
    V, S = runs(method)
    err = V - torch.diagonal(spiked())
    emp = err.std(0)
    z = err.mean(0) / (emp / math.sqrt(SEEDS))
    # 150 entries: each within 4 standard errors of the mean (max of 150 normals ~ 3)
    assert float(z.abs().max()) < 4.5
    assert float(z.abs().mean()) < 1.0  # E|N(0,1)| = 0.8
    ratio = S.pow(2).mean(0).sqrt() / emp
    assert 0.7 <= float(ratio.median()) <= 1.3


def test_gaussian_ratio_estimator_close_to_unbiased():
    V, S = runs("hutchinson", "gaussian")
    err = V - torch.diagonal(spiked())
    z = err.mean(0) / (err.std(0) / math.sqrt(SEEDS))
    assert float(z.abs().mean()) < 1.2


def test_xdiag_beats_hutchinson_on_spiked():
    d = torch.diagonal(spiked())
    e_h = (runs("hutchinson")[0] - d).pow(2).mean()
    e_x = (runs("xdiag")[0] - d).pow(2).mean()
    assert float(e_x) < 0.1 * float(e_h)


def test_exact_modes():
    A = spiked()
    est = diagonal(A, method="exact")
    assert isinstance(est, DiagonalEstimate)
    assert torch.equal(est.values, torch.diagonal(A)) and est.num_matvecs == 0
    fop = FunctionOperator(lambda V: A @ V, P)
    est = diagonal(fop, method="exact", block_size=40)
    assert torch.allclose(est.values, torch.diagonal(A), rtol=0, atol=1e-12)
    assert est.num_matvecs == P and float(est.stderr.abs().max()) == 0.0


def test_low_rank_xdiag_exact_and_seed_determinism():
    g = torch.Generator().manual_seed(0)
    L = torch.randn(P, 4, generator=g, dtype=torch.float64)
    A = L @ L.T
    est = diagonal(A, 30, method="xdiag", generator=g)
    assert torch.allclose(est.values, torch.diagonal(A), atol=1e-10)
    for method in ("hutchinson", "xdiag"):
        a = diagonal(spiked(), 40, method=method, generator=torch.Generator().manual_seed(3))
        b = diagonal(spiked(), 40, method=method, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a.values, b.values) and torch.equal(a.stderr, b.stderr)


def test_float32_operator():
    A = spiked()
    est = diagonal(A.float(), 64, method="xdiag", generator=torch.Generator().manual_seed(0))
    assert est.values.dtype == torch.float64
    assert float((est.values - torch.diagonal(A)).abs().max()) < 0.5


@pytest.mark.parametrize(
    "kwargs", [{"method": "xtrace"}, {"num_matvecs": 0}, {"method": "xdiag", "num_matvecs": 3}]
)
def test_bad_input(kwargs):
    kwargs = {"num_matvecs": 16, **kwargs}
    with pytest.raises(ConfigurationError):
        diagonal(spiked(), **kwargs)
