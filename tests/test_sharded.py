"""FSDP2-sharded operators with gloo on 2 local processes against the single-process ones."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from hesslab import Objective
from hesslab.distributed import shard_indices
from hesslab.operators import HessianOperator

from .gloo import gloo_results, tanh_mlp_dense, tanh_mlp_shard
from .models import make

fsdp = pytest.importorskip("torch.distributed.fsdp")
pytestmark = pytest.mark.skipif(
    not (dist.is_available() and hasattr(fsdp, "fully_shard")), reason="no FSDP2"
)

NUM_FD = 6  # finite-difference columns (4 to 6 gradient evaluations each)


def _shard(model):
    for layer in (model[0], model[2]):
        fsdp.fully_shard(layer)
    fsdp.fully_shard(model)
    return model


def _body(rank: int, world: int, out_dir: str) -> None:
    from hesslab import eigenpairs, spectral_density, trace
    from hesslab.errors import ConfigurationError
    from hesslab.sharded import ShardedHessianOperator

    model, data = tanh_mlp_shard(rank, world)  # unequal shards (12, 11) and batches
    res = {}
    try:
        ShardedHessianOperator(model, "ce", data)
    except ConfigurationError as e:
        res["unsharded_error"] = str(e)
    model = _shard(model)
    before = [p.to_local().clone() for p in model.parameters()]
    op = ShardedHessianOperator(model, "ce", data, mode="reverse-over-reverse")
    res["size"], res["full_size"], res["index"] = op.shape[0], op.full_size, op._maps[rank]
    E = torch.eye(op.full_size, dtype=torch.float64)[op._maps[rank]]
    res["exact_rows"] = op.matmat(E)  # this rank's rows of H
    V = torch.randn(op.full_size, NUM_FD, generator=torch.Generator().manual_seed(5))
    V = V.double()[op._maps[rank]]
    res["V"] = V
    res["exact_V"] = op.matmat(V)
    res["dot"] = op.dot(V, V)
    for name, rich in [("fd", False), ("rich", True)]:
        fd = ShardedHessianOperator(model, "ce", data, route="finite-difference", richardson=rich)
        res[name] = fd.matmat(V)
        res[name + "_err"] = fd.last_error
    # hesslab's own solvers, unchanged, on the sharded vectors
    eig = eigenpairs(op, 2, tol=1e-10, method="lanczos", generator=torch.Generator().manual_seed(7))
    res["eig"], res["eig_vecs"] = eig.values, eig.vectors
    res["residual"] = op.norm(op.matmat(eig.vectors) - eig.vectors * eig.values)
    res["trace"] = trace(op, 8, method="hutchinson", generator=torch.Generator().manual_seed(3))
    res["density"] = spectral_density(
        op, num_steps=12, num_probes=2, generator=torch.Generator().manual_seed(1)
    )
    res["bit_identical"] = all(
        torch.equal(a, p.to_local()) for a, p in zip(before, model.parameters(), strict=True)
    )
    res["grads"] = [p.grad for p in model.parameters()]
    cnn, x, y, _ = make("cnn")  # conv weights, FSDP2 on the root module only
    fsdp.fully_shard(cnn)
    idx = list(shard_indices(len(x), rank, world))
    op = ShardedHessianOperator(cnn, "ce", (x[idx], y[idx]), mode="reverse-over-reverse")
    res["cnn_index"] = op._maps[rank]
    res["cnn_rows"] = op.matmat(torch.eye(op.full_size, dtype=torch.float64)[op._maps[rank]])
    torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return gloo_results(_body, tmp_path_factory.mktemp("sharded"))


@pytest.fixture(scope="module")
def dense():
    return tanh_mlp_dense()


def _full(ranks, key):
    """The full ``[P, K]`` block from the ranks' shards of ``key``."""
    first = ranks[0][key]
    out = torch.zeros(ranks[0]["full_size"], *first.shape[1:], dtype=first.dtype)
    for r in ranks:
        out[r["index"]] = r[key][: len(r["index"])]
    return out


