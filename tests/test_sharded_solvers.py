"""hesslab's own solvers, unchanged, on FSDP2-sharded vectors (2 gloo processes) against
the same solvers on the single-process operator of the unsharded model."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from hesslab.operators import DenseOperator

from .gloo import gloo_results, tanh_mlp_dense, tanh_mlp_shard

fsdp = pytest.importorskip("torch.distributed.fsdp")
pytestmark = [
    pytest.mark.skipif(
        not (dist.is_available() and hasattr(fsdp, "fully_shard")), reason="no FSDP2"
    ),
    pytest.mark.slow,  # ~40 s (finite-difference eigenpairs); test_sharded.py is the fast one
]

EIG = {"k": 3, "tol": 1e-10, "method": "lanczos", "max_basis": 12}
TRACE = {
    "trace": {"num_matvecs": 24},
    "trace_gaussian": {"num_matvecs": 24, "distribution": "gaussian", "krylov_block": 2},
    "trace_hutchinson": {"num_matvecs": 10, "method": "hutchinson"},
    "trace_hutchpp": {"num_matvecs": 12, "method": "hutch++", "distribution": "sphere"},
    "trace_adaptive": {"num_matvecs": 8, "method": "hutchinson", "rtol": 1e-3, "block_size": 4},
    "trace_exact": {"num_matvecs": 1, "method": "exact"},
    "frobenius": {"num_matvecs": 24},
}
DENSITY = {
    "density": {"num_steps": 12, "num_probes": 3},
    "density_deflated": {"num_steps": 10, "num_probes": 2, "deflate": 2},
    "density_gaussian": {"num_steps": 43, "num_probes": 1, "distribution": "gaussian"},
}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _shard(model):
    for layer in (model[0], model[2]):
        fsdp.fully_shard(layer)
    fsdp.fully_shard(model)
    return model


class _Stop(Exception):
    pass


def _interrupted_then_resumed(op, path: str) -> tuple:
    """eigenpairs stopped after 20 products, then resumed from this rank's own file."""
    from hesslab import eigenpairs

    def stop(info):
        if info["num_matvecs"] >= 20:
            raise _Stop

    try:
        eigenpairs(op, **EIG, generator=_gen(9), checkpoint=path, callback=stop)
    except _Stop:
        pass
    saved = os.path.exists(path)
    return saved, eigenpairs(op, **EIG, generator=_gen(9), checkpoint=path)


def _spy_bases(monkeypatch_targets, shapes):
    """Record the storage shape of every Krylov basis the solvers allocate."""
    from hesslab.linalg.basis import Basis

    class Spy(Basis):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            shapes.append((tuple(self.Vt.shape), self.Vt.numel() * self.Vt.element_size()))

    for module in monkeypatch_targets:
        module.Basis = Spy


def _body(rank: int, world: int, out_dir: str) -> None:
    from hesslab import eigenpairs, frobenius_sq, spectral_density, trace
    from hesslab.linalg import lanczos, quadrature
    from hesslab.sharded import ShardedHessianOperator

    model, data = tanh_mlp_shard(rank, world)
    model = _shard(model)
    before = [p.to_local().clone() for p in model.parameters()]
    op = ShardedHessianOperator(model, "ce", data, mode="reverse-over-reverse")
    res = {"index": op._maps[rank], "full_size": op.full_size, "size": op.shape[0]}
    res["basis_shapes"] = shapes = []
    _spy_bases([lanczos, quadrature], shapes)
    res["eig"] = eigenpairs(op, **EIG, generator=_gen(7), true_residuals=True)
    res["resume_ref"] = eigenpairs(
        op, **EIG, generator=_gen(9), checkpoint=os.path.join(out_dir, f"ref{rank}.ckpt")
    )
    res["saved"], res["resumed"] = _interrupted_then_resumed(
        op, os.path.join(out_dir, f"eig{rank}.ckpt")
    )
    fd = ShardedHessianOperator(model, "ce", data, route="finite-difference")
    res["fd_eig"] = eigenpairs(fd, **EIG, generator=_gen(7))
    fd.matmat(res["fd_eig"].vectors)
    res["fd_eig_err"] = fd.last_error
    res["fd_trace"] = trace(fd, 10, method="hutchinson", generator=_gen(3))
    res["fd_trace_err"] = fd.last_error
    res["eig_block"] = eigenpairs(op, **EIG, block_size=2, generator=_gen(8))
    for name, options in TRACE.items():
        fn = frobenius_sq if name.startswith("frob") else trace
        res[name] = fn(op, **options, generator=_gen(3))
    for name, options in DENSITY.items():
        res[name] = spectral_density(op, **options, generator=_gen(1))
    res["bit_identical"] = all(
        torch.equal(a, p.to_local()) for a, p in zip(before, model.parameters(), strict=True)
    )
    torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return gloo_results(_body, tmp_path_factory.mktemp("sharded_solvers"))


@pytest.fixture(scope="module")
def dense():
    return tanh_mlp_dense()


def _full(ranks, get):
    """The full ``[P, ...]`` block from the ranks' shards ``get(rank_result)``."""
    first = get(ranks[0])
    out = torch.zeros(ranks[0]["full_size"], *first.shape[1:], dtype=first.dtype)
    for r in ranks:
        out[r["index"]] = get(r)[: len(r["index"])]
    return out


