"""HSDP (2-D mesh: data-parallel replicas x shards) on 2 gloo processes against one process.

With 2 processes the two 2-D meshes are ``(2, 1)`` (two replicas holding whole vectors, the
data split between them) and ``(1, 2)`` (one replica sharded over both ranks).
"""

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
    pytest.mark.slow,  # ~25 s
]
MESHES = {"replicas": (2, 1), "shards": (1, 2)}
EIG = {"k": 2, "tol": 1e-10, "method": "lanczos"}


def _body(rank: int, world: int, out_dir: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    from hesslab import eigenpairs
    from hesslab.sharded import ShardedHessianOperator

    res = {}
    for name, shape in MESHES.items():
        model, data = tanh_mlp_shard(rank, world)  # every rank its own data shard
        mesh = init_device_mesh("cpu", shape, mesh_dim_names=("replicate", "shard"))
        for layer in (model[0], model[2]):
            fsdp.fully_shard(layer, mesh=mesh)
        fsdp.fully_shard(model, mesh=mesh)
        before = [p.to_local().clone() for p in model.parameters()]
        op = ShardedHessianOperator(model, "ce", data, mode="reverse-over-reverse")
        E = torch.eye(op.full_size, dtype=torch.float64)[op._maps[op.rank]]
        fd = ShardedHessianOperator(model, "ce", data, route="finite-difference")
        res[name] = {
            "index": op._maps[op.rank],
            "rows": op.matmat(E),
            "fd_rows": fd.matmat(E[:, :4]),
            "fd_err": fd.last_error,
            "eig": eigenpairs(op, **EIG, generator=torch.Generator().manual_seed(2)),
            "restored": all(
                torch.equal(a, p.to_local())
                for a, p in zip(before, model.parameters(), strict=True)
            ),
        }
    torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return gloo_results(_body, tmp_path_factory.mktemp("hsdp"))


@pytest.fixture(scope="module")
def dense():
    return tanh_mlp_dense()


@pytest.mark.parametrize("name", sorted(MESHES))
def test_hsdp_products_and_eigenpairs_equal_one_process(ranks, dense, name):
    from hesslab import eigenpairs

    ref = eigenpairs(DenseOperator(dense), **EIG, generator=torch.Generator().manual_seed(2))
    scale = float(dense.abs().max())
    for r in ranks:
        res = r[name]
        idx = res["index"]
        rows = res["rows"][: len(idx)]  # this rank's rows of H (all ranks' data, N_r/N)
        assert float((rows - dense[idx]).abs().max()) <= 1e-10 * scale
        actual = res["fd_rows"][: len(idx)] - dense[idx, :4]
        assert float(actual.abs().max()) <= 1e-6 * scale  # finite differences, all data
        assert torch.allclose(res["eig"].values, ref.values, rtol=0, atol=1e-10 * scale)
        assert res["eig"].num_matvecs == ref.num_matvecs
        assert res["restored"]
    sizes = [len(r[name]["index"]) for r in ranks]
    if name == "replicas":  # whole vectors on both replicas
        assert sizes == [dense.shape[0]] * 2
    else:
        assert sum(sizes) == dense.shape[0]
