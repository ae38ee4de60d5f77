"""In-memory datasets: a small tensor container and the bundled (offline) data sets.

Everything here is generated or loaded without network access: scikit-learn's 8x8
digits ship with scikit-learn, the synthetic sets are generated from a seed.

Conventions: inputs ``x`` are floating point (``float32`` unless ``dtype=`` says
otherwise), labels ``y`` are ``int64`` class indices for classification. Every random
choice takes a ``seed`` (NumPy ``Generator`` or ``torch.Generator`` created locally);
no function reads or advances a global random state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from hesslab.errors import ConfigurationError, DataError
from hesslab.rng import resolve_generator

__all__ = [
    "Split",
    "TensorData",
    "balanced_subset",
    "blobs",
    "circles",
    "digits",
    "gaussian_mixture",
    "moons",
    "with_label_noise",
]


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
# helpers


def _check_dtype(dtype: torch.dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ConfigurationError(f"dtype must be a floating torch dtype, got {dtype!r}.")


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ConfigurationError(
            f"test_fraction must lie strictly between 0 and 1, got {test_fraction}."
        )


def _stratified_split(
    y: np.ndarray, test_size: float | int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices, stratified by label, reproducible from ``seed``.

    ``test_size`` is a fraction in ``(0, 1)`` or an exact number of test points.
    """
    from sklearn.model_selection import train_test_split

    if isinstance(test_size, float):
        _check_fraction(test_size)
    try:
        tr, te = train_test_split(
            np.arange(y.size), test_size=test_size, stratify=y, random_state=seed
        )
    except ValueError as e:
        raise ConfigurationError(
            f"cannot split {y.size} points stratified by class with test size {test_size}: "
            f"{e}. Use more points per class or a different test size."
        ) from e
    return np.sort(tr), np.sort(te)


