"""The data containers :class:`TensorData` and :class:`Split`, and their transformations.

The transformations are label noise (:func:`with_label_noise`) and class-balanced subsets
(:func:`balanced_subset`).

Every random choice takes a ``seed`` (a ``torch.Generator`` created locally); no function
reads or advances a global random state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from hesslab.errors import ConfigurationError, DataError
from hesslab.rng import resolve_generator

__all__ = ["Split", "TensorData", "balanced_subset", "with_label_noise"]


@dataclass(frozen=True, eq=False)
class TensorData:
    """A labelled data set held as two tensors (a map-style ``Dataset``).

    Indexing with an integer returns ``(x[i], y[i])``; indexing with a list or tensor of
    indices returns the whole batch ``(x[idx], y[idx])`` at once, which is what
    :meth:`loader` uses (no per-sample collation).

    Attributes:
        x: ``[N, ...]`` inputs.
        y: ``[N]`` integer class labels, or ``[N, ...]`` float regression targets.
        name: a short human-readable name, e.g. ``"digits"``.
        num_classes: number of classes for classification, ``None`` for regression.
        meta: free-form provenance (seed, standardisation constants, noisy indices...).
    """

    x: Tensor
    y: Tensor
    name: str = "data"
    num_classes: int | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.x, Tensor) or not isinstance(self.y, Tensor):
            raise DataError(
                f"TensorData needs tensors x and y, got {type(self.x).__name__} and "
                f"{type(self.y).__name__}; convert with torch.as_tensor first."
            )
        if self.x.ndim == 0 or self.y.ndim == 0:
            raise DataError("TensorData needs x of shape [N, ...] and y of shape [N, ...].")
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"x and y disagree on the number of data points: x has {self.x.shape[0]}, "
                f"y has {self.y.shape[0]}; pass one label (row of targets) per input."
            )
        if self.num_classes is not None and self.y.numel() > 0 and self.is_classification:
            lo, hi = int(self.y.min()), int(self.y.max())
            if lo < 0 or hi >= self.num_classes:
                raise DataError(
                    f"labels of {self.name!r} lie in [{lo}, {hi}] but num_classes is "
                    f"{self.num_classes}; labels must be 0..num_classes-1."
                )

    # -- Dataset protocol -------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, index: int | Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        if isinstance(index, (list, tuple)):
            index = torch.as_tensor(index, dtype=torch.long)
        if isinstance(index, Tensor):
            index = index.to(self.x.device)
        return self.x[index], self.y[index]

    def __iter__(self):
        # Without this, Python would iterate point by point through __getitem__, and code
        # expecting an iterable of batches would silently see N unbatched "batches".
        raise DataError(
            f"TensorData {self.name!r} is not an iterable of batches; pass "
            "data.loader(batch_size) (a DataLoader of (x, y) batches) or data.tensors."
        )

    # -- conveniences -----------------------------------------------------------------
    @property
    def is_classification(self) -> bool:
        """Whether ``y`` holds integer class labels."""
        return not (self.y.is_floating_point() or self.y.is_complex())

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, ``x.shape[1:]``."""
        return tuple(self.x.shape[1:])

    @property
    def tensors(self) -> tuple[Tensor, Tensor]:
        """``(x, y)``."""
        return self.x, self.y

    def class_counts(self) -> Tensor:
        """``[num_classes]`` number of points per class (classification only)."""
        if not self.is_classification or self.num_classes is None:
            raise DataError(f"{self.name!r} is not a classification data set.")
        return torch.bincount(self.y.cpu(), minlength=self.num_classes)

    def loader(
        self,
        batch_size: int | None = None,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        *,
        seed: int = 0,
        drop_last: bool = False,
    ) -> DataLoader:
        """A ``DataLoader`` yielding ``(x_batch, y_batch)`` tuples.

        Batches are sliced from the stored tensors (no per-sample collation, no worker
        processes), so they live on the data's device.

        Args:
            batch_size: points per batch; ``None`` means the whole data set in one batch.
            shuffle: reshuffle the order at every pass over the loader.
            generator: CPU ``torch.Generator`` driving the shuffle; if ``None`` and
                ``shuffle`` is true, a generator seeded with ``seed`` is created (the
                global random state is never used).
            seed: seed for the shuffle generator when ``generator`` is ``None``.
            drop_last: drop the last, smaller batch.
        """
        n = len(self)
        if n == 0:
            raise DataError(f"data set {self.name!r} is empty; nothing to load.")
        if batch_size is None:
            batch_size = n
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be a positive integer, got {batch_size}.")
        if shuffle:
            generator = resolve_generator(generator, seed=seed)
            sampler: Any = RandomSampler(range(n), generator=generator)
        else:
            sampler = SequentialSampler(range(n))
        batches = BatchSampler(sampler, batch_size=batch_size, drop_last=drop_last)
        return DataLoader(self, batch_size=None, sampler=batches)

    def subset(self, index: Sequence[int] | Tensor) -> TensorData:
        """The points at ``index`` (a new object; ``meta`` records the indices)."""
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if idx.numel() and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise DataError(f"subset index out of range for {self.name!r} with {len(self)} points.")
        x, y = self[idx]
        meta = dict(self.meta)
        meta["subset_indices"] = idx.cpu()
        return replace(self, x=x, y=y, meta=meta)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> TensorData:
        """Move to ``device``; cast ``x`` (and floating ``y``) to the floating ``dtype``."""
        if dtype is not None and not dtype.is_floating_point:
            raise ConfigurationError(f"dtype must be a floating dtype, got {dtype}.")
        x = self.x.to(device=device, dtype=dtype if self.x.is_floating_point() else None)
        y = self.y.to(device=device, dtype=dtype if self.y.is_floating_point() else None)
        return replace(self, x=x, y=y)

    def __repr__(self) -> str:
        return (
            f"TensorData(name={self.name!r}, N={len(self)}, x={tuple(self.x.shape)} "
            f"{self.x.dtype}, y={tuple(self.y.shape)} {self.y.dtype}, "
            f"num_classes={self.num_classes}, device={self.x.device})"
        )


