"""Readers for data on disk: MNIST (idx), CIFAR-10 (python pickle batches), ``.pt``/``.npz``.

Nothing is ever downloaded. The readers parse the standard distribution formats from a
local folder, validate magic numbers and shapes, and raise :class:`~hesslab.errors.DataError`
naming the file, where it was looked for and how to obtain it.

* MNIST (LeCun et al., 1998) and drop-in replacements such as Fashion-MNIST: the four
  idx files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, optionally gzipped (``.gz``).
* CIFAR-10 (Krizhevsky, 2009): ``cifar-10-batches-py/data_batch_1`` .. ``data_batch_5``
  and ``test_batch``, unpickled with a restricted unpickler that only admits the NumPy
  array constructors (a pickle from an untrusted folder cannot run code).
"""

from __future__ import annotations

import gzip
import importlib
import io
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from hesslab.data.datasets import Split, TensorData
from hesslab.errors import ConfigurationError, DataError

__all__ = [
    "CIFAR10_MEAN_STD",
    "MNIST_MEAN_STD",
    "cifar10",
    "find_cifar10_dir",
    "find_mnist_dir",
    "load_tensor_file",
    "mnist",
    "read_idx",
]

#: Mean and standard deviation of the MNIST training pixels (scaled to [0, 1]).
MNIST_MEAN_STD: tuple[tuple[float, ...], tuple[float, ...]] = ((0.1307,), (0.3081,))
#: Per-channel mean and standard deviation of the CIFAR-10 training pixels.
CIFAR10_MEAN_STD: tuple[tuple[float, ...], tuple[float, ...]] = (
    (0.4914, 0.4822, 0.4465),
    (0.2470, 0.2435, 0.2616),
)

_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_MNIST_HOWTO = (
    "Get the four files from http://yann.lecun.com/exdb/mnist/ (or a mirror; "
    "torchvision.datasets.MNIST(root, download=True) stores them in root/MNIST/raw) "
    "and pass the folder holding them."
)
_CIFAR_HOWTO = (
    "Download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, "
    "unpack it (tar xzf) and pass the folder that contains cifar-10-batches-py."
)

# idx type codes -> (numpy big-endian dtype)
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# ---------------------------------------------------------------------------------------
# MNIST


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (optionally gzipped) into a NumPy array.

    Format (LeCun et al.): two zero bytes, a type code (``0x08`` = unsigned byte), the
    number of dimensions, then each dimension as a big-endian int32, then the data.

    Raises:
        DataError: if the file is missing, has a bad magic number or the wrong size.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"idx file {str(path)!r} does not exist.")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read idx file {str(path)!r}: {e}. Re-download it.") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"{str(path)!r} is not an idx file (magic number {raw[:4].hex() or 'missing'}, "
            "expected 0000080N); the file is corrupt or of another format. Re-download it."
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"idx file {str(path)!r} is truncated inside its header.")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"idx file {str(path)!r} declares shape {shape} ({expected} bytes of data) but "
            f"holds {len(raw) - header} bytes; the file is truncated or corrupt. Re-download it."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _mnist_candidates(root: Path) -> list[Path]:
    return [root, root / "raw", root / "MNIST" / "raw", root / "mnist", root / "MNIST"]


def _find_mnist_file(folder: Path, stem: str) -> Path | None:
    # Some mirrors write "train-images.idx3-ubyte" instead of "train-images-idx3-ubyte".
    alt = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", alt, alt + ".gz"):
        p = folder / name
        if p.is_file():
            return p
    return None


def find_mnist_dir(root: str | Path) -> Path | None:
    """The folder under ``root`` that holds the MNIST idx files, or ``None``."""
    root = Path(root)
    for folder in _mnist_candidates(root):
        if all(_find_mnist_file(folder, s) for s in _MNIST_FILES.values()):
            return folder
    return None


