"""Product throughput of data-parallel Hessian operators for 1 and N processes (gloo, CPU).

Run: ``python bench/distributed.py [--procs 1,2] [--points 4096] [--columns 16]``.
Each configuration starts its own process group on localhost; every rank holds a
contiguous shard of the same data (an MLP 64-256-256-10 on a synthetic digits-sized
problem). Prints columns per second and the speed-up over one process. On a GPU machine
run the same script under ``torchrun --nproc_per_node G`` with ``--backend nccl``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hesslab import Objective, models
from hesslab.distributed import DistributedOperator, shard_indices
from hesslab.operators import HessianOperator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.points, 64, generator=g)
    y = torch.randint(0, 10, (args.points,), generator=g)
    idx = list(shard_indices(args.points, rank, world))
    model = models.mlp(64, [256, 256], 10, seed=0).eval()
    H = DistributedOperator(HessianOperator(Objective(model, "ce", (x[idx], y[idx]))))
    V = torch.randn(H.shape[0], args.columns, generator=g)
    H.matmat(V)  # warm-up and mode choice
    times = []
    for _ in range(args.reps):
        dist.barrier()
        t0 = time.perf_counter()
        H.matmat(V)
        times.append(time.perf_counter() - t0)
    if rank == 0:
        Path(out).write_text(str(statistics.median(times)))
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--procs", default="1,2")
    ap.add_argument("--points", type=int, default=4096)
    ap.add_argument("--columns", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(p) for p in args.procs.split(",")):
            out = os.path.join(tmp, f"t{n}")
            mp.start_processes(
                _worker, args=(n, _free_port(), args, out), nprocs=n, start_method="spawn"
            )
            rows.append((n, float(Path(out).read_text())))
    base = rows[0][1]
    lines = [
        f"Distributed Hessian products: MLP 64-256-256-10, {args.points} points, "
        f"K={args.columns} columns, gloo on CPU, {args.threads} thread(s) per process",
        "",
        "| processes | seconds per product | columns / s | speed-up |",
        "|---|---|---|---|",
    ]
    for n, t in rows:
        lines.append(f"| {n} | {t:.4f} | {args.columns / t:.1f} | {base / t:.2f} |")
    text = "\n".join(lines)
    sys.stdout.write(text + "\n")
    res = Path(__file__).resolve().parent / "results" / "distributed.md"
    res.parent.mkdir(exist_ok=True)
    res.write_text(text + "\n")


if __name__ == "__main__":
    main()
