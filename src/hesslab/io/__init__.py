"""Crash-safe file output and JSON encoding of results.

Every writer here is *atomic*: the data goes to a temporary file in the destination's
directory, is flushed and ``fsync``-ed, and then ``os.replace``-d over the destination.
A reader therefore sees either the previous complete file or the new complete file, never
a half-written one, even when the writer raises or the process is killed mid-way.
The one exception is :func:`append_jsonl`, which appends a line to a log; its reader
:func:`read_jsonl` skips a torn (unparsable) line instead.

JSON encoding (:func:`to_jsonable`, :func:`write_json`) converts torch tensors, numpy
arrays and scalars, dataclasses (including the frozen results of :mod:`hesslab.linalg`),
paths, dtypes and devices to plain JSON values. **Non-finite floats are written as the
strings** ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (the spellings of
``float(...)``), so files stay valid JSON (``json.loads`` with ``allow_nan=False`` would
reject bare ``NaN``) while the information survives; :func:`as_float` turns such a value
back into a Python float.

Layout: :mod:`hesslab.io.atomic` (atomic writes, :class:`Checkpoint`),
:mod:`hesslab.io.jsonfiles` (JSON and JSON lines), :mod:`hesslab.io.arrays` (``.npz``);
every name is importable from :mod:`hesslab.io` itself.
"""

from __future__ import annotations

from hesslab.io.arrays import load_npz, save_npz, to_numpy
from hesslab.io.atomic import _UMASK as _UMASK  # file modes in tests compare with it
from hesslab.io.atomic import (
    Checkpoint,
    as_checkpoint,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
)
from hesslab.io.jsonfiles import (
    append_jsonl,
    as_float,
    read_json,
    read_jsonl,
    to_jsonable,
    write_json,
)

__all__ = [
    "Checkpoint",
    "append_jsonl",
    "as_checkpoint",
    "as_float",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "load_npz",
    "read_json",
    "read_jsonl",
    "save_npz",
    "to_jsonable",
    "to_numpy",
    "write_json",
]
