"""JSON and JSON-lines files: encoding of results (:func:`to_jsonable`), reading, appending.

Non-finite floats are written as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` (see :mod:`hesslab.io`); :func:`as_float` turns them back into floats.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import enum
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hesslab.errors import ConfigurationError, DataError
from hesslab.io.atomic import atomic_write_text

__all__ = [
    "append_jsonl",
    "as_float",
    "read_json",
    "read_jsonl",
    "to_jsonable",
    "write_json",
]

logger = logging.getLogger(__name__)

_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _float(x: float) -> float | str:
    if math.isfinite(x):
        return x
    if math.isnan(x):
        return "NaN"
    return "Infinity" if x > 0 else "-Infinity"


def _complex(z: complex) -> dict[str, float | str]:
    return {"real": _float(z.real), "imag": _float(z.imag)}


def to_jsonable(obj: Any, *, strict: bool = False) -> Any:
    """Convert ``obj`` recursively to values :func:`json.dumps` accepts with ``allow_nan=False``.

    Conversions: tensors and numpy arrays become (nested) lists, 0-d ones scalars;
    numpy/torch scalars become Python numbers; non-finite floats become ``"NaN"``,
    ``"Infinity"``, ``"-Infinity"``; complex numbers ``{"real", "imag"}``; dataclass
    instances a dict of their fields; mappings dicts with string keys; tuples, lists and
    sets lists; paths, dtypes, devices strings; enums their value; dates ISO strings.

    Args:
        obj: the value to convert.
        strict: if true, raise :class:`~hesslab.errors.ConfigurationError` on a value of
            any other type; otherwise write its ``repr`` (handy for configs holding
            callables or classes).
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, float, complex)):
        return _number_jsonable(obj)
    for convert in (_array_jsonable, _container_jsonable):
        out = convert(obj, strict)
        if out is not _UNHANDLED:
            return out
    return _other_jsonable(obj, strict)


_UNHANDLED = object()  # what a converter below returns for a type it does not handle


def _number_jsonable(obj: int | float | complex) -> Any:
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return _float(obj)
    return _complex(obj)


def _array_jsonable(obj: Any, strict: bool) -> Any:
    """NumPy scalars, tensors and arrays."""
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item(), strict=strict)
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.is_complex():
            return to_jsonable(t.resolve_conj().numpy(), strict=strict)
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        return to_jsonable(t.tolist(), strict=strict)
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return [to_jsonable(x, strict=strict) for x in obj.tolist()]
        return to_jsonable(obj.tolist(), strict=strict)
    return _UNHANDLED


def _container_jsonable(obj: Any, strict: bool) -> Any:
    """Dataclass instances, mappings, sequences and sets."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_jsonable(getattr(obj, f.name), strict=strict)
            for f in dataclasses.fields(obj)
        }
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, strict=strict) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(x, strict=strict) for x in obj]
    if isinstance(obj, (set, frozenset)):
        items = [to_jsonable(x, strict=strict) for x in obj]
        with contextlib.suppress(TypeError):
            items.sort()
        return items
    return _UNHANDLED


def _other_jsonable(obj: Any, strict: bool) -> Any:
    """Enums, paths, dtypes, devices, dates; anything else its ``repr`` (or an error)."""
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value, strict=strict)
    if isinstance(obj, (os.PathLike, torch.dtype, torch.device)):
        return os.fspath(obj) if isinstance(obj, os.PathLike) else str(obj)
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if strict:
        raise ConfigurationError(
            f"cannot encode a value of type {type(obj).__name__} as JSON; convert it to a "
            "number, string, list, dict, tensor or array first"
        )
    return repr(obj)


def write_json(
    path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, strict: bool = False
) -> Path:
    """Encode ``obj`` with :func:`to_jsonable` and write it to ``path`` atomically.

    The output is strict JSON (no bare ``NaN``), UTF-8, with a trailing newline.
    """
    text = json.dumps(
        to_jsonable(obj, strict=strict), indent=indent, ensure_ascii=False, allow_nan=False
    )
    return atomic_write_text(path, text + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, raising :class:`~hesslab.errors.DataError` with the path on failure."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{path} does not exist; check the path (is it a run folder?)") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); the file is corrupt") from exc


def as_float(value: Any) -> float:
    """Turn a JSON number, or ``"NaN"``/``"Infinity"``/``"-Infinity"``, into a float.

    ``None`` becomes ``nan``.
    """
    if value is None:
        return math.nan
    if isinstance(value, str):
        if value in _NONFINITE:
            return _NONFINITE[value]
        return float(value)
    return float(value)


# --------------------------------------------------------------------------------------
# JSON lines
# --------------------------------------------------------------------------------------


def append_jsonl(
    path: str | os.PathLike[str], record: Mapping[str, Any], *, fsync: bool = False
) -> None:
    """Append ``record`` as one JSON line to ``path`` and flush it.

    If the file's last line was torn (a crash mid-append left no trailing newline), a
    newline is written first so the new record stays parsable on its own line.

    Args:
        path: the ``.jsonl`` file (created with its parents if missing).
        record: a mapping; values are converted with :func:`to_jsonable`.
        fsync: also ``fsync`` after the write (slower; for rare, precious records).
    """
    path = Path(path)
    line = json.dumps(to_jsonable(record), ensure_ascii=False, allow_nan=False)
    if "\n" in line:  # pragma: no cover - json.dumps without indent never emits one
        raise DataError("a JSON-lines record must encode to a single line")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab+") as fh:
        fh.seek(0, os.SEEK_END)
        prefix = b""
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                prefix = b"\n"
        fh.write(prefix + line.encode("utf-8") + b"\n")
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read the records of a JSON-lines file written by :func:`append_jsonl`.

    Blank lines are skipped. A line that does not parse is a torn write from an
    interrupted run: it is skipped (silently when it is the last line, with a logged
    warning otherwise). A missing file reads as no records.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    records: list[dict[str, Any]] = []
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if i != last:
                logger.warning("%s: skipping unparsable line %d (torn write?)", path, i + 1)
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            logger.warning("%s: skipping line %d, which is not a JSON object", path, i + 1)
    return records
