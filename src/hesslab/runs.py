"""Run folders as data: :func:`load_run` and the side-by-side table of ``hesslab compare``.

A run folder (written by :class:`hesslab.report.RunDir`, ``hesslab demo``, ``analyze`` and
``reproduce``) holds ``config.json``, ``results.json``, ``metrics.jsonl`` and
``arrays.npz``; their keys are documented in ``docs/run-folder.md`` and versioned by the
``schema`` key of ``config.json`` and ``results.json`` (:data:`RUN_SCHEMA`). Folders
written before that key existed load as schema 0 (the same layout).

Example::

    run = hesslab.load_run("runs/demo-20260101-120000")
    run.results["Spectrum/λ top[0]"]["value"]      # a scalar with stderr, diagnostics
    run.metrics                                     # a pandas DataFrame (if installed)
    run.arrays["Spectrum/top eigenvalues/values"]  # read from arrays.npz on first use

    table = compare_table([load_run(a), load_run(b)], filter="trace")
"""

from __future__ import annotations

import csv
import io
import math
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hesslab.errors import DataError
from hesslab.io import as_float, read_json, read_jsonl
from hesslab.report.layout import ARRAYS_FILE, CONFIG_FILE, METRICS_FILE, RESULTS_FILE
from hesslab.report.records import RUN_SCHEMA

__all__ = ["RUN_SCHEMA", "LazyArrays", "Run", "compare_table", "load_run"]

_NONFINITE = ("NaN", "Infinity", "-Infinity")


class LazyArrays(Mapping[str, np.ndarray]):
    """The arrays of ``arrays.npz``, each read from disk on first access (then cached).

    Keys are known without reading any array; a missing file has no keys.
    """

    def __init__(self, path: Path) -> None:
        """Index the ``.npz`` file at ``path`` (nothing is loaded yet)."""
        self.path = path
        self._cache: dict[str, np.ndarray] = {}
        self._names: list[str] = []
        if path.exists():
            try:
                with zipfile.ZipFile(path) as z:
                    self._names = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
            except (OSError, zipfile.BadZipFile) as exc:
                raise DataError(
                    f"{path} is not a readable .npz file ({exc}); it is corrupt"
                ) from exc

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            if name not in self._names:
                known = ", ".join(self._names[:8]) or "none"
                raise KeyError(f"no array {name!r} in {self.path}; known: {known}")
            with np.load(self.path, allow_pickle=False) as data:
                self._cache[name] = data[name]
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"LazyArrays({len(self)} arrays in {str(self.path)!r})"


@dataclass(frozen=True, eq=False)
class Run:
    """One run folder, read back by :func:`load_run`.

    Attributes:
        path: the folder.
        schema: the run-folder schema version (0 for folders older than the key).
        record: all of ``config.json`` (command, seed, device, environment, ...).
        config: the run's parameters (``config.json``'s ``"config"``).
        status: ``"complete"``, ``"failed"``, ``"running"`` or ``"incomplete"`` (no
            ``results.json`` yet).
        results: ``"section/name"`` -> scalar record ``{section, name, value, stderr,
            unit, diagnostics}`` with non-finite numbers decoded to floats.
        summary: all of ``results.json`` (claims, tables, figures, texts, result
            summaries, array list); ``{}`` when there is none.
        metrics: the records of ``metrics.jsonl``: a :class:`pandas.DataFrame` (one row
            per record) when pandas is installed, else a list of dicts.
        arrays: the arrays of ``arrays.npz``, loaded lazily (:class:`LazyArrays`).
    """

    path: Path
    schema: int
    record: dict[str, Any]
    config: dict[str, Any]
    status: str
    results: dict[str, dict[str, Any]]
    summary: dict[str, Any]
    metrics: Any
    arrays: LazyArrays

    @property
    def name(self) -> str:
        """The run's name (``config.json``'s ``name``, else the folder name)."""
        return str(self.record.get("name") or self.path.name)

    def value(self, key: str) -> Any:
        """The value of the scalar ``"section/name"``; raises ``KeyError`` naming what exists."""
        if key not in self.results:
            known = ", ".join(list(self.results)[:8]) or "none"
            raise KeyError(f"no scalar {key!r} in {self.path}; known: {known}")
        return self.results[key]["value"]

    def results_frame(self) -> Any:
        """The scalars as a table: one row per scalar, indexed by ``"section/name"``.

        Columns ``section``, ``name``, ``value``, ``stderr``, ``unit`` and one per
        diagnostic (``num_matvecs``, ``seconds``, ``method``, ...; missing ones are
        empty). A :class:`pandas.DataFrame` when pandas is installed, else a list of
        dicts with a ``key`` entry.
        """
        rows = [
            {"key": key, **{k: v for k, v in rec.items() if k != "diagnostics"}}
            | dict(rec.get("diagnostics") or {})
            for key, rec in self.results.items()
        ]
        try:
            import pandas as pd
        except ImportError:
            return rows
        return pd.DataFrame.from_records(rows, index="key") if rows else pd.DataFrame()

    def __repr__(self) -> str:
        return (
            f"Run({self.name!r}, status={self.status!r}, schema={self.schema}, "
            f"{len(self.results)} scalars, {len(self.metrics)} metric records, "
            f"{len(self.arrays)} arrays)"
        )

    def _repr_html_(self) -> str:
        """HTML table of the run's status, sizes and first scalars (Jupyter)."""
        from hesslab import display

        return display.html_table(self, display.run_rows(self))


