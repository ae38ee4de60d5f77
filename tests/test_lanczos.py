"""eigenpairs (thick-restart Lanczos, block Lanczos) against dense float64 eigh."""

from __future__ import annotations

import pytest
import torch

from hesslab.errors import ConfigurationError
from hesslab.linalg.lanczos import auto_block_size, eigenpairs
from hesslab.operators.base import DenseOperator, FunctionOperator
from tests.spectra import cases, spiked_bulk, tiny_mlp_hessian, with_spectrum

SPECTRA = cases()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def expected(lam: torch.Tensor, k: int, which: str) -> torch.Tensor:
    if which == "largest":
        return lam.sort(descending=True).values[:k]
    if which == "smallest":
        return lam.sort().values[:k]
    return lam[lam.abs().argsort(descending=True)][:k]


def check(A: torch.Tensor, res, lam_true: torch.Tensor, rtol: float = 1e-8) -> None:
    assert res.all_converged, res.residual_norms
    scale = lam_true.abs().max().clamp_min(1e-300)
    err = (res.values - lam_true).abs() / torch.maximum(lam_true.abs(), 1e-3 * scale)
    assert float(err.max()) <= rtol, (res.values, lam_true)
    X = res.vectors.to(torch.float64)
    true_res = torch.linalg.vector_norm(A @ X - X * res.values, dim=0)
    assert float(true_res.max()) <= 10 * res.tol * res.norm_estimate + 1e-12 * float(scale)
    assert torch.allclose(X.T @ X, torch.eye(X.shape[1], dtype=torch.float64), atol=1e-8)


@pytest.mark.parametrize("name", sorted(SPECTRA))
@pytest.mark.parametrize("which", ["largest", "smallest", "magnitude"])
def test_synthetic_spectra(name: str, which: str) -> None:
    lam = SPECTRA[name]
    A = with_spectrum(lam, seed=1)
    k = 4
    res = eigenpairs(A, k, which, tol=1e-10, generator=gen(), max_matvecs=3000)
    check(A, res, expected(lam, k, which))
    assert res.num_matvecs <= 3000
    assert res.method == "lanczos"


@pytest.mark.parametrize("P", list(range(1, 11)))
def test_small_dimensions_exact(P: int) -> None:
    lam = torch.linspace(-1.0, 2.0, P, dtype=torch.float64) if P > 1 else torch.tensor([3.0])
    A = with_spectrum(lam.double(), seed=P)
    for k in range(1, P + 1):
        for which in ("largest", "smallest"):
            for b in (1, 2, 3):
                res = eigenpairs(A, k, which, tol=1e-10, generator=gen(k), block_size=b)
                check(A, res, expected(lam, k, which))
                assert res.num_matvecs <= P + b


def test_repeated_eigenvalues_small_P_single_vector() -> None:
    # invariant subspaces: a random restart vector finds the second copy
    lam = torch.tensor([5.0, 5.0, 5.0, 2.0, 1.0, 1.0, 0.5, 0.0], dtype=torch.float64)
    A = with_spectrum(lam, seed=2)
    res = eigenpairs(A, 4, tol=1e-10, generator=gen())
    check(A, res, expected(lam, 4, "largest"))


@pytest.mark.parametrize("b", [3, 4])
def test_repeated_eigenvalues_block(b: int) -> None:
    lam = torch.cat(
        [torch.tensor([10.0, 10.0, 10.0, 7.0, 7.0]), torch.linspace(-1, 1, 395).double()]
    )
    A = with_spectrum(lam, seed=4)
    res = eigenpairs(A, 5, tol=1e-10, block_size=b, generator=gen())
    check(A, res, expected(lam, 5, "largest"))
    assert res.method == "block-lanczos"


def test_restarts_with_small_basis() -> None:
    lam = torch.linspace(0.0, 1.0, 500, dtype=torch.float64) ** 2
    A = with_spectrum(lam, seed=5)
    res = eigenpairs(A, 6, tol=1e-10, max_basis=16, generator=gen(), max_matvecs=5000)
    check(A, res, expected(lam, 6, "largest"))
    assert res.num_restarts > 0


@pytest.mark.parametrize("b", [2, 5])
def test_block_agrees_with_single(b: int) -> None:
    lam = SPECTRA["spiked"]
    A = with_spectrum(lam, seed=6)
    single = eigenpairs(A, 5, tol=1e-10, generator=gen())
    block = eigenpairs(A, 5, tol=1e-10, block_size=b, generator=gen())
    check(A, block, expected(lam, 5, "largest"))
    assert torch.allclose(single.values, block.values, rtol=1e-9)


def test_auto_block_size_rule() -> None:
    assert auto_block_size(1, 1000) == 1
    assert auto_block_size(20, 1000) == 1
    assert auto_block_size(3, 1000, "cuda") == 1
    assert auto_block_size(4, 1000, "cuda") == 4
    assert auto_block_size(20, 3, "cuda") == 3
    A = with_spectrum(SPECTRA["spiked"], seed=7)
    res = eigenpairs(A, 10, tol=1e-6, block_size="auto", generator=gen())
    assert res.info["block_size"] == 1


def test_model_hessian() -> None:
    H = tiny_mlp_hessian()
    lam = torch.linalg.eigvalsh(H)
    for which in ("largest", "smallest", "magnitude"):
        res = eigenpairs(H, 3, which, tol=1e-10, generator=gen())
        check(H, res, expected(lam, 3, which))


