"""Named arrays: conversion to numpy and atomic, pickle-free ``.npz`` files."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hesslab.errors import DataError
from hesslab.io.atomic import atomic_write_bytes

__all__ = ["load_npz", "save_npz", "to_numpy"]


def to_numpy(array: Any) -> np.ndarray:
    """Convert a tensor, array, number or (nested) list to a numpy array on the CPU.

    bfloat16 tensors are widened to float32 (numpy has no bfloat16).
    """
    if isinstance(array, torch.Tensor):
        t = array.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.resolve_conj().resolve_neg().numpy()
    return np.asarray(array)


def save_npz(path: str | os.PathLike[str], *, compress: bool = True, **arrays: Any) -> Path:
    """Save named arrays (tensors, arrays, lists) to an ``.npz`` file atomically.

    Readable with ``numpy.load(path)`` or :func:`load_npz`. Object arrays are refused
    (they would need pickling); names may contain ``/``.

    Args:
        path: destination, conventionally ending in ``.npz``.
        compress: deflate the members (``numpy.savez_compressed``-compatible).
        **arrays: name -> array.
    """
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method, allowZip64=True) as zf:
        for name, value in arrays.items():
            arr = to_numpy(value)
            if arr.dtype == object:
                raise DataError(
                    f"array {name!r} has dtype object; pass numbers (a tensor or a numeric "
                    "numpy array) so it can be saved without pickling"
                )
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` file into memory (no pickles); missing file -> ``{}``."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc}); the file is corrupt") from exc
