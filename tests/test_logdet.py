"""Log-determinants: top-r block from eigenpairs (exact) and SLQ tr log(A + delta I)."""

from __future__ import annotations

import math

import pytest
import torch

from hesslab.errors import ConfigurationError, HesslabError
from hesslab.linalg.lanczos import eigenpairs
from hesslab.linalg.logdet import logdet, logdet_slq
from tests.spectra import spiked_bulk, tiny_mlp_hessian, with_spectrum


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_top_r_logdet_exact() -> None:
    lam = spiked_bulk(300, [9.0, 7.0, 5.0, 4.0, 3.0], neg=0.2)
    A = with_spectrum(lam, seed=1)
    top = lam.sort(descending=True).values
    for r in (1, 3, 5):
        est = logdet(A, r, tol=1e-10, generator=gen())
        exact = float(torch.log(top[:r]).sum())
        assert abs(est.value - exact) <= 1e-10 * abs(exact) + 1e-12
        assert est.method == "eigenpairs" and est.rank == r and est.stderr == 0.0
        assert est.info["all_converged"]
    eig = eigenpairs(A, 5, tol=1e-10, generator=gen())
    reuse = logdet(A, 4, eigen_result=eig)
    assert reuse.num_matvecs == 0
    assert abs(reuse.value - float(torch.log(top[:4]).sum())) < 1e-9


def test_model_hessian_logdet() -> None:
    H = tiny_mlp_hessian()
    lam = torch.linalg.eigvalsh(H).flip(0)
    r = int((lam > 1e-3 * lam[0]).sum().clamp(max=6))
    est = logdet(H, r, tol=1e-10, generator=gen())
    assert abs(est.value - float(torch.log(lam[:r]).sum())) < 1e-8


def _zero_eigenvalue_matrix(P: int, seed: int, third: float = 0.0) -> torch.Tensor:
    """Spectrum ``3, 2, third, -1`` and a random negative rest, rotated by seed ``seed``."""
    rest = -0.5 - 2.0 * torch.rand(P - 4, generator=gen(seed), dtype=torch.float64)
    lam = torch.cat([torch.tensor([3.0, 2.0, third, -1.0], dtype=torch.float64), rest])
    return with_spectrum(lam, seed=seed)


def test_nonpositive_eigenvalue_raises() -> None:
    # An exact zero eigenvalue comes out of Q diag(lam) Q^T and Lanczos as +-1e-17 or so,
    # with a sign that depends on the CPU's kernels (AVX2 vs AVX-512): it must be refused
    # for every size and rotation, never turned into a finite log(1e-17).
    for P in (24, 60, 150):
        for seed in range(10):
            A = _zero_eigenvalue_matrix(P, seed)
            with pytest.raises(HesslabError, match="rank <= 2"):
                logdet(A, 3, tol=1e-10, generator=gen(seed))
    with pytest.raises(ConfigurationError):
        logdet(A, 0)
    eig = eigenpairs(A, 2, "smallest", generator=gen())
    with pytest.raises(ConfigurationError):
        logdet(A, 2, eigen_result=eig)


def test_small_positive_eigenvalue_is_kept() -> None:
    # 1e-9 is tiny but ~1e5 times the error bound (residual <= 3e-13, rounding ~5e-14):
    # the zero test must not swallow it.
    for P in (24, 150):
        for seed in range(5):
            A = _zero_eigenvalue_matrix(P, seed, third=1e-9)
            est = logdet(A, 3, tol=1e-13, generator=gen(seed))
            exact = math.log(3.0) + math.log(2.0) + math.log(1e-9)
            assert abs(est.value - exact) <= est.info["max_abs_error"] + 1e-9, (P, seed)
            assert est.info["max_abs_error"] < 1e-2
    with pytest.raises(HesslabError, match="rank <= 2"):  # a caller's wider error bound
        logdet(A, 3, tol=1e-13, generator=gen(), error_bounds=1e-8)


def test_slq_logdet_within_4_stderr() -> None:
    lam = 0.05 + spiked_bulk(400, [6.0, 4.0, 3.0], neg=0.0)
    A = with_spectrum(lam, seed=3)
    delta = 0.1
    exact = float(torch.log(lam + delta).sum())
    est = logdet_slq(A, shift=delta, num_steps=40, num_probes=30, generator=gen())
    assert est.method == "slq" and est.num_matvecs <= 40 * 30
    assert est.stderr > 0
    assert abs(est.value - exact) <= 4 * est.stderr, (est.value, exact, est.stderr)
    again = logdet_slq(A, shift=delta, num_steps=40, num_probes=30, generator=gen())
    assert again.value == est.value


def test_slq_logdet_needs_positive_definite() -> None:
    lam = torch.linspace(-1.0, 1.0, 100, dtype=torch.float64)
    A = with_spectrum(lam, seed=4)
    with pytest.raises(ConfigurationError, match="shift >"):
        logdet_slq(A, shift=0.5, num_steps=30, num_probes=2, generator=gen())
    est = logdet_slq(A, shift=1.5, num_steps=30, num_probes=1, generator=gen())
    assert est.stderr == math.inf  # one probe: unknown error, as for hesslab.trace
    # shift = -lambda_min exactly: the smallest Ritz value of A + delta I is 0 up to
    # rounding (+-1e-16 by CPU), which must be refused, not turned into log(1e-16)
    for shift in (1.0, 1.0 + 1e-15):  # the second: +1e-15 +- 4e-16 on every CPU
        with pytest.raises(ConfigurationError, match="shift >"):
            logdet_slq(A, shift=shift, num_steps=100, num_probes=2, generator=gen())
