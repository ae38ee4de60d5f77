"""Run a test body in 2 local gloo processes (the set-up the distributed tests share)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from hesslab.distributed import shard_indices

from .models import make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _main(rank: int, world: int, port: int, out_dir: str, body: Callable) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        body(rank, world, out_dir)
    finally:
        dist.destroy_process_group()


def run_gloo(body: Callable[[int, int, str], None], out_dir: str | Path, world: int = 2) -> None:
    """``body(rank, world, out_dir)`` in ``world`` spawned processes of one gloo group.

    ``body`` must be a module-level function (spawn pickles it by reference).
    """
    args = (world, free_port(), str(out_dir), body)
    mp.start_processes(_main, args=args, nprocs=world, start_method="spawn")


def gloo_results(
    body: Callable[[int, int, str], None], out_dir: str | Path, world: int = 2
) -> list[dict]:
    """:func:`run_gloo`, then each rank's results: ``body`` saves ``out_dir/rank{r}.pt``."""
    run_gloo(body, out_dir, world)
    return [torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=False) for r in range(world)]


def tanh_mlp_dense() -> torch.Tensor:
    """The dense single-process Hessian of the ``tanh_mlp`` test model on all its points."""
    from hesslab import Objective
    from hesslab.operators import HessianOperator

    model, x, y, _ = make("tanh_mlp")
    return HessianOperator(Objective(model, "ce", (x, y))).to_dense()


def tanh_mlp_shard(rank: int, world: int) -> tuple[nn.Module, list]:
    """The ``tanh_mlp`` test model and this rank's shard of its 23 points (12 and 11), split
    into two unequal batches."""
    model, x, y, _ = make("tanh_mlp")
    idx = list(shard_indices(len(x), rank, world))
    xs, ys = x[idx], y[idx]
    return model, [(xs[:5], ys[:5]), (xs[5:], ys[5:])]
