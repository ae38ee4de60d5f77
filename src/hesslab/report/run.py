"""Run folders: every number, array, figure and the exact command of one analysis.

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

import copy
import dataclasses
import datetime as _dt
import io
import os
import platform
import re
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from hesslab.errors import ConfigurationError, DataError
from hesslab.io import (
    append_jsonl,
    as_float,
    atomic_write_bytes,
    atomic_write_text,
    load_npz,
    read_json,
    read_jsonl,
    save_npz,
    to_jsonable,
    to_numpy,
    write_json,
)
from hesslab.report.html import render_report
from hesslab.report.plots import DPI

__all__ = ["RESULTS_FORMAT", "RUN_SCHEMA", "RunDir", "rebuild_report"]

RESULTS_FORMAT = "hesslab-run/1"
"""Value of the ``format`` key of ``config.json`` and ``results.json``."""

RUN_SCHEMA = 1
"""Version of the run-folder schema, the ``schema`` key of ``config.json`` and
``results.json`` (it covers ``metrics.jsonl`` too). Folders written before the key
existed read as version 0, which has the same layout without the key."""

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
ARRAYS_FILE = "arrays.npz"
METRICS_FILE = "metrics.jsonl"
REPORT_FILE = "report.html"
FIGURES_DIR = "figures"

_RUN_FILES = (CONFIG_FILE, RESULTS_FILE, ARRAYS_FILE, METRICS_FILE, REPORT_FILE)

# Result fields that describe how a number was computed rather than being one.
_DIAGNOSTIC_FIELDS = (
    "num_matvecs",
    "seconds",
    "method",
    "which",
    "tol",
    "norm_estimate",
    "num_restarts",
    "num_steps",
    "rank",
    "shift",
    "dimension",
    "peak_memory_bytes",
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _is_array(x: Any) -> bool:
    return (isinstance(x, torch.Tensor) and x.ndim > 0) or (
        isinstance(x, np.ndarray) and x.ndim > 0
    )


def _scalar(x: Any, what: str) -> Any:
    """A Python bool/int/float/str/None from a number-like value."""
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (torch.Tensor, np.ndarray)):
        numel = x.size if isinstance(x, np.ndarray) else x.numel()
        if numel == 1:
            return x.item()
        raise ConfigurationError(
            f"{what} must be a single number, got an array of shape {tuple(x.shape)}; "
            "use add_array (or add_result) for arrays"
        )
    return x


def _decode_nonfinite(x: Any) -> Any:
    """``"NaN"``/``"Infinity"``/``"-Infinity"`` (how JSON holds them) back to floats."""
    return as_float(x) if isinstance(x, str) and x in ("NaN", "Infinity", "-Infinity") else x


def _hesslab_version() -> str:
    try:
        from importlib.metadata import version

        return version("hesslab")
    except Exception:  # not installed as a distribution (e.g. run from a source tree)
        import hesslab

        return getattr(hesslab, "__version__", "unknown")


def _environment(device: str) -> dict[str, Any]:
    env: dict[str, Any] = {
        "hesslab": _hesslab_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch_num_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        try:
            env["device_name"] = torch.cuda.get_device_name(torch.device(device))
        except Exception:  # a bad index: record what we can
            env["device_name"] = None
    elif device == "cpu":
        env["device_name"] = platform.processor() or platform.machine()
    return env


def _result_fields(result: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    if isinstance(result, Mapping):
        return dict(result)
    if hasattr(result, "__dict__"):
        return {k: v for k, v in vars(result).items() if not k.startswith("_")}
    raise ConfigurationError(
        f"add_result needs a dataclass, mapping or object with attributes, got "
        f"{type(result).__name__}; use add_scalar or add_array instead"
    )


#: The attributes that hold a run's records (see :meth:`RunDir.snapshot`).
_RECORD_ATTRS = (
    "_sections",
    "_scalars",
    "_claims",
    "_tables",
    "_figures",
    "_texts",
    "_results",
    "_arrays",
)


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
        self._sections: list[str] = []
        self._scalars: list[dict[str, Any]] = []
        self._claims: list[dict[str, Any]] = []
        self._tables: list[dict[str, Any]] = []
        self._figures: list[dict[str, Any]] = []
        self._texts: list[dict[str, Any]] = []
        self._results: list[dict[str, Any]] = []
        self._arrays: dict[str, np.ndarray] = {}
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
            description: one-line description shown under the title (Markdown subset).
            seed: the random seed (default: ``config["seed"]`` if present).
            device: the compute device (default: ``config["device"]`` or ``"cpu"``).
            overwrite: allow ``out`` (without ``name``) to be a non-empty folder; the run
                files in it are replaced.
        """
        config = dict(config or {})
        out = Path(out)
        if name is not None:
            if not _NAME_RE.match(name):
                raise ConfigurationError(
                    f"run name {name!r} may only contain letters, digits, '_', '.' and '-' "
                    "(and must start with a letter or digit)"
                )
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            path = out / f"{name}-{stamp}"
            n = 2
            while path.exists():
                path, n = out / f"{name}-{stamp}-{n}", n + 1
        else:
            path = out
            if path.exists() and not path.is_dir():
                raise ConfigurationError(f"{path} is a file; choose a folder for the run")
            if path.is_dir() and any(path.iterdir()):
                if not overwrite:
                    raise ConfigurationError(
                        f"{path} exists and is not empty; choose a new output folder or "
                        "allow overwriting it"
                    )
                for file in _RUN_FILES:
                    (path / file).unlink(missing_ok=True)
                figures = path / FIGURES_DIR
                if figures.is_dir():
                    for png in figures.glob("*.png"):
                        png.unlink()
        (path / FIGURES_DIR).mkdir(parents=True, exist_ok=True)

        if command is None:
            command = list(getattr(sys, "orig_argv", sys.argv))
        if seed is None and isinstance(config.get("seed"), int):
            seed = config["seed"]
        device_str = str(device if device is not None else config.get("device") or "cpu")
        record = {
            "format": RESULTS_FORMAT,
            "schema": RUN_SCHEMA,
            "name": name or path.name,
            "title": title or name or path.name,
            "description": description,
            "created": _now(),
            "command": [str(c) for c in command],
            "command_line": shlex.join(str(c) for c in command),
            "cwd": os.getcwd(),
            "seed": seed,
            "device": device_str,
            "config": to_jsonable(config),
            "environment": _environment(device_str),
        }
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
        if not (path / CONFIG_FILE).exists():
            raise DataError(
                f"{path} is not a hesslab run folder (no {CONFIG_FILE}); pass the folder a "
                "hesslab command wrote"
            )
        run = cls(path, read_json(path / CONFIG_FILE))
        results = read_json(path / RESULTS_FILE) if (path / RESULTS_FILE).exists() else {}
        run._status = results.get("status", "incomplete")
        run._error = results.get("error")
        run._finished = results.get("finished")
        run._seconds = results.get("seconds")
        run._sections = list(results.get("sections", []))
        run._scalars = [
            {
                **s,
                "value": _decode_nonfinite(s.get("value")),
                "stderr": _decode_nonfinite(s.get("stderr")),
            }
            for s in results.get("scalars", [])
        ]
        run._claims = list(results.get("claims", []))
        run._tables = list(results.get("tables", []))
        run._figures = list(results.get("figures", []))
        run._texts = list(results.get("texts", []))
        run._results = list(results.get("results", []))
        run._arrays = load_npz(path / ARRAYS_FILE)
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
        if not (path / CONFIG_FILE).exists():
            raise DataError(
                f"{path} is not a hesslab run folder (no {CONFIG_FILE}); pass the folder a "
                "hesslab command wrote"
            )
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
        return list(self._sections)

    @property
    def scalars(self) -> list[dict[str, Any]]:
        """Scalar records ``{section, name, value, stderr, unit, diagnostics}``."""
        return [dict(s) for s in self._scalars]

    @property
    def claims(self) -> list[dict[str, Any]]:
        """Claim records ``{section, claim, measured, holds}``."""
        return [dict(c) for c in self._claims]

    @property
    def tables(self) -> list[dict[str, Any]]:
        """Table records ``{section, name, columns, rows, caption}``."""
        return [dict(t) for t in self._tables]

    @property
    def figures(self) -> list[dict[str, Any]]:
        """Figure records ``{section, name, file, caption}`` (``file`` relative to the run)."""
        return [dict(f) for f in self._figures]

    @property
    def texts(self) -> list[dict[str, Any]]:
        """Text records ``{section, text}``."""
        return [dict(t) for t in self._texts]

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """Named arrays (saved to ``arrays.npz``)."""
        return dict(self._arrays)

    def scalar(self, section: str, name: str) -> dict[str, Any]:
        """The record of one scalar; raises :class:`KeyError` naming what exists."""
        for s in self._scalars:
            if s["section"] == section and s["name"] == name:
                return dict(s)
        known = ", ".join(f"{s['section']}/{s['name']}" for s in self._scalars) or "none"
        raise KeyError(f"no scalar {section}/{name} in {self.path}; known: {known}")

    def metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` (a torn last line is skipped)."""
        return read_jsonl(self.path / METRICS_FILE)

    # ----------------------------------------------------------------- adding items

    def _section(self, section: str) -> str:
        if not isinstance(section, str) or not section.strip():
            raise ConfigurationError(f"section must be a non-empty string, got {section!r}")
        if section not in self._sections:
            self._sections.append(section)
        return section

    @staticmethod
    def _upsert(items: list[dict[str, Any]], record: dict[str, Any], *keys: str) -> None:
        for i, item in enumerate(items):
            if all(item.get(k) == record[k] for k in keys):
                items[i] = record
                return
        items.append(record)

    def add_text(self, section: str, text: str) -> None:
        """Add a paragraph (a small Markdown subset, see :func:`markdown_to_html`)."""
        self._texts.append({"section": self._section(section), "text": str(text)})

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
        record = {
            "section": self._section(section),
            "name": str(name),
            "value": _scalar(value, f"value of {name!r}"),
            "stderr": _scalar(stderr, f"stderr of {name!r}"),
            "unit": unit,
            "diagnostics": to_jsonable(diagnostics),
        }
        self._upsert(self._scalars, record, "section", "name")

    def add_result(
        self,
        section: str,
        name: str,
        result: Any,
        *,
        save_vectors: bool = False,
        max_scalars: int = 32,
    ) -> None:
        """Record a result dataclass (``EigenResult``, ``TraceEstimate``, ...), duck-typed.

        * A result with a scalar ``value`` (``TraceEstimate``, ``LogdetEstimate``)
          becomes one scalar ``name`` with its ``stderr``.
        * A result with an array ``values`` (``EigenResult``, ``DiagonalEstimate``)
          becomes scalars ``name[0]``, ``name[1]``, ... (when at most ``max_scalars``),
          each with its ``stderr`` entry, ``residual_norm`` and ``converged`` flag.
        * Any other result (``BoundsResult``) becomes one scalar ``name.<field>`` per
          numeric field, with ``<field>_stderr`` as its error and ``<field>_interval``
          in its diagnostics.

        Diagnostic fields (``num_matvecs``, ``seconds``, ``method``, ``tol``, ...) and
        scalar entries of ``info`` go into every scalar's diagnostics. Array fields are
        saved as ``"<section>/<name>/<field>"`` in ``arrays.npz``; eigenvectors only
        with ``save_vectors=True`` (they are ``[P, k]``). A summary of the result, with
        arrays replaced by their keys, is kept under ``"results"`` in ``results.json``.
        """
        fields = _result_fields(result)
        self._section(section)
        diag: dict[str, Any] = {}
        for key in _DIAGNOSTIC_FIELDS:
            if key in fields and not _is_array(fields[key]):
                diag[key] = fields[key]
        info = fields.get("info")
        if isinstance(info, Mapping):
            for key, val in info.items():
                val = _scalar(val, key) if not _is_array(val) else None
                if isinstance(val, (bool, int, float, str)) and str(key) not in diag:
                    diag[str(key)] = val

        summary: dict[str, Any] = {}
        for key, val in fields.items():
            if key == "info":
                continue
            if _is_array(val):
                if key == "vectors" and not save_vectors:
                    summary[key] = {"shape": list(val.shape), "saved": False}
                    continue
                array_key = f"{section}/{name}/{key}"
                self.add_array(array_key, val)
                summary[key] = {"array": array_key, "shape": list(val.shape)}
            elif isinstance(val, (torch.Tensor, np.ndarray)):
                summary[key] = _scalar(val, key)
            else:
                summary[key] = val
        record = {
            "section": section,
            "name": str(name),
            "type": type(result).__name__,
            "fields": to_jsonable(summary),
        }
        self._upsert(self._results, record, "section", "name")

        value = fields.get("value")
        values = fields.get("values")
        if value is not None and not _is_array(value):
            self.add_scalar(section, name, value, fields.get("stderr"), **diag)
        elif values is not None and _is_array(values):
            v = to_numpy(values).reshape(-1)
            if v.size > max_scalars:
                return
            stderr = fields.get("stderr")
            err = to_numpy(stderr).reshape(-1) if _is_array(stderr) else None
            res = fields.get("residual_norms")
            res = to_numpy(res).reshape(-1) if _is_array(res) else None
            conv = fields.get("converged")
            conv = to_numpy(conv).reshape(-1) if _is_array(conv) else None
            for i, vi in enumerate(v):
                d = dict(diag)
                if res is not None and i < res.size:
                    d["residual_norm"] = res[i]
                if conv is not None and i < conv.size:
                    d["converged"] = bool(conv[i])
                e = err[i] if err is not None and i < err.size else None
                self.add_scalar(section, f"{name}[{i}]", vi, e, **d)
        else:
            for key, val in fields.items():
                if key in diag or key.endswith(("_stderr", "_interval")) or key == "info":
                    continue
                if isinstance(val, bool) or not isinstance(val, (int, float, np.number)):
                    continue
                d = dict(diag)
                interval = fields.get(f"{key}_interval")
                if interval is not None:
                    d["interval"] = interval
                self.add_scalar(section, f"{name}.{key}", val, fields.get(f"{key}_stderr"), **d)

    def add_array(self, name: str, array: Any) -> None:
        """Keep an array (tensor, ndarray, list) for ``arrays.npz`` under ``name``."""
        if not isinstance(name, str) or not name or name.endswith(".npy"):
            raise ConfigurationError(f"array name must be a non-empty string, got {name!r}")
        arr = np.array(to_numpy(array), copy=True)
        if arr.dtype == object:
            raise DataError(f"array {name!r} is not numeric (dtype object); pass numbers")
        self._arrays[name] = arr

    def add_figure(self, section: str, name: str, fig: Any, caption: str = "") -> Path:
        """Save a figure as ``figures/<name>.png`` (atomically) and list it in ``section``.

        Args:
            section: report section.
            name: file stem (letters, digits, ``_.-``), unique within the run.
            fig: a :class:`matplotlib.figure.Figure` (closed afterwards if pyplot owns
                it), or PNG bytes.
            caption: caption under the figure (Markdown subset): say what is shown and
                what to look for.

        Returns:
            The path of the PNG file.
        """
        if not _NAME_RE.match(name):
            raise ConfigurationError(
                f"figure name {name!r} may only contain letters, digits, '_', '.' and '-'"
            )
        self._section(section)
        if isinstance(fig, (bytes, bytearray)):
            data = bytes(fig)
        else:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
            data = buf.getvalue()
            if getattr(fig.canvas, "manager", None) is not None:  # created through pyplot
                import matplotlib.pyplot as plt

                plt.close(fig)
        file = f"{FIGURES_DIR}/{name}.png"
        path = atomic_write_bytes(self.path / file, data)
        record = {"section": section, "name": name, "file": file, "caption": str(caption)}
        self._upsert(self._figures, record, "name")
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
        if holds is not None:
            holds = bool(_scalar(holds, "holds"))
        measured = measured if isinstance(measured, str) else _scalar(measured, "measured")
        self._claims.append(
            {
                "section": self._section(section),
                "claim": str(claim),
                "measured": to_jsonable(measured),
                "holds": holds,
            }
        )

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
        rows = [to_jsonable(dict(r)) for r in rows]
        if columns is None:
            cols: list[str] = []
            for r in rows:
                cols.extend(k for k in r if k not in cols)
        else:
            cols = [str(c) for c in columns]
        record = {
            "section": self._section(section),
            "name": str(name),
            "columns": cols,
            "rows": rows,
            "caption": caption,
        }
        self._upsert(self._tables, record, "section", "name")

    def log_metrics(self, step: int | float, **values: Any) -> None:
        """Append ``{"step", "seconds" (since creation), **values}`` to ``metrics.jsonl``."""
        record = {"step": _scalar(step, "step"), "seconds": time.perf_counter() - self._start}
        record.update({k: _scalar(v, k) if not _is_array(v) else v for k, v in values.items()})
        append_jsonl(self.path / METRICS_FILE, record)

    # ----------------------------------------------------------------- writing

    def results(self) -> dict[str, Any]:
        """The JSON-ready contents of ``results.json`` as of now."""
        return to_jsonable(
            {
                "format": RESULTS_FORMAT,
                "schema": RUN_SCHEMA,
                "name": self.record.get("name"),
                "status": self._status,
                "error": self._error,
                "started": self.record.get("created"),
                "finished": self._finished,
                "seconds": self._seconds
                if self._seconds is not None
                else time.perf_counter() - self._start,
                "sections": self._sections,
                "scalars": self._scalars,
                "claims": self._claims,
                "tables": self._tables,
                "figures": self._figures,
                "texts": self._texts,
                "results": self._results,
                "arrays": [
                    {"name": k, "shape": list(v.shape), "dtype": str(v.dtype)}
                    for k, v in self._arrays.items()
                ],
            }
        )

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of everything recorded so far, for :meth:`restore`.

        Sections, scalars, claims, tables, figures, texts, results and arrays (what
        ``results.json`` and ``arrays.npz`` show); ``metrics.jsonl`` and the figure files
        are on disk and not included. Resumable reproductions save it with each finished
        part (:mod:`hesslab.experiments._stages`).
        """
        return {a: copy.deepcopy(getattr(self, a)) for a in _RECORD_ATTRS}

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Replace the recorded items by a :meth:`snapshot` (e.g. of a finished part)."""
        unknown = set(snapshot) - set(_RECORD_ATTRS)
        if unknown:
            raise ConfigurationError(
                f"not a RunDir snapshot (unknown keys {sorted(unknown)}); pass what "
                "RunDir.snapshot() returned"
            )
        for attr, value in snapshot.items():
            setattr(self, attr, copy.deepcopy(value))

    def flush(self, *, report: bool = False) -> None:
        """Checkpoint: write ``results.json`` and ``arrays.npz`` (and optionally the report)."""
        results = self.results()
        save_npz(self.path / ARRAYS_FILE, **self._arrays)  # always there, maybe empty
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
        self._finished = _now()
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
