"""The bundled (offline) data sets, as :class:`~hesslab.data.tensors.Split` s.

(The containers and their transformations live in :mod:`hesslab.data.tensors` and are
re-exported here, as before.)

Everything here is generated or loaded without network access: scikit-learn's 8x8
digits ship with scikit-learn, the synthetic sets are generated from a seed.

Conventions: inputs ``x`` are floating point (``float32`` unless ``dtype=`` says
otherwise), labels ``y`` are ``int64`` class indices for classification. Every random
choice takes a ``seed`` (NumPy ``Generator`` or ``torch.Generator`` created locally);
no function reads or advances a global random state.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from hesslab.data.tensors import Split, TensorData, balanced_subset, with_label_noise
from hesslab.errors import ConfigurationError

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