def _decode(x: Any) -> Any:
    return as_float(x) if isinstance(x, str) and x in _NONFINITE else x


def _schema(doc: Mapping[str, Any], file: Path) -> int:
    schema = doc.get("schema", 0)
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 0:
        raise DataError(f"{file}: 'schema' must be a non-negative integer, got {schema!r}")
    if schema > RUN_SCHEMA:
        raise DataError(
            f"{file} has run-folder schema {schema}, newer than this hesslab's "
            f"{RUN_SCHEMA}; upgrade hesslab to read it"
        )
    return schema


def _metrics_table(records: list[dict[str, Any]]) -> Any:
    try:
        import pandas as pd
    except ImportError:
        return records
    rows = [{k: _decode(v) for k, v in r.items()} for r in records]
    return pd.DataFrame.from_records(rows)


def load_run(path: str | os.PathLike[str]) -> Run:
    """Read a run folder as data: config, scalar results, metrics and (lazy) arrays.

    Args:
        path: a run folder written by hesslab (it holds ``config.json``).

    Returns:
        A :class:`Run`. ``run.metrics`` is a :class:`pandas.DataFrame` when pandas is
        installed, else a list of dicts.

    Raises:
        DataError: ``path`` is not a run folder, a file is corrupt, or its schema is
            newer than this version of hesslab understands.
    """
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        what = "does not exist" if not path.exists() else f"has no {CONFIG_FILE}"
        raise DataError(
            f"{path} is not a hesslab run folder ({what}); pass a folder written by "
            "hesslab demo/analyze/reproduce or RunDir"
        )
    record = read_json(path / CONFIG_FILE)
    if not isinstance(record, dict):
        raise DataError(f"{path / CONFIG_FILE} is not a JSON object; the file is corrupt")
    schema = _schema(record, path / CONFIG_FILE)
    summary = read_json(path / RESULTS_FILE) if (path / RESULTS_FILE).is_file() else {}
    if not isinstance(summary, dict):
        raise DataError(f"{path / RESULTS_FILE} is not a JSON object; the file is corrupt")
    if summary:
        schema = max(schema, _schema(summary, path / RESULTS_FILE))
    results: dict[str, dict[str, Any]] = {}
    for s in summary.get("scalars", []):
        rec = {**s, "value": _decode(s.get("value")), "stderr": _decode(s.get("stderr"))}
        results[f"{s.get('section')}/{s.get('name')}"] = rec
    return Run(
        path=path,
        schema=schema,
        record=record,
        config=dict(record.get("config") or {}),
        status=str(summary.get("status", "incomplete")),
        results=results,
        summary=summary,
        metrics=_metrics_table(read_jsonl(path / METRICS_FILE)),
        arrays=LazyArrays(path / ARRAYS_FILE),
    )


# ----------------------------------------------------------------- compare
def _cell(rec: Mapping[str, Any] | None) -> str:
    if rec is None:
        return ""
    value, err = rec.get("value"), rec.get("stderr")
    if isinstance(value, float) and math.isfinite(value):
        text = f"{value:.6g}"
    else:
        text = str(value)
    if isinstance(err, (int, float)) and not isinstance(err, bool) and err:
        text += f" ± {err:.2g}"
    return text


def _column_names(runs: Sequence[Run]) -> list[str]:
    names = [r.name for r in runs]
    if len(set(names)) < len(names):  # same names: the folders tell them apart
        names = [r.path.name for r in runs]
    if len(set(names)) < len(names):
        names = [str(r.path) for r in runs]
    return names


def compare_table(
    runs: Sequence[Run], *, filter: str | None = None, format: str = "markdown"
) -> str:
    """The scalars of several runs side by side: rows = quantities, columns = runs.

    Args:
        runs: loaded runs (:func:`load_run`).
        filter: keep only the quantities whose ``"section/name"`` contains this
            substring (case-insensitive).
        format: ``"markdown"`` (a pipe table) or ``"csv"``.

    Returns:
        The table as text; a cell is ``value ± stderr`` (or empty when the run lacks the
        quantity). Rows follow first appearance over the runs.
    """
    if format not in ("markdown", "csv"):
        raise DataError(f"format must be 'markdown' or 'csv', got {format!r}")
    keys: list[str] = []
    for run in runs:
        keys.extend(k for k in run.results if k not in keys)
    if filter:
        keys = [k for k in keys if filter.lower() in k.lower()]
    header = ["quantity", *_column_names(runs)]
    rows = [[k, *(_cell(r.results.get(k)) for r in runs)] for k in keys]
    if format == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([header, *rows])
        return buf.getvalue().rstrip("\n")

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])