def _standardize(
    x_train: np.ndarray, x_test: np.ndarray, per_feature: bool = True
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Standardise with training-set statistics; constant features are only centred."""
    if per_feature:
        mean = x_train.mean(axis=0, keepdims=True)
        std = x_train.std(axis=0, keepdims=True)
        std = np.where(std > 0, std, 1.0)
    else:
        mean = np.asarray(x_train.mean())
        std = np.asarray(x_train.std()) if x_train.std() > 0 else np.asarray(1.0)
    info = {"standardize_mean": mean.squeeze(), "standardize_std": std.squeeze()}
    return (x_train - mean) / std, (x_test - mean) / std, info


def _make(
    x: np.ndarray,
    y: np.ndarray,
    name: str,
    num_classes: int | None,
    dtype: torch.dtype,
    meta: dict[str, Any],
) -> TensorData:
    xt = torch.as_tensor(np.ascontiguousarray(x)).to(dtype)
    yt = torch.as_tensor(np.ascontiguousarray(y)).to(torch.long)
    return TensorData(xt, yt, name=name, num_classes=num_classes, meta=meta)


def _split_and_pack(
    x: np.ndarray,
    y: np.ndarray,
    *,
    name: str,
    num_classes: int,
    test_size: float | int,
    seed: int,
    standardize: bool,
    dtype: torch.dtype,
    meta: dict[str, Any],
    per_feature: bool = True,
) -> Split:
    tr, te = _stratified_split(y, test_size, seed)
    x_tr, x_te = x[tr].astype(np.float64), x[te].astype(np.float64)
    meta = dict(meta, seed=seed, test_size=test_size, standardize=standardize)
    if standardize:
        x_tr, x_te, info = _standardize(x_tr, x_te, per_feature=per_feature)
        meta.update(info)
    return Split(
        _make(x_tr, y[tr], name, num_classes, dtype, dict(meta, part="train")),
        _make(x_te, y[te], name, num_classes, dtype, dict(meta, part="test")),
    )


# ---------------------------------------------------------------------------------------
# bundled data sets


def digits(
    flat: bool = True,
    standardize: bool = True,
    test_fraction: float = 0.25,
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float32,
) -> Split:
    """scikit-learn's handwritten digits: 1,797 grey 8x8 images, 10 classes.

    Ships with scikit-learn (no download). The split is stratified by class.

    Args:
        flat: ``x`` as ``[N, 64]`` if true, as images ``[N, 1, 8, 8]`` otherwise.
        standardize: subtract the training mean and divide by the training standard
            deviation; per pixel for ``flat`` (always-zero pixels are left at 0), one
            scalar for image form (so convolutions see a homogeneous input).
        test_fraction: fraction of each class held out for testing.
        seed: seed of the split.
        dtype: floating dtype of ``x``.

    Returns:
        A :class:`Split`; with the defaults, 1,347 training and 450 test points.
    """
    from sklearn.datasets import load_digits

    _check_dtype(dtype)
    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    split = _split_and_pack(
        x,
        y,
        name="digits" if flat else "digits-image",
        num_classes=10,
        test_size=float(test_fraction),
        seed=seed,
        standardize=standardize,
        dtype=dtype,
        meta={"source": "sklearn.datasets.load_digits", "flat": flat},
        per_feature=flat,
    )
    if flat:
        return split
    return Split(
        replace(split.train, x=split.train.x.reshape(-1, 1, 8, 8)),
        replace(split.test, x=split.test.x.reshape(-1, 1, 8, 8)),
    )


def _simplex(num_classes: int) -> np.ndarray:
    """``[k, k-1]`` vertices of a centred regular simplex with unit pairwise distance."""
    e = np.eye(num_classes) - 1.0 / num_classes
    # Orthonormal basis of the (k-1)-dimensional span of the centred vertices.
    u, _, _ = np.linalg.svd(e)
    coords = e @ u[:, : num_classes - 1]
    return coords / math.sqrt(2.0)


def gaussian_mixture(
    num_classes: int = 3,
    dim: int = 2,
    num_per_class: int = 100,
    spread: float = 1.0,
    separation: float = 5.0,
    test_fraction: float = 0.5,
    seed: int = 0,
    *,
    means: str = "auto",
    standardize: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Split:
    r"""Isotropic Gaussian mixture with class means at a controlled separation.

    Class ``c`` draws ``x = \mu_c + \sigma z``, ``z ~ N(0, I_d)``. The means are

    * ``"simplex"``: the vertices of a regular simplex, randomly rotated into
      ``R^dim``, so that every pair of means is exactly ``separation`` apart (needs
      ``dim >= num_classes - 1``);
    * ``"random"``: independent uniformly random directions of length
      ``separation / sqrt(2)`` (pairwise distances ``≈ separation`` when ``dim`` is
      large; on a circle for ``dim = 2``);
    * ``"auto"``: ``"simplex"`` when possible, ``"random"`` otherwise.

    The ratio ``separation / spread`` sets how separable the classes are: the data
    sweep of Sagun et al. (2017) varies ``num_classes`` and this ratio.

    Args:
        num_classes: ``k``.
        dim: input dimension ``d``.
        num_per_class: points generated per class (before the train/test split).
        spread: standard deviation ``\sigma`` of each coordinate within a class.
        separation: distance between class means (see ``means``).
        test_fraction: fraction of each class held out.
        seed: seed of the means, the samples and the split.
        means: ``"auto"``, ``"simplex"`` or ``"random"``.
        standardize: standardise inputs with training statistics.
        dtype: floating dtype of ``x``.

    Returns:
        A :class:`Split`; ``train.meta["means"]`` holds the ``[k, d]`` class means.

    References:
        Sagun, Evci, Guney, Dauphin, Bottou (2017), "Empirical Analysis of the Hessian
        of Over-Parametrized Neural Networks", arXiv:1706.04454.
    """
    _check_dtype(dtype)
    if num_classes < 2 or dim < 1 or num_per_class < 2:
        raise ConfigurationError(
            "gaussian_mixture needs num_classes >= 2, dim >= 1 and num_per_class >= 2; got "
            f"num_classes={num_classes}, dim={dim}, num_per_class={num_per_class}."
        )
    if spread < 0 or separation < 0:
        raise ConfigurationError("spread and separation must be non-negative.")
    if means == "auto":
        means = "simplex" if dim >= num_classes - 1 else "random"
    rng = np.random.default_rng(seed)
    mu = _mixture_means(num_classes, dim, separation, means, rng)
    y = np.repeat(np.arange(num_classes), num_per_class)
    x = mu[y] + spread * rng.standard_normal((y.size, dim))
    return _split_and_pack(
        x,
        y,
        name="mixture",
        num_classes=num_classes,
        test_size=float(test_fraction),
        seed=seed,
        standardize=standardize,
        dtype=dtype,
        meta={
            "source": "gaussian_mixture",
            "means": torch.as_tensor(mu),
            "means_kind": means,
            "spread": spread,
            "separation": separation,
        },
    )


def _mixture_means(
    num_classes: int, dim: int, separation: float, means: str, rng: np.random.Generator
) -> np.ndarray:
    """The ``[k, d]`` class means of :func:`gaussian_mixture` (``means`` simplex or random)."""
    if means == "simplex":
        if dim < num_classes - 1:
            raise ConfigurationError(
                f"a simplex of {num_classes} means needs dim >= {num_classes - 1}, got dim="
                f"{dim}; raise dim or pass means='random'."
            )
        mu = np.zeros((num_classes, dim))
        mu[:, : num_classes - 1] = _simplex(num_classes) * separation
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        q = q * np.sign(np.diag(r))  # Haar-distributed rotation
        return mu @ q.T
    if means == "random":
        d = rng.standard_normal((num_classes, dim))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        return d * separation / math.sqrt(2.0)
    raise ConfigurationError(f"means must be 'auto', 'simplex' or 'random', got {means!r}.")


def _sklearn_split(
    x: np.ndarray,
    y: np.ndarray,
    *,
    name: str,
    num_classes: int,
    num_train: int,
    num_test: int,
    seed: int,
    standardize: bool,
    dtype: torch.dtype,
    meta: dict[str, Any],
) -> Split:
    return _split_and_pack(
        x,
        y,
        name=name,
        num_classes=num_classes,
        test_size=num_test,
        seed=seed,
        standardize=standardize,
        dtype=dtype,
        meta=meta,
    )


def _check_sizes(num_train: int, num_test: int) -> None:
    if num_train < 1 or num_test < 1:
        raise ConfigurationError(
            f"num_train and num_test must be positive, got {num_train} and {num_test}."
        )


def blobs(
    num_classes: int = 3,
    num_train: int = 100,
    num_test: int = 100,
    dim: int = 2,
    cluster_std: float = 1.0,
    seed: int = 0,
    *,
    standardize: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Split:
    """Isotropic blobs from ``sklearn.datasets.make_blobs``.

    Defaults follow the public code of Sagun et al. (2017): 100 training and 100 test
    points in 2-D, ``cluster_std=1.0``, centres drawn in ``[-10, 10]^dim``, inputs
    standardised with training statistics. The ``num_train + num_test`` points are
    drawn together and split stratified by class.

    References:
        Sagun et al. (2017), arXiv:1706.04454.
    """
    from sklearn.datasets import make_blobs

    _check_dtype(dtype)
    _check_sizes(num_train, num_test)
    x, y = make_blobs(
        n_samples=num_train + num_test,
        n_features=dim,
        centers=num_classes,
        cluster_std=cluster_std,
        random_state=seed,
    )
    return _sklearn_split(
        x,
        y,
        name="blobs",
        num_classes=num_classes,
        num_train=num_train,
        num_test=num_test,
        seed=seed,
        standardize=standardize,
        dtype=dtype,
        meta={"source": "sklearn.datasets.make_blobs", "cluster_std": cluster_std},
    )


def moons(
    num_train: int = 100,
    num_test: int = 100,
    noise: float = 0.1,
    seed: int = 0,
    *,
    standardize: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Split:
    """Two interleaving half circles, ``sklearn.datasets.make_moons`` (2 classes, 2-D).

    References:
        Sagun et al. (2017), arXiv:1706.04454 (used beside blobs and circles).
    """
    from sklearn.datasets import make_moons

    _check_dtype(dtype)
    _check_sizes(num_train, num_test)
    x, y = make_moons(n_samples=num_train + num_test, noise=noise, random_state=seed)
    return _sklearn_split(
        x,
        y,
        name="moons",
        num_classes=2,
        num_train=num_train,
        num_test=num_test,
        seed=seed,
        standardize=standardize,
        dtype=dtype,
        meta={"source": "sklearn.datasets.make_moons", "noise": noise},
    )


def circles(
    num_train: int = 100,
    num_test: int = 100,
    noise: float = 0.1,
    factor: float = 0.5,
    seed: int = 0,
    *,
    standardize: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Split:
    """Two concentric circles, ``sklearn.datasets.make_circles`` (2 classes, 2-D).

    ``factor`` is the ratio of the inner to the outer radius.

    References:
        Sagun et al. (2017), arXiv:1706.04454 (used beside blobs and moons).
    """
    from sklearn.datasets import make_circles

    _check_dtype(dtype)
    _check_sizes(num_train, num_test)
    x, y = make_circles(
        n_samples=num_train + num_test, noise=noise, factor=factor, random_state=seed
    )
    return _sklearn_split(
        x,
        y,
        name="circles",
        num_classes=2,
        num_train=num_train,
        num_test=num_test,
        seed=seed,
        standardize=standardize,
        dtype=dtype,
        meta={"source": "sklearn.datasets.make_circles", "noise": noise, "factor": factor},
    )


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
