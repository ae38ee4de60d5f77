"""Atomic writes (temporary file, ``fsync``, ``os.replace``) and solver checkpoint files.

A reader sees either the previous complete file or the new complete file, never a
half-written one, even when the writer raises or the process is killed mid-way (see
:mod:`hesslab.io`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from hesslab.errors import ConfigurationError

__all__ = [
    "Checkpoint",
    "as_checkpoint",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
]


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
