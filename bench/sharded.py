"""Sharded (FSDP2) curvature products against data-parallel ones, 2 gloo processes.

Run: ``python bench/sharded.py [--width 256 --depth 3 --points 256 --products 5]``.
For each route (``DistributedOperator`` of a ``HessianOperator``, the
:class:`~hesslab.sharded.ShardedHessianOperator` exact and finite-difference routes) a
fresh pair of processes builds the operator on an MLP in float64 and times single
products; printed: seconds per product, per-rank peak RSS (MiB, the process's whole
peak: torch's own footprint included), the per-rank vector size, and for the
finite-difference route its error estimate and the actual error against the exact route;
then the generic solver ``hesslab.eigenpairs(op, k)`` on the same operator (seconds, products,
the per-rank bytes of its Krylov basis: ``m x P / 2`` on the sharded routes, ``m x P`` on
the data-parallel one). Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.gloo import run_gloo


def _model(width: int, depth: int) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(16, width), nn.Tanh()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(width, 10)).double().eval()


def _body(rank: int, world: int, out_dir: str) -> None:
    from torch.distributed.fsdp import fully_shard

    from hesslab import Objective
    from hesslab.distributed import DistributedOperator, shard_indices
    from hesslab.operators import HessianOperator
    from hesslab.sharded import ShardedHessianOperator

    route = os.environ["BENCH_ROUTE"]
    a = argparse.Namespace(**json.loads(os.environ["BENCH_ARGS"]))  # spawn: no globals
    g = torch.Generator().manual_seed(1)
    x = torch.randn(a.points, 16, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (a.points,), generator=g)
    idx = list(shard_indices(a.points, rank, world))
    data, model = (x[idx], y[idx]), _model(a.width, a.depth)
    if route == "data-parallel":
        op = DistributedOperator(HessianOperator(Objective(model, "ce", data)))
    else:
        for m in model:
            if isinstance(m, nn.Linear):
                fully_shard(m)
        fully_shard(model)
        op = ShardedHessianOperator(model, "ce", data, route=route)
    v = torch.randn(op.shape[0], generator=torch.Generator().manual_seed(rank), dtype=op.dtype)
    op @ v  # warm-up (mode timing)
    start = time.perf_counter()
    for _ in range(a.products):
        out = op @ v
    sec = (time.perf_counter() - start) / a.products
    info = {"sec": sec, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    info["size"] = op.shape[0]
    if route == "finite-difference":
        info["err_est"] = float(op.last_error[0])
        exact = ShardedHessianOperator(model, "ce", data) @ v
        diff = torch.tensor([float(((out - exact) ** 2).sum())])
        dist.all_reduce(diff)
        info["err"] = float(diff.sqrt())
    _eig(op, a.eig_k, info)
    torch.save(info, os.path.join(out_dir, f"{route}-{rank}.pt"))


def _eig(op, k: int, info: dict) -> None:
    """``eigenpairs(op, k)`` (generic thick-restart Lanczos): seconds, products, basis bytes."""
    from hesslab import eigenpairs
    from hesslab.linalg import lanczos

    sizes = []
    Basis = lanczos.Basis

    class Spy(Basis):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            sizes.append(self.Vt.numel() * self.Vt.element_size())

    lanczos.Basis = Spy
    try:
        res = eigenpairs(
            op, k, tol=1e-8, method="lanczos", generator=torch.Generator().manual_seed(0)
        )
    finally:
        lanczos.Basis = Basis
    info["eig"] = (res.seconds, res.num_matvecs, max(sizes), float(res.values[0]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--points", type=int, default=256)
    p.add_argument("--products", type=int, default=5)
    p.add_argument("--eig-k", type=int, default=3, help="eigenpairs of the solver run")
    os.environ["BENCH_ARGS"] = json.dumps(vars(p.parse_args()))
    print(
        "| route | s / product | peak RSS rank0 (MiB) | vector size rank0 | FD err est / actual "
        "| eigenpairs s / products | basis bytes rank0 | λ_max |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as out:
        for route in ("data-parallel", "exact", "finite-difference"):
            os.environ["BENCH_ROUTE"] = route
            run_gloo(_body, out)
            r = torch.load(Path(out) / f"{route}-0.pt")
            fd = f"{r['err_est']:.2e} / {r['err']:.2e}" if "err" in r else ""
            es, en, eb, lam = r["eig"]
            print(
                f"| {route} | {r['sec']:.4f} | {r['rss']:.0f} | {r['size']} | {fd} "
                f"| {es:.2f} / {en} | {eb} | {lam:.10g} |"
            )


if __name__ == "__main__":
    main()
