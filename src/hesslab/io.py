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
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import enum
import io
import json
import logging
import math
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hesslab.errors import ConfigurationError, DataError

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

logger = logging.getLogger(__name__)

_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which races with threads.
_UMASK = _current_umask()


# --------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------


def _fsync_directory(directory: Path) -> None:
    """Persist a rename on POSIX file systems (best effort; a no-op elsewhere)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _atomic_open(path: str | os.PathLike[str]) -> Iterator[Any]:
    """Yield a binary file that replaces ``path`` atomically when the block exits normally.

    The file is a temporary ``.<name>.<random>.tmp`` next to ``path``; on normal exit it
    is flushed, ``fsync``-ed and renamed over ``path`` with :func:`os.replace` (then the
    folder is ``fsync``-ed). If the block raises, the temporary file is removed and
    ``path`` is left untouched. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates files readable by the owner only; give the usual permissions.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_directory(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | Iterable[bytes]) -> Path:
    """Write ``data`` to ``path`` atomically.

    The bytes go to a temporary file ``.<name>.<random>.tmp`` next to ``path``, which is
    flushed, ``fsync``-ed and renamed over ``path`` with :func:`os.replace`. If anything
    raises before the rename (including an iterable of chunks that raises part-way), the
    temporary file is removed and ``path`` is left untouched. Parent folders are created.

    Args:
        path: destination file.
        data: the content, as ``bytes`` or an iterable of ``bytes`` chunks.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    with _atomic_open(path) as fh:
        if isinstance(data, (bytes, bytearray, memoryview)):
            fh.write(data)
        else:
            for chunk in data:
                fh.write(chunk)
    return Path(path)


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write_bytes`).

    Used for resumable state (solver checkpoints, finished stages of a run): a job killed
    while saving leaves the previous complete file. The object is streamed to the
    temporary file (no in-memory copy of a large Krylov basis). Read it back with
    ``torch.load(path, weights_only=False)``.
    """
    with _atomic_open(path) as fh:
        torch.save(obj, fh)
    return Path(path)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A solver checkpoint file (``checkpoint=`` of the eigen- and density solvers).

    A solver loads the file when it exists (resume), saves its state after every restart
    or probe, and removes the file when it returns normally. With ``writable=False`` it
    only loads: this is how every rank of a ``torchrun`` job resumes from the state that
    rank 0 alone writes (all ranks compute the same Krylov state, so one copy is enough;
    on several nodes the folder must be on a file system every node can read).

    Attributes:
        path: the file.
        writable: save and remove (``True``), or read only.
    """

    path: Path
    writable: bool = True

    def exists(self) -> bool:
        """Whether a saved state is there to resume from."""
        return self.path.exists()

    def load(self, **kwargs: Any) -> Any:
        """``torch.load`` of the saved state (``kwargs`` go to ``torch.load``)."""
        return torch.load(self.path, map_location="cpu", weights_only=False, **kwargs)

    def load_state(self, key: dict[str, Any], what: str, **kwargs: Any) -> Any:
        """The saved state (a dict with ``"key"``), ``None`` when there is no file.

        Raises:
            ConfigurationError: the state was saved under another ``key`` (the message
                lists the differing entries; ``what`` names the solver).
        """
        if not self.exists():
            return None
        state = self.load(**kwargs)
        saved = state.get("key") if isinstance(state, dict) else None
        if saved != key:
            diff = (
                {k: (saved.get(k), v) for k, v in key.items() if saved.get(k) != v}
                if isinstance(saved, dict)
                else saved
            )
            seeded = " and a generator seeded the same way" if "generator" in key else ""
            raise ConfigurationError(
                f"checkpoint {self.path} was written by {what} with other arguments (saved "
                f"vs now: {diff}); call it with the same arguments{seeded}, or remove the "
                "file to start afresh"
            )
        return state

    def save(self, obj: Any) -> None:
        """Save ``obj`` atomically (nothing when read-only)."""
        if self.writable:
            atomic_torch_save(self.path, obj)

    def remove(self) -> None:
        """Delete the file after a normal return (nothing when read-only)."""
        if self.writable:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def derived(self, suffix: str) -> Checkpoint:
        """The checkpoint of a sub-solver: the same file name plus ``suffix``."""
        return Checkpoint(Path(f"{self.path}{suffix}"), self.writable)


def as_checkpoint(checkpoint: str | os.PathLike[str] | Checkpoint | None) -> Checkpoint | None:
    """``None``, a :class:`Checkpoint`, or a writable one for a path."""
    if checkpoint is None or isinstance(checkpoint, Checkpoint):
        return checkpoint
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise ConfigurationError(
            f"checkpoint must be a file path or hesslab.io.Checkpoint, got "
            f"{type(checkpoint).__name__}"
        )
    return Checkpoint(Path(checkpoint))


def atomic_write_text(
    path: str | os.PathLike[str], text: str | Iterable[str], *, encoding: str = "utf-8"
) -> Path:
    """Write ``text`` (a string or an iterable of strings) to ``path`` atomically.

    See :func:`atomic_write_bytes` for the guarantees.
    """
    if isinstance(text, str):
        return atomic_write_bytes(path, text.encode(encoding))
    return atomic_write_bytes(path, (chunk.encode(encoding) for chunk in text))


# --------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------


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
