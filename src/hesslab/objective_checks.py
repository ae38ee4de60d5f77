"""The data scan and the determinism checks of :class:`hesslab.Objective`.

Curvature operators pass over the data many times and need the same loss on every pass.
:class:`~hesslab.Objective` therefore reads the data once at construction
(:func:`scan_sizes`: batch sizes, item counts, finite values), derives the batch weights
of ``L = sum_b w_b * loss_b`` (:func:`batch_weights`, the reductions of
:mod:`hesslab.objective`) and refuses what would make passes differ: a shuffling
``DataLoader`` or data that changes between passes (:func:`scan_sizes`), train-mode
BatchNorm or active dropout (:func:`check_model_modes`) and a random forward pass
(:func:`check_forward_determinism`). ``check_determinism=False`` skips the checks.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from hesslab import validation
from hesslab.batches import batch_tensors, fingerprint, is_tensor_batch, loader_sizes
from hesslab.errors import DataError, NonDeterminismError
from hesslab.losses import ce_count

if TYPE_CHECKING:
    from hesslab.losses import LossSpec
    from hesslab.objective import Objective

__all__ = [
    "CHECKED_BATCHES",
    "batch_weights",
    "check_forward_determinism",
    "check_model_modes",
    "normalize_data",
    "refuse_shuffling",
    "scan_sizes",
]

#: batches of two passes that the determinism check compares
CHECKED_BATCHES = 4


def normalize_data(data: Any) -> Any:
    """``data`` as a re-iterable of batches (a single batch becomes ``[batch]``).

    Raises:
        DataError: ``data`` is a lone tensor, not iterable, or a single-use iterator.
    """
    if is_tensor_batch(data):
        return [data]
    if isinstance(data, Tensor):
        raise DataError("data is a single tensor; pass (inputs, targets) or a DataLoader")
    if not isinstance(data, Iterable):
        raise DataError(
            f"data must be a DataLoader, a list of batches or a batch (x, y); got "
            f"{type(data).__name__}"
        )
    if iter(data) is data:
        raise DataError(
            "data is a single-use iterator (e.g. a generator); hesslab passes over the "
            "data many times: pass a DataLoader or a list of batches"
        )
    return data


def refuse_shuffling(data: Any) -> None:
    """Raise :class:`NonDeterminismError` if ``data`` is a ``DataLoader`` that shuffles."""
    sampler = getattr(getattr(data, "batch_sampler", None), "sampler", None)
    if isinstance(sampler, torch.utils.data.RandomSampler):
        raise NonDeterminismError(
            "the DataLoader shuffles (RandomSampler): every pass would see other batches. "
            "Use DataLoader(..., shuffle=False), or pass check_determinism=False"
        )


def scan_sizes(
    data: Any,
    loss: LossSpec,
    batch_size: Callable[[Any], int],
    targets: Callable[[Any], Any],
    check: bool,
) -> tuple[list[int], list[float]]:
    """Batch sizes and item counts of ``data``, and the data half of the determinism check.

    Reads the data at most once: not at all for per-point losses over a ``DataLoader``
    with a sequential sampler and the default collate function (sizes from the
    sampler), once otherwise (sizes, and the targets of item-level losses). The check
    compares the first :data:`CHECKED_BATCHES` batches of two passes (all of them for
    a list of batches they are the same objects): a shuffling sampler, random
    augmentation or a stateful sampler shows there; a later batch that changes is
    caught by the size checks of every pass only.

    Args:
        data: the objective's re-iterable of batches (:func:`normalize_data`).
        loss: its resolved loss.
        batch_size: the number of points of a batch.
        targets: the targets of a batch (for the item counts of item-level losses).
        check: run the data half of the determinism check.

    Returns:
        ``(sizes, counts)``: the points of each batch, and the items of each batch for
        item-level criterion losses (``[]`` otherwise).
    """
    if check:
        refuse_shuffling(data)
    sizes = None if loss.per_item else loader_sizes(data)
    counts: list[float] = []
    if sizes is None:
        sizes = []
        for batch in data:
            validation.check_batch_finite(batch_tensors(batch), len(sizes))
            sizes.append(batch_size(batch))
            if loss.per_item and loss.kind != "custom":
                counts.append(ce_count(loss, targets(batch)))
    if not sizes or sum(sizes) == 0:
        raise DataError("the data yields no data points")
    if check and not isinstance(data, list):
        first = [fingerprint(b) for b in itertools.islice(data, CHECKED_BATCHES)]
        second = [fingerprint(b) for b in itertools.islice(data, CHECKED_BATCHES)]
        if second != first:
            raise NonDeterminismError(
                "the data changed between two passes (a shuffled DataLoader, random "
                "augmentation or a sampler with state). Curvature operators need the same "
                "data on every pass: use DataLoader(..., shuffle=False) without random "
                "transforms, or pass check_determinism=False if this is intended"
            )
    return list(sizes), counts


def batch_weights(
    loss: LossSpec, sizes: tuple[int, ...], counts: list[float]
) -> tuple[float, tuple[float, ...], tuple[float, ...]]:
    """``(num_items, weights, items)``: batch weights ``w_b`` with ``L = sum_b w_b * loss_b``.

    ``w_b = 1 / N_items`` for item-level losses with mean reduction (``counts`` are the
    items of each batch), ``1 / N`` for other item-level losses and for sum reduction,
    ``N_b / N`` for per-point losses with mean reduction (see :mod:`hesslab.objective`).

    Raises:
        DataError: an item-level loss whose data holds no item.
    """
    N = sum(sizes)
    if loss.per_item and loss.reduction == "mean":
        total = float(sum(counts))
        if total <= 0:
            raise DataError(
                "the data holds no loss items: every target is ignored "
                f"(ignore_index={loss.ignore_index}) or has class weight 0"
            )
        return total, tuple(1.0 / total for _ in counts), tuple(counts)
    if loss.per_item or loss.reduction == "sum":
        return float(N), tuple(1.0 / N for _ in sizes), tuple(float(n) for n in sizes)
    return float(N), tuple(n / N for n in sizes), tuple(float(n) for n in sizes)


def check_model_modes(model: nn.Module) -> None:
    """Refuse train-mode BatchNorm and active dropout (:class:`NonDeterminismError`)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            raise NonDeterminismError(
                f"BatchNorm layer {name!r} is in train mode: its output depends on the "
                "batch and it updates running statistics. Call model.eval() before "
                "building the objective (or pass check_determinism=False to use batch "
                "statistics anyway)"
            )
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            raise NonDeterminismError(
                f"dropout layer {name!r} is active (train mode, p={m.p}): the loss is "
                "random. Call model.eval() before building the objective (or pass "
                "check_determinism=False)"
            )


def check_forward_determinism(obj: Objective) -> None:
    """Two loss evaluations on the first batch must agree bit for bit."""
    batch, _ = next(obj.batches())
    with torch.no_grad():
        a = obj.batch_loss(obj.theta, batch)
        b = obj.batch_loss(obj.theta, batch)
    if not torch.equal(a, b):
        raise NonDeterminismError(
            f"two evaluations of the loss on the same batch at the same parameters differ "
            f"({float(a)!r} vs {float(b)!r}): the model is random (functional dropout, "
            "noise layers). Make the forward pass deterministic, or pass "
            "check_determinism=False"
        )