def test_vectors_are_sharded_like_the_parameters(ranks, dense):
    P = dense.shape[0]
    assert all(r["full_size"] == P for r in ranks)
    idx = torch.cat([r["index"] for r in ranks])
    assert torch.equal(idx.sort().values, torch.arange(P))  # a partition of the entries
    # Shard(0) chunks of the 4 parameters [5,4], [5], [3,5], [3]: ceil-rows on rank 0
    assert [r["size"] for r in ranks] == [3 * 4 + 3 + 2 * 5 + 2, 2 * 4 + 2 + 1 * 5 + 1]
    assert "fully_shard" in ranks[0]["unsharded_error"]


def test_exact_route_equals_single_process_hessian(ranks, dense):
    H = _full(ranks, "exact_rows")
    assert float((H - dense).abs().max()) <= 1e-10 * float(dense.abs().max())
    V = _full(ranks, "V")
    assert torch.allclose(_full(ranks, "exact_V"), dense @ V, rtol=0, atol=1e-12)
    for r in ranks:  # all-reduced inner products: the full vectors' ones on every rank
        assert torch.allclose(r["dot"], (V * V).sum(0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["fd", "rich"])
def test_finite_differences_within_their_tight_error_bound(ranks, dense, name):
    V = _full(ranks, "V")
    actual = (_full(ranks, name) - dense @ V).norm(dim=0)
    est = ranks[0][name + "_err"]
    assert torch.equal(est, ranks[1][name + "_err"])
    scale = float((dense @ V).norm(dim=0).min())
    assert float(actual.max()) <= 1e-6 * scale  # the products are accurate at all
    if name == "fd":  # per column: a bound, and within 10x of the error
        assert bool((est >= actual).all()) and bool((est <= 10 * actual).all()), (est, actual)
    else:  # Richardson: the error is near the rounding level; bound the block's error
        assert float(actual.norm()) <= float(est.norm()) <= 10 * float(actual.norm())


def test_top_eigenpairs_equal_and_parameters_restored(ranks, dense):
    ref = torch.linalg.eigvalsh(dense).flip(0)[:2]
    for r in ranks:
        assert torch.allclose(r["eig"], ref, rtol=1e-10, atol=0)
        assert float(r["residual"].max()) <= 1e-8 * float(ref[0])
        assert r["bit_identical"] and all(g is None for g in r["grads"])
    assert torch.equal(ranks[0]["eig"], ranks[1]["eig"])


def test_trace_and_density_of_the_generic_solvers(ranks, dense):
    from hesslab import eigenpairs, spectral_density, trace
    from hesslab.operators import DenseOperator

    A = DenseOperator(dense)
    eig = eigenpairs(A, 2, tol=1e-10, method="lanczos", generator=torch.Generator().manual_seed(7))
    tr = trace(A, 8, method="hutchinson", generator=torch.Generator().manual_seed(3))
    dens = spectral_density(
        A, num_steps=12, num_probes=2, generator=torch.Generator().manual_seed(1)
    )
    scale = float(dense.abs().max())
    for r in ranks:  # the same probes' quadratic forms, the same Gauss rules
        assert torch.allclose(r["eig"], eig.values, rtol=1e-10, atol=0)
        assert torch.allclose(r["trace"].samples, tr.samples, rtol=1e-10, atol=1e-12)
        assert torch.allclose(r["density"].nodes, dens.nodes, rtol=0, atol=1e-10 * scale)
        assert torch.allclose(r["density"].weights, dens.weights, rtol=0, atol=1e-10)
        assert r["density"].dimension == dense.shape[0]


def test_exact_route_on_a_root_sharded_cnn(ranks):
    model, x, y, _ = make("cnn")
    ref = HessianOperator(Objective(model, "ce", (x, y))).to_dense()
    H = torch.zeros_like(ref)
    for r in ranks:
        H[r["cnn_index"]] = r["cnn_rows"][: len(r["cnn_index"])]
    assert float((H - ref).abs().max()) <= 1e-10 * float(ref.abs().max())


def test_requires_initialised_process_group():
    from hesslab.errors import ConfigurationError
    from hesslab.sharded import ShardedHessianOperator

    model, x, y, _ = make("tanh_mlp")
    with pytest.raises(ConfigurationError, match="torchrun"):
        ShardedHessianOperator(model, "ce", (x, y))
