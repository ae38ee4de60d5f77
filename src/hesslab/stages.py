"""Resumable jobs: finished stages saved to disk, and the parts of a reproduction.

Two layers, used by :func:`hesslab.analyze`, every reproduction and the CLI's
``--resume``:

* :class:`StageStore`: a folder of finished *stages* (``<stage>.done.pt``, the result
  and the job's key) and of solver checkpoints (``<stage>.pt``, a
  :class:`~hesslab.io.Checkpoint`). ``store.run("eig_top", fn)`` returns the saved
  result, or calls ``fn(checkpoint)`` and saves what it returns.
* :class:`Parts`: the coarse parts of a reproduction
  (``hesslab reproduce NAME --resume RUN_DIR``), each saved in a :class:`StageStore`
  with the run folder's records, the global random states and the progress count, so
  that a resumed run writes the files of an uninterrupted one.

An experiment's ``run(run_dir, config, progress=None, stages=None)`` wraps each of its
parts in a :class:`Parts`::

    part = Parts(run_dir, stages, tick)
    p1 = part("part1", lambda: _part1(cfg, run_dir, tick))
    p2 = part("part2", lambda: _part2(cfg, run_dir, tick, p1["models"]))

With a store (``stages``), every finished part is saved atomically as
``<stage>.done.pt``: its return value (models, tensors and arrays included), the run
folder's records as of its end (scalars, claims, tables, figures, texts, arrays), the
global random states (torch, NumPy, ``random``), the progress count and its wall time.
Run again with the same store, a finished part is not re-run: its records, random states
and progress are restored and its return value returned, so the later parts, and the
run's files, are those of an uninterrupted run. A part that was interrupted runs again
from its start (parts are coarse, one may take minutes); the lines it had appended to
``metrics.jsonl`` are dropped first, so none is duplicated. Without a store
(``stages=None``) a part is just called: nothing is written.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from hesslab.errors import ConfigurationError
from hesslab.io import Checkpoint, atomic_torch_save, atomic_write_text
from hesslab.report.folder import RunDir
from hesslab.report.layout import METRICS_FILE
from hesslab.report.progress import StepProgress

__all__ = ["Parts", "StageStore"]

T = TypeVar("T")


class StageStore:
    """Finished stages and solver checkpoints of one resumable job, in one folder.

    ``store.run("eig_top", lambda ckpt: eigenpairs(..., checkpoint=ckpt))`` returns the
    saved result when ``<folder>/eig_top.done.pt`` exists; otherwise it calls the
    function with the solver checkpoint ``<folder>/eig_top.pt`` (a
    :class:`~hesslab.io.Checkpoint`, or ``None`` for a store without folder), saves the
    result atomically and returns it. Every saved stage carries ``key`` (what identifies
    the job, e.g. its configuration); a stage saved under another key raises
    :class:`~hesslab.errors.ConfigurationError`.

    Args:
        folder: where the files go (created when needed); ``None`` stores nothing.
        key: JSON-like description of the job; compared on every load.
        writable: ``False`` reads finished stages and solver checkpoints but never writes
            or removes anything: the non-zero ranks of a torchrun job, which compute the
            same stages as rank 0 and resume from what rank 0 wrote.
    """

    def __init__(
        self, folder: str | os.PathLike[str] | None, key: Any = None, *, writable: bool = True
    ) -> None:
        self.folder = None if folder is None else Path(folder)
        self.key = key
        self.writable = writable

    def checkpoint(self, stage: str) -> Checkpoint | None:
        """The solver checkpoint of ``stage`` (``None`` without folder)."""
        if self.folder is None:
            return None
        if self.writable:
            self.folder.mkdir(parents=True, exist_ok=True)
        return Checkpoint(self.folder / f"{stage}.pt", self.writable)

    def load(self, stage: str) -> tuple[bool, Any]:
        """``(True, result)`` when ``stage`` was finished, else ``(False, None)``."""
        if self.folder is None or not (self.folder / f"{stage}.done.pt").exists():
            return False, None
        path = self.folder / f"{stage}.done.pt"
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved.get("key") != self.key:
            raise ConfigurationError(
                f"{path} belongs to a job with another configuration; resume with the "
                f"configuration it was written with, or delete {self.folder} to start afresh"
            )
        return True, saved["result"]

    def run(self, stage: str, fn: Callable[[Checkpoint | None], T]) -> T:
        """The result of ``stage``: loaded when finished before, else computed and saved."""
        done, result = self.load(stage)
        if done:
            return result
        result = fn(self.checkpoint(stage))
        if self.folder is not None and self.writable:
            atomic_torch_save(self.folder / f"{stage}.done.pt", {"key": self.key, "result": result})
        return result


def _metrics_lines(run_dir: RunDir) -> list[str]:
    path = run_dir.path / METRICS_FILE
    return path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []


def _rng_states() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the global state, if used)
        "random": random.getstate(),
    }


def _set_rng_states(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])  # noqa: NPY002
    random.setstate(rng["random"])


class Parts:
    """Runs the parts of one reproduction, each loaded from ``stages`` when it finished before.

    Args:
        run_dir: the run folder the parts write into.
        stages: where finished parts are saved (normally ``RUN_DIR/checkpoints`` with the
            run's config as key); ``None``: run every part, save nothing.
        tick: the experiment's progress counter; a loaded part advances it by the steps
            the part counted when it ran.

    Attributes:
        seconds: ``{part: wall time in seconds}`` of every part so far (for a loaded part,
            the time it took when it ran).
    """

    def __init__(
        self, run_dir: RunDir, stages: StageStore | None, tick: StepProgress | None = None
    ) -> None:
        self.run_dir = run_dir
        self.stages = stages
        self.tick = tick
        self.seconds: dict[str, float] = {}
        self._metrics_kept = 0  # metrics.jsonl lines written by the parts finished so far

    def __call__(self, name: str, fn: Callable[[], T]) -> T:
        """The return value of part ``name``: loaded when it finished before, else ``fn()``.

        Args:
            name: the part's stage name, unique within the run (letters, digits, ``_.-``).
            fn: runs the part (writing into the run folder) and returns its value.

        Raises:
            ConfigurationError: the saved part belongs to a run with another config.
        """
        done, saved = (False, None) if self.stages is None else self.stages.load(name)
        if done:
            return self._restore(name, saved)
        if self.stages is None:
            return self._timed(name, fn)
        self._drop_interrupted_metrics(self.stages)
        result = self._timed(name, fn)
        self._metrics_kept = len(_metrics_lines(self.run_dir))
        record = {
            "result": result,
            "records": self.run_dir.snapshot(),
            "rng": _rng_states(),
            "ticks": None if self.tick is None else self.tick.done,
            "seconds": self.seconds[name],
            "metrics_lines": self._metrics_kept,
        }
        self.stages.run(name, lambda _: record)
        self.run_dir.flush()
        return result

    def _timed(self, name: str, fn: Callable[[], T]) -> T:
        t = time.perf_counter()
        result = fn()
        self.seconds[name] = time.perf_counter() - t
        return result

    def _drop_interrupted_metrics(self, stages: StageStore) -> None:
        """Drop the ``metrics.jsonl`` lines an interrupted part had appended."""
        lines = _metrics_lines(self.run_dir)
        if stages.writable and len(lines) > self._metrics_kept:
            kept = "".join(lines[: self._metrics_kept])
            atomic_write_text(self.run_dir.path / METRICS_FILE, kept)

    def _restore(self, name: str, saved: dict[str, Any]) -> Any:
        self.run_dir.restore(saved["records"])
        _set_rng_states(saved["rng"])
        self.seconds[name] = saved["seconds"]
        self._metrics_kept = saved["metrics_lines"]
        if self.tick is not None and saved["ticks"] is not None:
            self.tick(f"{name} (from checkpoint)", saved["ticks"] - self.tick.done)
        self.run_dir.flush()
        return saved["result"]
