"""The Krylov core: one Gram–Schmidt, the Lanczos state machine, dense/auto, randomness."""

from __future__ import annotations

import pytest
import torch

from hesslab.errors import ConfigurationError, ConvergenceError
from hesslab.linalg.basis import Basis, col_norms, orthogonalize, rows_times
from hesslab.linalg.lanczos import DENSE_MAX, eigenpairs
from hesslab.linalg.quadrature import QuadratureRule, lanczos_quadrature
from hesslab.linalg.thick_restart import ThickRestartLanczos
from hesslab.operators.base import FunctionOperator, as_operator
from hesslab.rng import resolve_generator
from tests.spectra import spiked_bulk, with_spectrum


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def orthonormal(P: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(P, n, generator=gen(seed), dtype=torch.float64))[0]


@pytest.mark.parametrize("as_basis", [False, True])
def test_gram_schmidt_reorthogonalizes_a_nearly_dependent_block(as_basis):
    P, n = 500, 12
    V = orthonormal(P, n)
    c = torch.randn(n, 2, generator=gen(1), dtype=torch.float64)
    # columns inside span(V) up to 1e-9: one pass leaves ~eps/1e-9 = 1e-7 of them in span(V)
    W = V @ c + 1e-9 * torch.randn(P, 2, generator=gen(2), dtype=torch.float64)
    W0 = W.clone()
    if as_basis:
        B = Basis(P, n, dtype=torch.float64, device=torch.device("cpu"))
        B.put(0, V)
        C, out = orthogonalize(B, W, n)
    else:
        C, out = orthogonalize(V, W)
    assert out.data_ptr() == W.data_ptr()  # in place
    rel = (V.T @ out).abs().max(0).values / col_norms(out)
    assert float(rel.max()) < 1e-12
    assert torch.allclose(C, V.T @ W0, rtol=0, atol=1e-12)


def test_float32_inner_products_and_norms_accumulate_in_float64():
    # 4M same-sign terms: a float32 BLAS dot loses ~1e-5 relative here. The float32
    # partial sums of each chunk and the final rounding cost about one float32 ulp
    # (1.2e-7 measured on one AMD EPYC, under 1e-7 on another), so the bound is 1e-6:
    # 10x under the naive float32 dot, independent of the CPU's summation order
    P = 4 * 2**20 + 7
    x = torch.rand(P, 1, generator=gen(3))
    V = torch.rand(3, P, generator=gen(4))
    exact = V.double() @ x.double()
    assert float(((rows_times(V, x) - exact) / exact).abs().max()) < 1e-6
    n_exact = x.double().norm()
    assert abs(float(col_norms(x)[0] - n_exact) / float(n_exact)) < 1e-6


def _solver(A, seed=0, m=14):
    op = as_operator(A)
    P = op.shape[0]
    basis = Basis(P, m, dtype=op.dtype, device=op.device)
    start = torch.randn(P, 1, generator=gen(seed), dtype=torch.float64)
    kw = {"tol": 1e-10, "block_size": 1, "max_matvecs": 2000, "generator": gen(seed + 1)}
    return ThickRestartLanczos(op, 4, "largest", basis=basis, start=start, **kw)


def _run(solver, stop_at_restart=None):
    while not solver.done:
        if solver.full:
            solver.restart()
            if solver.num_restarts == stop_at_restart:
                return solver.state_dict()
        solver.step()
    return None


def test_state_machine_resumes_bit_identical_from_its_state_dict():
    A = with_spectrum(spiked_bulk(200, [1.5, 1.4, 1.3, 1.2]), seed=3)
    ref = _solver(A)
    _run(ref)
    want = ref.extract()
    assert want.num_restarts >= 3 and want.all_converged
    state = _run(_solver(A), stop_at_restart=2)
    resumed = _solver(A, seed=7)  # another start: the state replaces it
    resumed.load_state_dict(state)
    _run(resumed)
    got = resumed.extract()
    assert torch.equal(got.values, want.values) and torch.equal(got.vectors, want.vectors)
    assert got.num_matvecs == want.num_matvecs and got.num_restarts == want.num_restarts
    lam = torch.linalg.eigvalsh(A).flip(0)[:4]
    assert torch.allclose(got.values, lam, rtol=1e-9, atol=0)


