"""The run folder: every number, array, figure and the exact command of one analysis.

A run folder holds::

    config.json     every parameter, seed, device, versions, timestamp, command line
    results.json    scalars with stderr and diagnostics, claims, tables, figure list
    arrays.npz      eigenvalues, densities, (optional) eigenvectors, ...
    metrics.jsonl   time series, one JSON object per line (log_metrics)
    figures/*.png   figures (add_figure)
    report.html     a self-contained page built from the files above

The keys of each file, versioned by the ``schema`` key of ``config.json`` and
``results.json`` (:data:`RUN_SCHEMA`; absent, i.e. version 0, in older folders), are
documented in ``docs/run-folder.md``; in short:

* ``config.json``: ``format``, ``schema``, ``name``, ``title``, ``description``,
  ``created``, ``command`` (list), ``command_line``, ``cwd``, ``seed``, ``device``,
  ``config`` (the parameters), ``environment`` (versions, platform, threads, CUDA).
* ``results.json``: ``format``, ``schema``, ``name``, ``status`` (``running``,
  ``complete``, ``failed``), ``error``, ``started``, ``finished``, ``seconds``,
  ``sections``, ``scalars`` (``{section, name, value, stderr, unit, diagnostics}``),
  ``claims`` (``{section, claim, measured, holds}``), ``tables`` (``{section, name,
  columns, rows, caption}``), ``figures`` (``{section, name, file, caption}``),
  ``texts`` (``{section, text}``), ``results`` (``{section, name, type, fields}``, arrays
  replaced by their ``arrays.npz`` keys) and ``arrays`` (``{name, shape, dtype}``).
  Non-finite numbers are the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
* ``metrics.jsonl``: one JSON object per line, ``{"step", "seconds", <metric>: value,
  ...}``; the monitor adds ``<metric>_err`` errors. No header line: the schema is that of
  ``config.json``.

:func:`hesslab.load_run` reads a folder back as data (pandas when installed).

Every file is written atomically (see :mod:`hesslab.io`), so an interrupted run leaves
complete files only: ``config.json`` from the start, ``results.json``/``arrays.npz`` as
of the last :meth:`RunDir.flush`, figures as they are added. :func:`rebuild_report`
regenerates ``report.html`` from the files alone (``hesslab report RUN_DIR``).

Example::

    with RunDir.create("runs", "demo", config={"seed": 0, "k": 5}, command=sys.argv) as run:
        run.add_text("Spectrum", "Top eigenvalues of the Hessian at the end of training.")
        run.add_result("Spectrum", "top eigenvalues", eigenpairs(H, k=5))
        run.add_figure("Spectrum", "top_eigs", plot_eigenvalues(res.values), "Top-5.")
        run.add_claim("Spectrum", "k outliers", measured="5 outliers", holds=True)
    # leaving the block calls finalize(); an exception marks the run "failed"
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from hesslab.errors import ConfigurationError
from hesslab.io import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_text,
    load_npz,
    read_json,
    read_jsonl,
    save_npz,
    to_jsonable,
    write_json,
)
from hesslab.report.environment import now
from hesslab.report.html import render_report
from hesslab.report.layout import (
    ARRAYS_FILE,
    CONFIG_FILE,
    FIGURES_DIR,
    METRICS_FILE,
    REPORT_FILE,
    RESULTS_FILE,
    check_name,
    check_run_folder,
    clear_run_folder,
    config_record,
    new_run_path,
)
from hesslab.report.plots import DPI
from hesslab.report.records import RESULTS_FORMAT, RUN_SCHEMA, Records, summarise_result
from hesslab.report.scalars import flatten_result, is_array, result_fields, scalar_value

__all__ = ["RunDir", "rebuild_report"]


def _png_bytes(fig: Any) -> bytes:
    """PNG bytes of a matplotlib figure (closed afterwards if pyplot owns it) or bytes."""
    if isinstance(fig, (bytes, bytearray)):
        return bytes(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    if getattr(fig.canvas, "manager", None) is not None:  # created through pyplot
        import matplotlib.pyplot as plt

        plt.close(fig)
    return buf.getvalue()


class RunDir:
    """Writer (and reader) of one run folder. Create with :meth:`create`, read with :meth:`load`.

    Items belong to named *sections*, shown in the report in the order each section was
    first used; within a section the report shows texts, the claims table, figures,
    custom tables and finally a table of every scalar. Adding an item with the same
    section and name as an earlier one replaces it in place.

    Used as a context manager, the run is finalized on exit, with status ``"failed"``
    and the error message when the block raised (the exception still propagates).
    """

    def __init__(self, path: Path, record: dict[str, Any]) -> None:
        """Internal: use :meth:`create` or :meth:`load`."""
        self.path = Path(path)
        self.record = record
        self._start = time.perf_counter()
        self._status = "running"
        self._error: str | None = None
        self._finished: str | None = None
        self._seconds: float | None = None
        self._records = Records()
        self._finalized = False

    # ----------------------------------------------------------------- construction

    @classmethod
    def create(
        cls,
        out: str | os.PathLike[str],
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        command: Sequence[str] | None = None,
        *,
        title: str | None = None,
        description: str | None = None,
        seed: int | None = None,
        device: str | torch.device | None = None,
        overwrite: bool = False,
    ) -> RunDir:
        """Create a run folder and write its ``config.json``.

        Args:
            out: with ``name``, the parent folder of the run (``out/<name>-<YYYYmmdd-HHMMSS>``,
                with ``-2``, ``-3``, ... appended if taken); without ``name``, the run
                folder itself, which must not exist or be empty (see ``overwrite``).
            name: short name of the run, e.g. ``"demo"`` or ``"sagun2017"``
                (letters, digits, ``_.-``).
            config: every parameter of the run (JSON-encodable; other values are stored
                as their ``repr``).
            command: the command line that re-runs this analysis, e.g. ``sys.argv`` with
                the program name; default ``sys.orig_argv``.
            title: heading of the report (default: ``name``).
            description: one-line description shown under the title (Markdown).
            seed: the random seed (default: ``config["seed"]`` if present).
            device: the compute device (default: ``config["device"]`` or ``"cpu"``).
            overwrite: allow ``out`` (without ``name``) to be a non-empty folder; the run
                files in it are replaced.
        """
        config = dict(config or {})
        out = Path(out)
        if name is not None:
            path = new_run_path(out, name)
        else:
            path = out
            clear_run_folder(path, overwrite)
        (path / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
        if command is None:
            command = list(getattr(sys, "orig_argv", sys.argv))
        record = config_record(
            path,
            name,
            config,
            command,
            title=title,
            description=description,
            seed=seed,
            device=device,
        )
        write_json(path / CONFIG_FILE, record)
        return cls(path, record)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunDir:
        """Read a run folder back (complete, checkpointed or interrupted).

        A run interrupted before its first :meth:`flush` loads with no results and
        status ``"incomplete"``. The loaded object can be inspected, extended and
        finalized again.
        """
        path = Path(path)
        check_run_folder(path)
        run = cls(path, read_json(path / CONFIG_FILE))
        results = read_json(path / RESULTS_FILE) if (path / RESULTS_FILE).exists() else {}
        run._status = results.get("status", "incomplete")
        run._error = results.get("error")
        run._finished = results.get("finished")
        run._seconds = results.get("seconds")
        run._records = Records.from_json(results, load_npz(path / ARRAYS_FILE))
        run._finalized = run._status in ("complete", "failed")
        return run

    @classmethod
    def reopen(cls, path: str | os.PathLike[str]) -> RunDir:
        """Continue writing an unfinished run folder (``hesslab analyze --resume``).

        ``config.json`` is kept as it is; the results start empty, to be recorded afresh
        by the resumed job (``results.json``/``arrays.npz`` are replaced at the next
        :meth:`flush`); ``metrics.jsonl`` and ``figures/`` stay.
        """
        path = Path(path)
        check_run_folder(path)
        (path / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
        return cls(path, read_json(path / CONFIG_FILE))

    # ----------------------------------------------------------------- read access

    @property
    def config(self) -> dict[str, Any]:
        """The run's parameters (``config.json``'s ``"config"``)."""
        return self.record.get("config", {})

    @property
    def status(self) -> str:
        """``"running"``, ``"complete"``, ``"failed"`` or ``"incomplete"`` (never flushed)."""
        return self._status

    @property
    def sections(self) -> list[str]:
        """Section names in first-use order."""
        return list(self._records.sections)

    @property
    def scalars(self) -> list[dict[str, Any]]:
        """Scalar records ``{section, name, value, stderr, unit, diagnostics}``."""
        return [dict(s) for s in self._records.scalars]

    @property
    def claims(self) -> list[dict[str, Any]]:
        """Claim records ``{section, claim, measured, holds}``."""
        return [dict(c) for c in self._records.claims]

    @property
    def tables(self) -> list[dict[str, Any]]:
        """Table records ``{section, name, columns, rows, caption}``."""
        return [dict(t) for t in self._records.tables]

    @property
    def figures(self) -> list[dict[str, Any]]:
        """Figure records ``{section, name, file, caption}`` (``file`` relative to the run)."""
        return [dict(f) for f in self._records.figures]

    @property
    def texts(self) -> list[dict[str, Any]]:
        """Text records ``{section, text}``."""
        return [dict(t) for t in self._records.texts]

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """Named arrays (saved to ``arrays.npz``)."""
        return dict(self._records.arrays)

    def scalar(self, section: str, name: str) -> dict[str, Any]:
        """The record of one scalar; raises :class:`KeyError` naming what exists."""
        return self._records.scalar(section, name, self.path)

    def metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` (a torn last line is skipped)."""
        return read_jsonl(self.path / METRICS_FILE)

    # ----------------------------------------------------------------- adding items

    def add_text(self, section: str, text: str) -> None:
        """Add a paragraph of Markdown (CommonMark, raw HTML escaped)."""
        self._records.add_text(section, text)

    def add_scalar(
        self,
        section: str,
        name: str,
        value: Any,
        stderr: Any = None,
        unit: str | None = None,
        **diagnostics: Any,
    ) -> None:
        """Record one number with its standard error, unit and diagnostics.

        Args:
            section: report section.
            name: name of the quantity, e.g. ``"trace"`` or ``"lambda_max"``.
            value: a number (0-d or one-element tensors/arrays are accepted).
            stderr: its standard error, or ``None`` when it has none.
            unit: optional unit.
            **diagnostics: how it was computed, e.g. ``num_matvecs=200, seconds=1.3,
                converged=True, method="hutch++"``.
        """
        self._records.add_scalar(section, name, value, stderr, unit, diagnostics)

    def add_result(
        self,
        section: str,
        name: str,
        result: Any,
        *,
        save_vectors: bool = False,
        max_scalars: int = 32,
    ) -> None:
        """Record a result dataclass (``EigenResult``, ``TraceEstimate``, ...).

        Its scalars come from the rule registered for its type
        (:mod:`hesslab.report.scalars`): one scalar ``name`` with its ``stderr`` for a
        single estimate (``TraceEstimate``, ``LogdetEstimate``), ``name[0]``,
        ``name[1]``, ... with their errors, residuals and ``converged`` flags for an
        array of values (``EigenResult``, ``DiagonalEstimate``; when at most
        ``max_scalars``), ``name.<field>`` per numeric field otherwise
        (``BoundsResult``). Diagnostic fields (``num_matvecs``, ``seconds``, ``method``,
        ``tol``, ...) and scalar entries of ``info`` go into every scalar's diagnostics.

        Array fields are saved as ``"<section>/<name>/<field>"`` in ``arrays.npz``;
        eigenvectors only with ``save_vectors=True`` (they are ``[P, k]``). A summary of
        the result, with arrays replaced by their keys, is kept under ``"results"`` in
        ``results.json``.
        """
        fields = result_fields(result)
        self._records.section(section)
        summary, arrays = summarise_result(fields, f"{section}/{name}", save_vectors=save_vectors)
        for key, array in arrays.items():
            self.add_array(key, array)
        self._records.add_result(section, name, type(result).__name__, summary)
        for s in flatten_result(result, name, fields=fields, max_scalars=max_scalars):
            self.add_scalar(section, s.name, s.value, s.stderr, **s.diagnostics)

    def add_array(self, name: str, array: Any) -> None:
        """Keep an array (tensor, ndarray, list) for ``arrays.npz`` under ``name``."""
        self._records.add_array(name, array)

    def add_figure(self, section: str, name: str, fig: Any, caption: str = "") -> Path:
        """Save a figure as ``figures/<name>.png`` (atomically) and list it in ``section``.

        Args:
            section: report section.
            name: file stem (letters, digits, ``_.-``), unique within the run.
            fig: a :class:`matplotlib.figure.Figure` (closed afterwards if pyplot owns
                it), or PNG bytes.
            caption: caption under the figure (Markdown): say what is shown and what to
                look for.

        Returns:
            The path of the PNG file.
        """
        check_name(name, "figure name")
        self._records.section(section)
        file = f"{FIGURES_DIR}/{name}.png"
        path = atomic_write_bytes(self.path / file, _png_bytes(fig))
        self._records.add_figure(section, name, file, str(caption))
        return path

    def add_claim(self, section: str, claim: str, measured: Any, holds: bool | None = None) -> None:
        """Set a paper's claim beside what this run measured.

        Args:
            section: report section.
            claim: the claim, e.g. ``"the number of outliers equals the number of
                classes (Sagun et al. 2017)"``.
            measured: what was measured, as text (``"3 outliers for k = 3"``) or a number.
            holds: ``True``/``False`` when the measurement confirms/contradicts the
                claim, ``None`` when it is undecided.
        """
        self._records.add_claim(section, claim, measured, holds)

    def add_table(
        self,
        section: str,
        name: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        columns: Sequence[str] | None = None,
        caption: str | None = None,
    ) -> None:
        """Add a table of rows (dicts); columns default to the keys in first-seen order."""
        self._records.add_table(section, name, rows, columns, caption)

    def log_metrics(self, step: int | float, **values: Any) -> None:
        """Append ``{"step", "seconds" (since creation), **values}`` to ``metrics.jsonl``."""
        record = {"step": scalar_value(step, "step"), "seconds": time.perf_counter() - self._start}
        record.update({k: scalar_value(v, k) if not is_array(v) else v for k, v in values.items()})
        append_jsonl(self.path / METRICS_FILE, record)

    # ----------------------------------------------------------------- writing

    def results(self) -> dict[str, Any]:
        """The JSON-ready contents of ``results.json`` as of now."""
        seconds = self._seconds if self._seconds is not None else time.perf_counter() - self._start
        return to_jsonable(
            {
                "format": RESULTS_FORMAT,
                "schema": RUN_SCHEMA,
                "name": self.record.get("name"),
                "status": self._status,
                "error": self._error,
                "started": self.record.get("created"),
                "finished": self._finished,
                "seconds": seconds,
                **self._records.to_json(),
            }
        )

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of everything recorded so far, for :meth:`restore`.

        Sections, scalars, claims, tables, figures, texts, results and arrays (what
        ``results.json`` and ``arrays.npz`` show); ``metrics.jsonl`` and the figure files
        are on disk and not included. Resumable reproductions save it with each finished
        part (:mod:`hesslab.stages`).
        """
        return self._records.snapshot()

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Replace the recorded items by a :meth:`snapshot` (e.g. of a finished part)."""
        self._records.restore(snapshot)

    def flush(self, *, report: bool = False) -> None:
        """Checkpoint: write ``results.json`` and ``arrays.npz`` (and optionally the report)."""
        results = self.results()
        save_npz(self.path / ARRAYS_FILE, **self._records.arrays)  # always there, maybe empty
        write_json(self.path / RESULTS_FILE, results)
        if report:
            self.write_report()

    def write_report(self) -> Path:
        """Write ``report.html`` from the files in the run folder."""
        results = read_json(self.path / RESULTS_FILE) if (self.path / RESULTS_FILE).exists() else {}
        page = render_report(self.record, results, self.path, self.metrics())
        return atomic_write_text(self.path / REPORT_FILE, page)

    def finalize(self, status: str = "complete", error: str | None = None) -> Path:
        """Write ``results.json``, ``arrays.npz`` and ``report.html``; return the report path.

        Args:
            status: ``"complete"`` or ``"failed"``.
            error: the error message of a failed run.
        """
        if status not in ("complete", "failed"):
            raise ConfigurationError(f"status must be 'complete' or 'failed', got {status!r}")
        self._status = status
        self._error = error
        self._finished = now()
        if not self._finalized or self._seconds is None:
            self._seconds = time.perf_counter() - self._start
        self._finalized = True
        self.flush()
        return self.write_report()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.finalize("failed", f"{type(exc).__name__}: {exc}")
        elif not self._finalized:
            self.finalize()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}, status={self._status!r})"


def rebuild_report(path: str | os.PathLike[str]) -> Path:
    """Regenerate ``report.html`` of a run folder from its saved files (``hesslab report``).

    Reads ``config.json``, ``results.json`` (if any), ``metrics.jsonl`` and
    ``figures/*.png``; writes nothing else. Returns the path of the report.
    """
    run = RunDir.load(path)
    return run.write_report()