def _sign_aligned(X, Y):
    return X * torch.sign((X * Y).sum(0))


@pytest.mark.parametrize("key,options", [("eig", {}), ("eig_block", {"block_size": 2})])
def test_eigenpairs_equal_the_single_process_run(ranks, dense, key, options):
    from hesslab import eigenpairs

    seed = 7 if key == "eig" else 8
    extra = {"true_residuals": True} if key == "eig" else {}
    ref = eigenpairs(DenseOperator(dense), **EIG, **options, **extra, generator=_gen(seed))
    scale = float(ref.values.abs().max())
    for r in ranks:
        res = r[key]
        assert torch.allclose(res.values, ref.values, rtol=0, atol=1e-10 * scale)
        assert res.num_matvecs == ref.num_matvecs and res.num_restarts == ref.num_restarts
        assert bool(res.converged.all())
    assert torch.equal(ranks[0][key].values, ranks[1][key].values)
    X = _full(ranks, lambda r: r[key].vectors)
    assert torch.allclose(_sign_aligned(X, ref.vectors), ref.vectors, rtol=0, atol=1e-8)
    resid = (dense @ X - X * ref.values).norm(dim=0)
    assert float(resid.max()) <= 1e-8 * scale
    assert all(r["bit_identical"] for r in ranks)


@pytest.mark.parametrize("name", sorted(DENSITY))
def test_spectral_density_equals_the_single_process_run(ranks, dense, name):
    from hesslab import spectral_density

    ref = spectral_density(DenseOperator(dense), **DENSITY[name], generator=_gen(1))
    scale = float(dense.abs().max())
    for r in ranks:
        res = r[name]
        assert res.dimension == ref.dimension == dense.shape[0]
        assert torch.equal(res.steps, ref.steps) and res.num_matvecs == ref.num_matvecs
        assert torch.allclose(res.nodes, ref.nodes, rtol=0, atol=1e-10 * scale)
        assert torch.allclose(res.weights, ref.weights, rtol=0, atol=1e-10)
        assert torch.allclose(res.outliers, ref.outliers, rtol=0, atol=1e-10 * scale)
        assert torch.equal(res.locked, ref.locked)


@pytest.mark.parametrize("name", sorted(TRACE))
def test_trace_equals_the_single_process_run(ranks, dense, name):
    from hesslab import frobenius_sq, trace

    fn = frobenius_sq if name.startswith("frob") else trace
    ref = fn(DenseOperator(dense), **TRACE[name], generator=_gen(3))
    exact = float(dense.trace()) if fn is trace else float(dense.square().sum())
    for r in ranks:
        res = r[name]
        assert abs(res.value - ref.value) <= 1e-10 * abs(exact)
        assert res.num_matvecs == ref.num_matvecs
        assert abs(res.stderr - ref.stderr) <= 1e-8 * max(ref.stderr, 1e-300) + 1e-12 * exact
        if ref.samples is not None:
            assert torch.allclose(res.samples, ref.samples, rtol=1e-10, atol=1e-12 * exact)
        assert res.info.get("krylov_dim") == ref.info.get("krylov_dim")
    if name == "trace_exact":
        assert abs(ranks[0][name].value - exact) <= 1e-10 * abs(exact)


def test_krylov_bases_hold_this_ranks_rows_only(ranks, dense):
    P = dense.shape[0]
    assert sum(r["size"] for r in ranks) == P  # the shards partition the P entries
    for r in ranks:
        assert r["size"] <= P // 2 + 8  # Shard(0) row chunks: about P / 2 (25 and 18 here)
        shapes = r["basis_shapes"]
        assert len(shapes) >= 2  # eigenpairs and the densities' bases
        for (m, p), nbytes in shapes:
            assert p == r["size"] and nbytes == m * r["size"] * 8


def test_resume_on_the_sharded_operator_is_bit_identical(ranks):
    for r in ranks:
        assert r["saved"]  # the interruption came after a checkpoint
        assert torch.equal(r["resumed"].values, r["resume_ref"].values)
        assert torch.equal(r["resumed"].vectors, r["resume_ref"].vectors)
        assert r["resumed"].num_matvecs == r["resume_ref"].num_matvecs


def test_finite_difference_route_within_its_reported_error(ranks, dense):
    from hesslab import eigenpairs, trace

    ref = eigenpairs(DenseOperator(dense), **EIG, generator=_gen(7))
    P = dense.shape[0]
    for r in ranks:
        err = float(r["fd_eig_err"].max())  # bound on ||(H_fd - H) x|| of a Ritz vector
        assert 0 < err <= 1e-6 * float(ref.values[0])
        assert float((r["fd_eig"].values - ref.values).abs().max()) <= 10 * err
    tref = trace(DenseOperator(dense), 10, method="hutchinson", generator=_gen(3))
    for r in ranks:  # |v^T (H_fd - H) v| <= ||v|| ||(H_fd - H) v||, ||v|| = sqrt(P)
        actual = (r["fd_trace"].samples - tref.samples).abs()
        assert bool((actual <= P**0.5 * r["fd_trace_err"]).all()), (actual, r["fd_trace_err"])