def test_dense_and_auto_methods():
    A = with_spectrum(spiked_bulk(150, [5.0, 4.0]), seed=4)
    lam = torch.linalg.eigvalsh(A)
    dense = eigenpairs(A, 3, "smallest", method="dense")
    assert dense.method == "dense" and dense.num_matvecs == 150
    assert torch.allclose(dense.values, lam[:3], rtol=0, atol=1e-12)
    X = dense.vectors
    true_res = torch.linalg.vector_norm(A @ X - X * dense.values, dim=0)
    assert torch.allclose(dense.residual_norms, true_res, rtol=0, atol=1e-12)
    assert eigenpairs(A, 2, method="auto").method == "dense"
    P = DENSE_MAX + 1
    d = torch.linspace(-1.0, 1.0, P, dtype=torch.float64)
    d[0] = 3.0
    op = FunctionOperator(lambda V: d[:, None] * V, P, torch.float64)
    big = eigenpairs(op, 1, method="auto", generator=gen())
    assert big.method == "lanczos" and big.num_matvecs < 100
    assert abs(float(big.values[0]) - 3.0) < 1e-9
    with pytest.raises(ConfigurationError, match="method"):
        eigenpairs(A, 1, method="arpack")


def test_nonconvergence_raises_on_request_with_the_partial_result():
    A = with_spectrum(spiked_bulk(300, [1.02, 1.01, 1.0], neg=0.0), seed=5)
    kw = {"tol": 1e-12, "max_matvecs": 12}
    partial = eigenpairs(A, 2, generator=gen(), **kw)
    assert not partial.all_converged
    with pytest.raises(ConvergenceError, match="max_matvecs") as exc:
        eigenpairs(A, 2, on_nonconvergence="raise", generator=gen(), **kw)
    assert torch.equal(exc.value.result.values, partial.values)
    ok = eigenpairs(A, 1, tol=1e-6, on_nonconvergence="raise", generator=gen())
    assert ok.all_converged
    with pytest.raises(ConfigurationError, match="on_nonconvergence"):
        eigenpairs(A, 1, on_nonconvergence="warn")


def test_quadrature_rule_is_frozen_and_exact_for_low_degree_moments():
    A = with_spectrum(torch.linspace(-2.0, 3.0, 80, dtype=torch.float64), seed=6)
    v = torch.randn(80, 2, generator=gen(), dtype=torch.float64)
    rule = lanczos_quadrature(as_operator(A), v, 10)
    assert isinstance(rule, QuadratureRule) and rule.num_matvecs == 20
    with pytest.raises(AttributeError):
        rule.nodes = rule.weights  # type: ignore[misc]
    for j in range(2):
        u = v[:, j] / v[:, j].norm()
        for p in (1, 2, 5):
            exact = float(u @ torch.linalg.matrix_power(A, p) @ u)
            approx = float((rule.weights[j] * rule.nodes[j] ** p).sum())
            assert abs(approx - exact) < 1e-10 * 3.0**p


def test_float32_operator_keeps_a_float32_basis():
    A = with_spectrum(spiked_bulk(300, [6.0, 5.0]), seed=8)
    seen = []

    def fn(V):
        seen.append(V.dtype)
        return A.float() @ V

    op = FunctionOperator(fn, 300, torch.float32)
    res = eigenpairs(op, 2, tol=1e-5, generator=gen(), true_residuals=True)
    assert set(seen) == {torch.float32} and res.vectors.dtype == torch.float32
    lam = torch.linalg.eigvalsh(A).flip(0)[:2]
    # the accuracy of float32 products and a float32 basis: ~1e-7 of ||A||
    assert float((res.values - lam).abs().max()) < 2e-6 * 6.0


def test_resolve_generator_is_the_one_rule():
    g = gen(3)
    assert resolve_generator(g) is g
    a, b = resolve_generator(), resolve_generator()
    assert not torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    s1, s2 = resolve_generator(seed=5), resolve_generator(None, seed=5)
    assert torch.equal(torch.rand(4, generator=s1), torch.rand(4, generator=s2))
    with pytest.raises(ConfigurationError, match="manual_seed"):
        resolve_generator(None, required=True)
    with pytest.raises(ConfigurationError, match=r"torch\.Generator"):
        resolve_generator(5)  # type: ignore[arg-type]
