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
    "pin_batches",
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


def pin_batches(data: Any, device: torch.device, pin: bool | None) -> Any:
    """In-memory batches copied once into page-locked (pinned) host memory.

    A host-to-accelerator copy with ``non_blocking=True`` is asynchronous only from
    pinned memory (from pageable memory the driver stages it synchronously), so pinning
    lets the next batch's transfer overlap the current product. Pinning costs one host
    copy of the data, once; a ``DataLoader`` pins its own batches
    (``DataLoader(..., pin_memory=True)``), so loaders are left as they are.

    Args:
        data: a re-iterable of batches (:func:`~hesslab.objective_checks.normalize_data`).
        device: where the batches go.
        pin: ``None`` (pin lists/tuples of batches when ``device`` is a CUDA device),
            ``True`` (pin, or raise), ``False`` (never).

    Returns:
        ``data`` itself, or a list of the batches with every CPU tensor pinned.

    Raises:
        ConfigurationError: ``pin=True`` for a CPU device, without CUDA, or for a loader.
    """
    from hesslab.errors import ConfigurationError

    if pin is False or (pin is None and device.type != "cuda"):
        return data
    if device.type != "cuda" or not torch.cuda.is_available():
        if pin is None:
            return data
        raise ConfigurationError(
            f"pin_memory=True needs a CUDA device (batches go to {device}); leave it at None"
        )
    if not isinstance(data, (list, tuple)):
        if pin is None:
            return data
        raise ConfigurationError(
            "pin_memory=True applies to lists of batches; for a DataLoader pass "
            "DataLoader(..., pin_memory=True)"
        )

    def pinned(t: Tensor) -> Tensor:
        return t.pin_memory() if t.device.type == "cpu" and not t.is_pinned() else t

    return [map_tensors(b, pinned) for b in data]


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
