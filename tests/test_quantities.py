"""The measurement vocabulary (hesslab.quantities): every quantity against dense truth,
and the names analyze and the monitor use are the table's."""

from __future__ import annotations

import math

import pytest
import torch

from hesslab import analysis, count_outliers
from hesslab.errors import ConfigurationError
from hesslab.operators.base import as_operator
from hesslab.quantities import QUANTITIES, Settings, measure
from hesslab.train import monitor

P = 40


def _matrix(seed: int = 0) -> torch.Tensor:
    """Symmetric ``[P, P]`` with three outliers above a bulk, one negative eigenvalue."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    lam = torch.linspace(0.1, 1.0, P, dtype=torch.float64)
    lam[-3:] = torch.tensor([20.0, 35.0, 50.0], dtype=torch.float64)
    lam[0] = -0.5
    return (Q * lam) @ Q.T


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def case():
    A = _matrix()
    return as_operator(A), A, torch.linalg.eigvalsh(A)


@pytest.mark.parametrize("name, k", [("lambda_max", 1), ("top_k", 4), ("bottom", 2)])
def test_eigen_quantities_match_eigvalsh(case, name, k):
    op, A, w = case
    res = measure(name, op, Settings(k=k, tol=1e-10), _gen())
    want = w[:k] if name == "bottom" else w.flip(0)[:k]
    assert res.values.shape == want.shape
    assert torch.allclose(res.values, want, rtol=0, atol=1e-8 * float(w.abs().max()))
    V = res.vectors.to(torch.float64)
    assert float((A @ V - V * res.values).norm()) <= 1e-7 * float(w.abs().max())
    assert res.num_matvecs > 0 and res.seconds >= 0.0


def test_auto_method_is_dense_for_small_P_with_the_lanczos_numbers(case):
    op, _, w = case
    auto = measure("top_k", op, Settings(k=3, tol=1e-10, method="auto"), _gen())
    lanczos = measure("top_k", op, Settings(k=3, tol=1e-10), _gen())
    assert auto.method == "dense" and lanczos.method == "lanczos"
    assert auto.num_matvecs == P
    assert torch.allclose(auto.values, lanczos.values, rtol=1e-9, atol=0)
    assert torch.allclose(auto.values, w.flip(0)[:3], rtol=1e-12, atol=0)


def test_spectrum_is_every_eigenvalue_with_an_error_bound(case):
    op, _, w = case
    res = measure("spectrum", op)
    assert res.method == "dense" and res.vectors is None and res.num_matvecs == P
    assert torch.allclose(res.values, w, rtol=0, atol=1e-12 * float(w.abs().max()))
    # the bound covers the eigvalsh rounding, and is not vacuous
    assert float((res.values - w).abs().max()) <= float(res.residual_norms.max())
    assert float(res.residual_norms.max()) < 1e-10 * float(w.abs().max())


@pytest.mark.parametrize("method", ["krylov", "hutchinson", "exact"])
def test_traces_match_the_dense_traces(case, method):
    op, A, _ = case
    s = Settings(num_matvecs=30, trace_method=method)
    for name, truth in (("trace", float(A.trace())), ("trace_sq", float(A.square().sum()))):
        ests = [measure(name, op, s, _gen(seed)) for seed in range(8)]
        mean = sum(e.value for e in ests) / len(ests)
        se = math.sqrt(sum(e.stderr**2 for e in ests)) / len(ests)
        assert abs(mean - truth) <= 4 * se + 1e-9 * abs(truth), (name, mean, truth, se)
        assert all(e.num_matvecs <= max(30, P) for e in ests)
        if method == "exact":
            assert ests[0].stderr == 0.0 and abs(ests[0].value - truth) <= 1e-10 * abs(truth)


def test_density_with_P_steps_has_the_eigenvalues_as_nodes(case):
    op, _, w = case
    dens = measure("density", op, Settings(num_steps=P, num_probes=1), _gen())
    nodes, weights = dens.nodes_and_weights()
    nodes = torch.as_tensor(nodes, dtype=torch.float64).sort().values
    assert nodes.numel() == P
    assert torch.allclose(nodes, w, rtol=0, atol=1e-6 * float(w.abs().max()))
    assert abs(float(torch.as_tensor(weights).sum()) - 1.0) <= 1e-10


def test_ws_bounds_contain_the_extreme_eigenvalues(case):
    op, A, w = case
    s = Settings(num_matvecs=P, trace_method="exact")
    tr, tr2 = measure("trace", op, s), measure("trace_sq", op, s)
    given = measure("ws_bounds", op, s.replace(given={"trace": tr, "trace_sq": tr2}))
    fresh = measure("ws_bounds", op, Settings(num_matvecs=3 * P), _gen())
    for b in (given, fresh):
        assert b.lambda_max_lower <= float(w[-1]) * (1 + 1e-9) <= b.lambda_max_upper * (1 + 1e-9)
        assert b.lambda_min_lower <= float(w[0]) + 1e-9 <= b.lambda_min_upper + 2e-9
    # the given traces are the exact ones: the lower bound on lambda_max is the dense one
    mean = float(A.trace()) / P
    spread = math.sqrt(float(A.square().sum()) / P - mean**2)
    assert given.lambda_max_lower == pytest.approx(mean + spread / math.sqrt(P - 1), rel=1e-9)


def test_logdet_of_the_top_k(case):
    op, _, w = case
    top = measure("top_k", op, Settings(k=3, tol=1e-10), _gen())
    ld = measure("logdet", op, Settings(k=3, given={"top_k": top}))
    assert ld.value == pytest.approx(float(torch.log(w.flip(0)[:3]).sum()), rel=1e-10)
    alone = measure("logdet", op, Settings(k=3, tol=1e-10), _gen())
    assert alone.value == pytest.approx(ld.value, rel=1e-9)
    with pytest.raises(ConfigurationError, match="not positive"):
        measure("logdet", as_operator(-_matrix()), Settings(k=2, tol=1e-10), _gen())


def test_outliers_are_count_outliers_of_the_spectrum_or_the_top_k(case):
    op, _, w = case
    exact = measure("outliers", op, Settings(given={"spectrum": measure("spectrum", op)}))
    assert exact.count == count_outliers(w).count == 3
    top = measure("top_k", op, Settings(k=8, tol=1e-10), _gen())
    from_top = measure("outliers", op, Settings(given={"top_k": top}))
    want = count_outliers(top.values, errors=top.residual_norms, dimension=P)
    assert (
        (from_top.count, from_top.threshold) == (want.count, want.threshold) == (3, want.threshold)
    )
    assert measure("outliers", op, Settings(k=8, tol=1e-10), _gen()).count == want.count
    dens = measure("density", op, Settings(num_steps=30, num_probes=2), _gen())
    from_density = measure("outliers", op, Settings(given={"density": dens}))
    assert from_density.count == count_outliers(dens).count == 3


def test_unknown_quantity_is_refused(case):
    with pytest.raises(ConfigurationError, match="unknown quantity 'lambda_mx'"):
        measure("lambda_mx", case[0])


def test_analyze_and_the_monitor_name_quantities_of_the_table():
    assert set(analysis.PART_QUANTITIES) == set(analysis.PARTS)
    for part, names in analysis.PART_QUANTITIES.items():
        assert set(names) <= set(QUANTITIES), part
    assert monitor.QUANTITIES == tuple(monitor.USES)
    for q, names in monitor.USES.items():
        assert names and set(names) <= set(QUANTITIES), q
    # every operator quantity the monitor reports under its own name is a table entry
    assert {"lambda_max", "top_k", "bottom", "trace", "trace_sq", "ws_bounds", "logdet"} <= (
        set(QUANTITIES) & set(monitor.QUANTITIES)
    )
