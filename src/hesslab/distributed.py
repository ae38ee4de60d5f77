"""Data-parallel curvature operators on ``torch.distributed``.

Each rank holds a shard of the data and builds its curvature operator on it as usual; the
:class:`DistributedOperator` wrapper makes every product the product of the operator over
the union of the shards:

``A V = sum_r (N_r / N) A_r V``

with ``N_r`` the points of rank ``r`` and ``N = sum_r N_r`` (exact for unequal shards,
because each rank's operator is already the exact mean over its own points). One
``all_reduce`` per product (per block of ``K`` columns). The input block is broadcast from
rank 0 first, so every rank multiplies the same vectors even if its random generator
drifted; Krylov state built from the products is then identical on every rank.

Launch with ``torchrun --nproc_per_node N script.py`` (or any launcher that sets up
``torch.distributed``): NCCL for GPUs, gloo for CPUs. Only rank 0 should write results
(:func:`is_main_process`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from hesslab.errors import ConfigurationError
from hesslab.operators.base import LinearOperator

__all__ = [
    "DistributedOperator",
    "all_reduce_mean",
    "broadcast_int",
    "is_distributed",
    "is_main_process",
    "shard_indices",
]


def is_distributed() -> bool:
    """True when ``torch.distributed`` is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """True on rank 0 (or when not running distributed)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _comm_device(device: torch.device, group: Any = None) -> torch.device:
    return device if dist.get_backend(group) == "nccl" else torch.device("cpu")


def _count(n: float) -> int | float:
    """Item counts stay integers when they are (data points, tokens), floats otherwise."""
    return int(n) if float(n).is_integer() else float(n)


def all_reduce_mean(value: Tensor, num_local: float, *, group: Any = None) -> Tensor:
    """The mean over all ranks' data of per-rank means: ``sum_r (N_r / N) value_r``.

    ``value`` is this rank's mean over its ``num_local = N_r`` points (e.g. the gradient
    of the shard's mean loss); the weights are exact for unequal shards. One
    ``all_reduce``; every rank gets the same tensor (same dtype and device as ``value``).
    """
    dev = _comm_device(value.device, group)
    flat = value.detach().reshape(-1)
    packed = torch.cat(
        [
            flat.to(dev, torch.float64) * float(num_local),
            flat.new_tensor([float(num_local)], dtype=torch.float64, device=dev),
        ]
    )
    dist.all_reduce(packed, group=group)
    total = float(packed[-1])
    if total <= 0:
        raise ConfigurationError("the shards hold no data points in total")
    return (packed[:-1] / total).to(value.device, value.dtype).reshape(value.shape)


def broadcast_int(value: int, *, src: int = 0, group: Any = None) -> int:
    """Rank ``src``'s ``value`` on every rank (e.g. a seed drawn from a local generator)."""
    t = torch.tensor([int(value)], dtype=torch.int64)
    if dist.get_backend(group) == "nccl":
        t = t.cuda()
    dist.broadcast(t, src=src, group=group)
    return int(t.item())


def shard_indices(num_points: int, rank: int, world_size: int) -> range:
    """Contiguous shard of ``range(num_points)`` for ``rank`` (sizes differ by at most one).

    Unlike ``DistributedSampler`` this never pads or repeats points, so the union of the
    shards is exactly the data set.
    """
    if not 0 <= rank < world_size:
        raise ConfigurationError(f"rank {rank} is outside 0..{world_size - 1}")
    base, extra = divmod(num_points, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


class DistributedOperator(LinearOperator):
    """The operator over all ranks' data, from each rank's operator over its own shard.

    Args:
        op: this rank's operator (e.g. ``HessianOperator`` of an objective on the shard).
        num_local: loss items of this rank (data points, or tokens for item-level losses);
            default ``op.objective.num_items``.
        group: process group (default: the world).

    All ranks must call every product collectively (the algorithms do, as long as every
    rank runs the same code with the same arguments).
    """

    def __init__(self, op: LinearOperator, *, num_local: float | None = None, group: Any = None):
        if not (dist.is_available() and dist.is_initialized()):
            raise ConfigurationError(
                "torch.distributed is not initialised; launch with torchrun and call "
                "torch.distributed.init_process_group first"
            )
        super().__init__(op.shape[0], op.dtype, op.device)
        if num_local is None:
            objective = getattr(op, "objective", None)
            if objective is None:
                raise ConfigurationError(
                    "pass num_local= (this rank's number of data points) for an operator "
                    "without an objective"
                )
            num_local = objective.num_items
        self.op, self.group = op, group
        count = torch.tensor([float(num_local)], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(count, group=group)
        self.num_local, self.num_total = _count(num_local), _count(count.item())
        if self.num_total <= 0:
            raise ConfigurationError("the shards hold no data points in total")
        self.symmetric = op.symmetric

    @property
    def _comm_device(self) -> torch.device:
        backend = dist.get_backend(self.group) if dist.is_initialized() else "gloo"
        return self.op.device if backend == "nccl" else torch.device("cpu")

    def _matmat(self, V: Tensor) -> Tensor:
        dev = self._comm_device
        V = V.detach().to(dev, copy=True).contiguous()
        dist.broadcast(V, src=0, group=self.group)
        out = self.op._matmat(V.to(self.device)) * (self.num_local / self.num_total)
        out = out.to(dev).contiguous()
        dist.all_reduce(out, group=self.group)
        return out.to(self.device)