def mnist(
    root: str | Path,
    *,
    flat: bool = False,
    normalize: bool = True,
    num_train: int | None = None,
    num_test: int | None = None,
    dtype: torch.dtype = torch.float32,
    name: str = "mnist",
) -> Split:
    """MNIST from the four idx files in a local folder (never downloads).

    Looks in ``root``, ``root/raw``, ``root/MNIST/raw`` (torchvision's layout),
    ``root/mnist`` and ``root/MNIST``; each file may be gzipped. Any data set in the same
    format (e.g. Fashion-MNIST) loads too; pass ``name=``.

    Args:
        root: folder with the files.
        flat: ``x`` as ``[N, H*W]`` instead of ``[N, 1, H, W]``.
        normalize: scale pixels to ``[0, 1]`` and then standardise with the usual MNIST
            constants :data:`MNIST_MEAN_STD`; if false, pixels are only scaled to
            ``[0, 1]``.
        num_train: keep the first ``num_train`` training images (all if ``None``).
        num_test: keep the first ``num_test`` test images (all if ``None``).
        dtype: floating dtype of ``x``.
        name: name recorded in the data.

    Returns:
        A :class:`Split` (60,000 / 10,000 images of 28x28 for the real MNIST).

    Raises:
        DataError: a file is missing (the message lists where it looked), corrupt, or the
            image and label files disagree.
    """
    root = Path(root)
    folder = find_mnist_dir(root)
    if folder is None:
        _raise_mnist_missing(root)
    out = []
    for part, limit in (("train", num_train), ("test", num_test)):
        images, labels, path = _read_mnist_part(folder, part)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        x = torch.from_numpy(images.copy()).to(dtype).div_(255.0).unsqueeze(1)
        if normalize:
            mean, std = MNIST_MEAN_STD
            x = (x - mean[0]) / std[0]
        if flat:
            x = x.reshape(x.shape[0], -1)
        meta = {
            "source": str(path.parent),
            "part": part,
            "normalize": normalize,
            "mean_std": MNIST_MEAN_STD if normalize else None,
        }
        y = torch.from_numpy(labels.astype(np.int64))
        out.append(TensorData(x, y, name=name, num_classes=10, meta=meta))
    return Split(out[0], out[1])


def _raise_mnist_missing(root: Path) -> None:
    """Raise the :class:`DataError` that lists the missing MNIST files and where it looked."""
    missing = []
    for stem in _MNIST_FILES.values():
        if not any(_find_mnist_file(f, stem) for f in _mnist_candidates(root)):
            missing.append(stem)
    looked = ", ".join(str(f) for f in _mnist_candidates(root))
    raise DataError(
        f"MNIST not found under {str(root)!r}: missing "
        f"{', '.join(missing) or 'a complete set'} (plain or .gz; looked in {looked}). "
        f"{_MNIST_HOWTO}"
    )