@dataclass(frozen=True, eq=False)
class Split:
    """A train/test pair of :class:`TensorData`.

    Attributes:
        train: the training set (the data the Hessian is usually taken over).
        test: the held-out set, or ``None`` when none exists (e.g. a user's ``.pt`` file
            without test tensors).
    """

    train: TensorData
    test: TensorData | None = None

    @property
    def name(self) -> str:
        """Name of the training set."""
        return self.train.name

    @property
    def num_classes(self) -> int | None:
        """Number of classes (``None`` for regression)."""
        return self.train.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input."""
        return self.train.input_shape

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Split:
        """Move both parts (see :meth:`TensorData.to`)."""
        return Split(
            self.train.to(device, dtype), None if self.test is None else self.test.to(device, dtype)
        )

    def __iter__(self):
        # Allows ``train, test = split``.
        yield self.train
        yield self.test


# ---------------------------------------------------------------------------------------
# transformations


def with_label_noise(
    data: TensorData | Split,
    fraction: float,
    num_classes: int | None = None,
    seed: int = 0,
    *,
    exclude_true: bool = False,
) -> TensorData | Split:
    """Replace the labels of exactly ``round(fraction * N)`` random points.

    The chosen points (uniformly, without replacement) get a label drawn uniformly
    from ``0..num_classes-1`` — the random-label protocol of Zhang et al. (2017) used by
    Li et al. (2019); with ``exclude_true=True`` the new label always differs from the
    old one. ``meta`` records ``label_noise_indices`` (sorted), ``original_labels`` (all
    ``N``), ``label_noise_fraction`` and ``num_labels_changed``.

    Args:
        data: a :class:`TensorData`, or a :class:`Split` (only ``train`` is corrupted; the
            test set stays clean).
        fraction: in ``[0, 1]``.
        num_classes: number of classes; defaults to ``data.num_classes``.
        seed: seed of the choice of points and of the new labels.
        exclude_true: force every chosen label to change.

    References:
        Li, Gu, Zhou, Chen, Banerjee (2019), "Hessian based analysis of SGD for Deep
        Nets", arXiv:1907.10732.
    """
    if isinstance(data, Split):
        return Split(
            with_label_noise(data.train, fraction, num_classes, seed, exclude_true=exclude_true),
            data.test,
        )
    if not isinstance(data, TensorData):
        raise DataError(f"with_label_noise needs TensorData or Split, got {type(data).__name__}.")
    if not data.is_classification:
        raise DataError(f"label noise needs integer class labels; {data.name!r} has float targets.")
    if not 0.0 <= fraction <= 1.0:
        raise ConfigurationError(f"fraction must lie in [0, 1], got {fraction}.")
    k = num_classes if num_classes is not None else data.num_classes
    if k is None or k < 2:
        raise ConfigurationError("pass num_classes >= 2 (the data set does not record it).")
    n = len(data)
    m = round(fraction * n)
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(n, generator=g)[:m].sort().values
    y_cpu = data.y.cpu()
    old = y_cpu[chosen]
    if exclude_true:
        new = (old + torch.randint(1, k, (m,), generator=g)) % k
    else:
        new = torch.randint(0, k, (m,), generator=g)
    y_new = y_cpu.clone()
    y_new[chosen] = new
    meta = dict(data.meta)
    meta.update(
        label_noise_fraction=fraction,
        label_noise_indices=chosen,
        label_noise_seed=seed,
        original_labels=y_cpu.clone(),
        num_labels_changed=int((new != old).sum()),
    )
    return replace(
        data,
        y=y_new.to(data.y.device),
        num_classes=max(k, data.num_classes or 0),
        name=f"{data.name}+noise{fraction:g}",
        meta=meta,
    )


def balanced_subset(data: TensorData, per_class: int, seed: int = 0) -> TensorData:
    """``per_class`` random points of every class, in their original order.

    Sankar et al. (2021) compute layerwise spectra on a class-balanced subset of 10
    points per class.

    Raises:
        DataError: if some class has fewer than ``per_class`` points.

    References:
        Sankar, Khasbage, Vigneswaran, Balasubramanian (2021), "A Deeper Look at the
        Hessian Eigenspectrum of Deep Neural Networks", AAAI, arXiv:2012.03801.
    """
    if not isinstance(data, TensorData) or not data.is_classification:
        raise DataError("balanced_subset needs a TensorData with integer class labels.")
    if per_class < 1:
        raise ConfigurationError(f"per_class must be positive, got {per_class}.")
    k = data.num_classes if data.num_classes is not None else int(data.y.max()) + 1
    y = data.y.cpu()
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(k):
        idx = torch.nonzero(y == c).reshape(-1)
        if idx.numel() < per_class:
            raise DataError(
                f"class {c} of {data.name!r} has only {idx.numel()} points, fewer than "
                f"per_class={per_class}; lower per_class or use more data."
            )
        picks.append(idx[torch.randperm(idx.numel(), generator=g)[:per_class]])
    chosen = torch.cat(picks).sort().values
    sub = data.subset(chosen)
    meta = dict(sub.meta, balanced_per_class=per_class, balanced_seed=seed)
    return replace(sub, meta=meta)
