"""Resumable parts of a reproduction (``hesslab reproduce NAME --resume RUN_DIR``).

An experiment's ``run(run_dir, config, progress=None, stages=None)`` wraps each of its
parts in a :class:`Parts`::

    part = Parts(run_dir, stages, tick)
    p1 = part("part1", lambda: _part1(cfg, run_dir, tick))
    p2 = part("part2", lambda: _part2(cfg, run_dir, tick, p1["models"]))

With a :class:`~hesslab.analysis.StageStore` (``stages``), every finished part is saved
atomically as ``<stage>.done.pt``: its return value (models, tensors and arrays
included), the run folder's records as of its end (scalars, claims, tables, figures,
texts, arrays), the global random states (torch, NumPy, ``random``), the progress count
and its wall time. Run again with the same store, a finished part is not re-run: its
records, random states and progress are restored and its return value returned, so the
later parts, and the run's files, are those of an uninterrupted run. A part that was
interrupted runs again from its start (parts are coarse, one may take minutes); the
lines it had appended to ``metrics.jsonl`` are dropped first, so none is duplicated.

Without a store (``stages=None``) a part is just called: nothing is written.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from hesslab.io import atomic_write_text
from hesslab.report.progress import StepProgress
from hesslab.report.run import METRICS_FILE, RunDir

if TYPE_CHECKING:
    from hesslab.analysis import StageStore

__all__ = ["Parts"]

T = TypeVar("T")


def _metrics_lines(run_dir: RunDir) -> list[str]:
    path = run_dir.path / METRICS_FILE
    return path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []


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
            t = time.perf_counter()
            result = fn()
            self.seconds[name] = time.perf_counter() - t
            return result
        lines = _metrics_lines(self.run_dir)
        if self.stages.writable and len(lines) > self._metrics_kept:  # from an interruption
            kept = "".join(lines[: self._metrics_kept])
            atomic_write_text(self.run_dir.path / METRICS_FILE, kept)
        t = time.perf_counter()
        result = fn()
        self.seconds[name] = time.perf_counter() - t
        self._metrics_kept = len(_metrics_lines(self.run_dir))
        record = {
            "result": result,
            "records": self.run_dir.snapshot(),
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),  # noqa: NPY002 (the global state, if used)
                "random": random.getstate(),
            },
            "ticks": None if self.tick is None else self.tick.done,
            "seconds": self.seconds[name],
            "metrics_lines": self._metrics_kept,
        }
        self.stages.run(name, lambda _: record)
        self.run_dir.flush()
        return result

    def _restore(self, name: str, saved: dict[str, Any]) -> Any:
        self.run_dir.restore(saved["records"])
        torch.set_rng_state(saved["rng"]["torch"])
        np.random.set_state(saved["rng"]["numpy"])  # noqa: NPY002
        random.setstate(saved["rng"]["random"])
        self.seconds[name] = saved["seconds"]
        self._metrics_kept = saved["metrics_lines"]
        if self.tick is not None and saved["ticks"] is not None:
            self.tick(f"{name} (from checkpoint)", saved["ticks"] - self.tick.done)
        self.run_dir.flush()
        return saved["result"]
