"""The structure of a batch: its tensors, a map over them, rows, a content fingerprint.

A batch is a tensor, or a (nested) tuple, list, named tuple or mapping of tensors and
other values. :class:`~hesslab.objective.Objective` (the one data loop), the operators and
the input checks all read batches through these helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "batch_rows",
    "batch_tensors",
    "fingerprint",
    "is_tensor_batch",
    "loader_sizes",
    "map_tensors",
]


def is_tensor_batch(data: Any) -> bool:
    """``data`` is one batch: a non-empty tuple/list/mapping of tensors (not a loader)."""
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, Tensor) for t in data):
        return True
    return isinstance(data, Mapping) and data and all(isinstance(t, Tensor) for t in data.values())


def batch_tensors(batch: Any) -> list[Tensor]:
    """Every tensor of a (nested tuple/list/mapping) batch, in order."""
    if isinstance(batch, Tensor):
        return [batch]
    if isinstance(batch, Mapping):
        return [t for v in batch.values() for t in batch_tensors(v)]
    if isinstance(batch, (tuple, list)):
        return [t for v in batch for t in batch_tensors(v)]
    return []


def map_tensors(batch: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """The batch with ``fn`` applied to every tensor, containers (and named tuples) kept."""
    if isinstance(batch, Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        return type(batch)({k: map_tensors(v, fn) for k, v in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(map_tensors(v, fn) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(map_tensors(v, fn) for v in batch)
    return batch


def loader_sizes(data: Any) -> list[int] | None:
    """Batch sizes of a sequential, default-collated ``DataLoader`` without reading it."""
    from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, default_collate

    if not isinstance(data, DataLoader) or data.collate_fn is not default_collate:
        return None
    bs = data.batch_sampler
    if type(bs) is not BatchSampler or not isinstance(bs.sampler, SequentialSampler):
        return None
    try:
        n = len(data.dataset)
    except TypeError:
        return None
    size = bs.batch_size
    sizes = [size] * (n // size)
    if n % size and not bs.drop_last:
        sizes.append(n % size)
    return sizes


def batch_rows(t: Tensor, a: int, b: int, n: int) -> Tensor:
    """Rows ``a:b`` of a batch tensor (tensors without the batch dimension are kept)."""
    return t[a:b] if t.ndim > 0 and t.shape[0] == n else t


def fingerprint(batch: Any) -> tuple:
    """Cheap content signature of a batch: shapes plus two position-weighted sums."""
    out = []
    for t in batch_tensors(batch):
        t = t.detach()
        flat = (t.flatten(1) if t.ndim > 1 else t.reshape(-1, 1)).to(torch.float64)
        w = torch.arange(1, flat.shape[0] + 1, dtype=torch.float64, device=flat.device)
        out.append((tuple(t.shape), float(flat.sum()), float((flat.sum(1) * w).sum())))
    return tuple(out)
