"""One spectrum measurement (:class:`Measurement`) and the sinks that write it out.

A :class:`~hesslab.train.monitor.SpectrumMonitor` sends every measurement to its sinks:
:class:`JsonlSink` (one JSON line each), :class:`RunDirSink` (a run folder's
``metrics.jsonl``) and :class:`TensorBoardSink`; any object with ``write(measurement)``
(the :class:`Sink` protocol) will do.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hesslab.errors import ConfigurationError
from hesslab.io import append_jsonl

__all__ = ["JsonlSink", "Measurement", "RunDirSink", "Sink", "TensorBoardSink"]


@dataclass(frozen=True)
class Measurement:
    """One measurement of the spectrum.

    Attributes:
        step: the training step it was taken at.
        values: quantity name -> value (see the module docstring for the names).
        errors: quantity name -> error (residual norm for eigenvalues, standard error
            for trace estimates); only for quantities that have one.
        diagnostics: ``matvecs`` (per quantity, incl. ``top_k_cold`` when compared),
            ``converged`` flags, ``seconds`` per quantity, ``warm_started``, notes.
        seconds: wall time of the whole measurement.
    """

    step: int
    values: dict[str, float]
    errors: dict[str, float]
    diagnostics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def record(self) -> dict[str, Any]:
        """A flat JSON-ready dict: ``step``, ``seconds``, values, ``<name>_err`` errors."""
        out: dict[str, Any] = {"step": self.step, "seconds": self.seconds}
        out.update(self.values)
        out.update({f"{k}_err": v for k, v in self.errors.items()})
        return out


# --------------------------------------------------------------------------------- sinks


class Sink(Protocol):
    """Receives every :class:`Measurement`; ``close()`` at the end (optional)."""

    def write(self, measurement: Measurement) -> None:
        """Receive one measurement."""


class JsonlSink:
    """Append each measurement as one JSON line (``Measurement.record()``) to ``path``.

    Lines are written with :func:`hesslab.io.append_jsonl`: each record is one flushed
    write; a torn last line is skipped by :func:`hesslab.io.read_jsonl`. With
    ``diagnostics=True`` the record also holds the diagnostics under ``"diagnostics"``.
    """

    def __init__(self, path: str | os.PathLike[str], *, diagnostics: bool = False) -> None:
        self.path = Path(path)
        self.diagnostics = diagnostics

    def write(self, measurement: Measurement) -> None:
        """Append ``measurement.record()`` (with diagnostics if asked) as one line."""
        rec = measurement.record()
        if self.diagnostics:
            rec["diagnostics"] = measurement.diagnostics
        append_jsonl(self.path, rec)


class RunDirSink:
    """Log each measurement into a :class:`hesslab.report.run.RunDir` (``metrics.jsonl``)."""

    def __init__(self, run_dir: Any) -> None:
        if not hasattr(run_dir, "log_metrics"):
            raise ConfigurationError(
                "RunDirSink needs a hesslab.report.RunDir (with log_metrics); got "
                f"{type(run_dir).__name__}"
            )
        self.run_dir = run_dir

    def write(self, measurement: Measurement) -> None:
        """Log the record at ``measurement.step`` (``seconds`` as ``measure_seconds``)."""
        rec = measurement.record()
        rec.pop("step")
        rec["measure_seconds"] = rec.pop("seconds")
        self.run_dir.log_metrics(measurement.step, **rec)


class TensorBoardSink:
    """Write values (and errors as ``<name>_err``) as TensorBoard scalars.

    Imports :mod:`torch.utils.tensorboard` lazily; raises
    :class:`~hesslab.errors.ConfigurationError` if the ``tensorboard`` package is missing.
    """

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                "TensorBoardSink needs the 'tensorboard' package (pip install tensorboard); "
                "or use JsonlSink/RunDirSink instead"
            ) from exc
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, measurement: Measurement) -> None:
        """Write every finite value as a scalar at ``measurement.step`` and flush."""
        rec = measurement.record()
        step = rec.pop("step")
        for name, value in rec.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        """Close the TensorBoard writer."""
        self.writer.close()


# Short notebook-friendly reprs (key numbers, not the tensors): see hesslab.display.
from hesslab import display as _display  # noqa: E402

_display.attach(Measurement, _display.measurement_summary)