def _read_mnist_part(folder: Path, part: str) -> tuple[np.ndarray, np.ndarray, Path]:
    """The checked uint8 images ``[N, H, W]`` and labels ``[N]`` of ``part``, and the path."""
    img_path = _find_mnist_file(folder, _MNIST_FILES[f"{part}_images"])
    lab_path = _find_mnist_file(folder, _MNIST_FILES[f"{part}_labels"])
    assert img_path is not None and lab_path is not None
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{str(img_path)!r} should hold uint8 images [N, H, W] (magic 00000803), "
            f"found {images.dtype} of shape {images.shape}."
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(
            f"{str(lab_path)!r} should hold uint8 labels [N] (magic 00000801), found "
            f"{labels.dtype} of shape {labels.shape}."
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{img_path.name} holds {images.shape[0]} images but {lab_path.name} holds "
            f"{labels.shape[0]} labels; the files come from different downloads."
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{str(lab_path)!r} has label {labels.max()} > 9; file is corrupt.")
    return images, labels, img_path


# ---------------------------------------------------------------------------------------
# CIFAR-10


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays only; refuses any other global."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if module.startswith("numpy.core"):
            # NumPy 2 moved numpy.core to numpy._core; old pickles name the former.
            new = "numpy._core" + module[len("numpy.core") :]
            try:
                return getattr(importlib.import_module(new), name)
            except ImportError:
                pass
        return getattr(importlib.import_module(module), name)


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DataError(
            f"{str(path)!r} is not a CIFAR-10 python batch ({e}); the file is corrupt or of "
            f"another format. {_CIFAR_HOWTO}"
        ) from e
    if not isinstance(obj, dict):
        raise DataError(f"{str(path)!r} should unpickle to a dict, got {type(obj).__name__}.")

    def get(key: str) -> Any:
        for k in (key.encode(), key):
            if k in obj:
                return obj[k]
        raise DataError(f"{str(path)!r} has no {key!r} entry; it is not a CIFAR-10 batch.")

    data = np.asarray(get("data"))
    labels = np.asarray(get("labels"), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{str(path)!r}: 'data' should be uint8 of shape [N, 3072], found {data.dtype} of "
            f"shape {data.shape}."
        )
    if labels.shape != (data.shape[0],):
        raise DataError(
            f"{str(path)!r}: {data.shape[0]} images but {labels.size} labels; file is corrupt."
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{str(path)!r}: labels outside 0..9; file is corrupt.")
    return data.reshape(-1, 3, 32, 32), labels


_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"


def _cifar_candidates(root: Path) -> list[Path]:
    return [root, root / "cifar-10-batches-py"]


def find_cifar10_dir(root: str | Path) -> Path | None:
    """The folder under ``root`` that holds the CIFAR-10 python batches, or ``None``."""
    root = Path(root)
    for folder in _cifar_candidates(root):
        if all((folder / n).is_file() for n in (*_CIFAR_TRAIN, _CIFAR_TEST)):
            return folder
    return None


def cifar10(
    root: str | Path,
    *,
    normalize: bool = True,
    num_train: int | None = None,
    num_test: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Split:
    """CIFAR-10 from the python pickle batches in a local folder (never downloads).

    Looks in ``root`` and ``root/cifar-10-batches-py`` for ``data_batch_1`` ..
    ``data_batch_5`` and ``test_batch``.

    Args:
        root: folder with the batches (or their parent).
        normalize: scale to ``[0, 1]`` and standardise per channel with
            :data:`CIFAR10_MEAN_STD`; otherwise only scale to ``[0, 1]``.
        num_train: keep the first ``num_train`` training images.
        num_test: keep the first ``num_test`` test images.
        dtype: floating dtype of ``x``.

    Returns:
        A :class:`Split` with ``x`` of shape ``[N, 3, 32, 32]`` (50,000 / 10,000 for the
        real data).

    Raises:
        DataError: a batch is missing (the message lists where it looked) or corrupt.
    """
    root = Path(root)
    folder = find_cifar10_dir(root)
    if folder is None:
        names = (*_CIFAR_TRAIN, _CIFAR_TEST)
        missing = [n for n in names if not any((f / n).is_file() for f in _cifar_candidates(root))]
        looked = ", ".join(str(f) for f in _cifar_candidates(root))
        raise DataError(
            f"CIFAR-10 not found under {str(root)!r}: missing "
            f"{', '.join(missing) or 'a complete set'} (looked in {looked}). {_CIFAR_HOWTO}"
        )
    out = []
    for part, files, limit in (
        ("train", _CIFAR_TRAIN, num_train),
        ("test", (_CIFAR_TEST,), num_test),
    ):
        batches = [_load_cifar_batch(folder / n) for n in files]
        images = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        x = torch.from_numpy(images.copy()).to(dtype).div_(255.0)
        if normalize:
            mean = torch.tensor(CIFAR10_MEAN_STD[0], dtype=dtype).view(1, 3, 1, 1)
            std = torch.tensor(CIFAR10_MEAN_STD[1], dtype=dtype).view(1, 3, 1, 1)
            x = (x - mean) / std
        meta = {
            "source": str(folder),
            "part": part,
            "normalize": normalize,
            "mean_std": CIFAR10_MEAN_STD if normalize else None,
        }
        out.append(TensorData(x, torch.from_numpy(labels), "cifar10", 10, meta))
    return Split(out[0], out[1])


# ---------------------------------------------------------------------------------------
# .pt / .npz


def _pair(obj: Any, keys: Sequence[str], path: Path) -> tuple[Any, Any] | None:
    xk, yk = keys
    if xk in obj and yk in obj:
        return obj[xk], obj[yk]
    if (xk in obj) != (yk in obj):
        raise DataError(
            f"{str(path)!r} has {xk!r} or {yk!r} but not both; store inputs and labels together."
        )
    return None


def _to_tensor_data(
    x: Any, y: Any, *, name: str, num_classes: int | None, dtype: torch.dtype, path: Path
) -> TensorData:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if not (x.is_floating_point() or x.dtype in (torch.uint8, torch.int64, torch.int32)):
        raise DataError(f"{str(path)!r}: inputs of dtype {x.dtype} are not supported.")
    x = x.to(dtype)
    if y.is_floating_point():
        y = y.to(dtype)
        k = None
    else:
        y = y.to(torch.long)
        k = num_classes if num_classes is not None else (int(y.max()) + 1 if y.numel() else 0)
    return TensorData(x, y, name=name, num_classes=k, meta={"source": str(path)})


def load_tensor_file(
    path: str | Path,
    *,
    num_classes: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Split:
    """Load a user's data set from a ``.pt`` or ``.npz`` file.

    Accepted contents:

    * ``.pt`` (read with ``torch.load(weights_only=True)``, so no code runs): a dict with
      ``x`` and ``y`` (and optionally ``x_test``, ``y_test``), or a tuple/list
      ``(x, y)`` or ``(x, y, x_test, y_test)``.
    * ``.npz``: arrays ``x`` and ``y`` (and optionally ``x_test``, ``y_test``).

    Integer ``y`` are class labels (``num_classes`` defaults to ``max(y) + 1`` over both
    parts); floating ``y`` are regression targets.

    Returns:
        A :class:`Split`; ``test`` is ``None`` when the file holds no test tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    train = test = None
    if suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise DataError(
                f"cannot read {str(path)!r} with torch.load(weights_only=True): {e}. Save plain "
                "tensors, e.g. torch.save({'x': x, 'y': y}, path)."
            ) from e
        if isinstance(obj, dict):
            train = _pair(obj, ("x", "y"), path)
            test = _pair(obj, ("x_test", "y_test"), path)
        elif isinstance(obj, (tuple, list)) and len(obj) in (2, 4):
            train = (obj[0], obj[1])
            test = (obj[2], obj[3]) if len(obj) == 4 else None
    elif suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                obj = {k: z[k] for k in z.files}
        except Exception as e:  # BadZipFile, zlib.error, EOFError, OSError, ValueError, ...
            raise DataError(
                f"cannot read {str(path)!r} as .npz ({type(e).__name__}: {e}); the file is "
                "truncated, corrupt or not an .npz: write it with numpy.savez(path, x=x, y=y)."
            ) from e
        train = _pair(obj, ("x", "y"), path)
        test = _pair(obj, ("x_test", "y_test"), path)
    else:
        raise ConfigurationError(
            f"unsupported data file {str(path)!r}: use .pt (dict with 'x', 'y') or .npz "
            "(arrays 'x', 'y')."
        )
    if train is None:
        raise DataError(
            f"{str(path)!r} holds no data in a known layout: expected a dict with 'x' and 'y' "
            "(optionally 'x_test', 'y_test') or a tuple (x, y[, x_test, y_test])."
        )
    if num_classes is None:
        ys = [torch.as_tensor(np.asarray(p[1])) for p in (train, test) if p is not None]
        if all(not t.is_floating_point() for t in ys) and all(t.numel() for t in ys):
            num_classes = max(int(t.max()) for t in ys) + 1
    kw = {"num_classes": num_classes, "dtype": dtype, "path": path}
    train_d = _to_tensor_data(*train, name=path.stem, **kw)
    test_d = None if test is None else _to_tensor_data(*test, name=path.stem, **kw)
    if test_d is not None and test_d.input_shape != train_d.input_shape:
        raise DataError(
            f"{str(path)!r}: train inputs have shape {train_d.input_shape} per point but test "
            f"inputs {test_d.input_shape}."
        )
    return Split(train_d, test_d)