def test_float32_operator_accumulates_in_float64() -> None:
    lam = SPECTRA["spiked"]
    A = with_spectrum(lam, seed=8)
    op = DenseOperator(A.float())
    res = eigenpairs(op, 3, tol=1e-5, generator=gen(), true_residuals=True)
    assert res.values.dtype == torch.float64
    assert res.vectors.dtype == torch.float32
    assert res.all_converged
    rel = (res.values - expected(lam, 3, "largest")).abs() / lam.abs().max()
    assert float(rel.max()) < 1e-6
    assert res.info["residual_kind"] == "true"
    ritz_only = eigenpairs(op, 3, tol=1e-5, generator=gen())
    assert res.num_matvecs == ritz_only.num_matvecs + 3  # the true residuals are counted
    assert torch.equal(res.values, ritz_only.values)


def test_same_seed_bit_identical() -> None:
    A = with_spectrum(SPECTRA["clustered"], seed=9)
    r1 = eigenpairs(A, 3, tol=1e-8, generator=gen(3))
    r2 = eigenpairs(A, 3, tol=1e-8, generator=gen(3))
    assert torch.equal(r1.values, r2.values)
    assert torch.equal(r1.vectors, r2.vectors)
    assert r1.num_matvecs == r2.num_matvecs


def test_warm_start_needs_fewer_matvecs() -> None:
    # outliers close to the bulk: a cold start needs many products
    lam = spiked_bulk(400, [1.5, 1.4, 1.3, 1.2, 1.1])
    A = with_spectrum(lam, seed=10)
    prev = eigenpairs(A, 5, tol=1e-6, generator=gen())
    # a slightly moved operator, as between two nearby training steps
    E = with_spectrum(torch.randn(400, generator=gen(1), dtype=torch.float64), seed=11)
    A2 = A + 1e-5 * E
    for k in (1, 5):
        cold = eigenpairs(A2, k, tol=1e-6, generator=gen(2))
        warm = eigenpairs(A2, k, tol=1e-6, generator=gen(2), v0=prev.vectors[:, :k])
        assert warm.all_converged
        assert torch.allclose(warm.values, cold.values, rtol=1e-9)
        assert warm.num_matvecs <= 0.5 * cold.num_matvecs, (k, warm.num_matvecs, cold.num_matvecs)
    blk = eigenpairs(A2, 5, tol=1e-6, generator=gen(2), v0=prev.vectors, block_size=5)
    blk_cold = eigenpairs(A2, 5, tol=1e-6, generator=gen(2), block_size=5)
    assert blk.all_converged
    assert blk.num_matvecs <= 0.7 * blk_cold.num_matvecs, (blk.num_matvecs, blk_cold.num_matvecs)


def test_counts_every_column_and_respects_budget() -> None:
    A = with_spectrum(SPECTRA["spiked"], seed=12)
    calls = []

    def fn(V: torch.Tensor) -> torch.Tensor:
        calls.append(V.shape[1])
        return A @ V

    op = FunctionOperator(fn, A.shape[0], torch.float64)
    res = eigenpairs(op, 3, tol=1e-10, block_size=2, generator=gen())
    assert res.num_matvecs == sum(calls)
    short = eigenpairs(op, 3, tol=1e-14, max_matvecs=11, generator=gen())
    assert short.num_matvecs <= 11
    assert not short.all_converged


def test_callback_and_basis_device() -> None:
    A = with_spectrum(SPECTRA["spiked"], seed=13)
    seen = []
    res = eigenpairs(A, 2, tol=1e-8, generator=gen(), basis_device="cpu", callback=seen.append)
    assert seen and seen[-1]["num_matvecs"] == res.num_matvecs
    assert set(seen[0]) >= {"num_matvecs", "ritz_values", "residual_norms", "converged"}


def test_invariant_subspace_large_P() -> None:
    # rank-3 operator: the Krylov space closes after 3-4 steps
    U, _ = torch.linalg.qr(torch.randn(200, 3, generator=gen(), dtype=torch.float64))
    A = (U * torch.tensor([3.0, -2.0, 1.0], dtype=torch.float64)) @ U.T
    res = eigenpairs(A, 4, "magnitude", tol=1e-10, generator=gen())
    assert res.all_converged
    assert torch.allclose(res.values[:3], torch.tensor([3.0, -2.0, 1.0]).double(), atol=1e-12)
    assert abs(float(res.values[3])) < 1e-12


def test_zero_operator() -> None:
    res = eigenpairs(torch.zeros(50, 50, dtype=torch.float64), 2, generator=gen())
    assert res.all_converged
    assert float(res.values.abs().max()) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [{"k": 0}, {"k": 11}, {"which": "LA"}, {"tol": -1.0}, {"block_size": 0}, {"max_matvecs": 0}],
)
def test_bad_input(kwargs: dict) -> None:
    A = torch.eye(10, dtype=torch.float64)
    args = {"k": 1, **kwargs}
    with pytest.raises(ConfigurationError):
        eigenpairs(A, **args)
    with pytest.raises(ConfigurationError):
        eigenpairs(torch.eye(100, dtype=torch.float64), 5, max_basis=6)
    with pytest.raises(ConfigurationError):
        eigenpairs(A, 1, v0=torch.ones(9))
