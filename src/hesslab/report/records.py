"""The records of a run folder in memory, and their ``results.json`` form.

:class:`Records` holds what a run recorded — sections, scalars, claims, tables, figure
entries, texts, result summaries and arrays — and reads it back from ``results.json``
and ``arrays.npz``. It never writes files: :class:`hesslab.report.RunDir` does (see
:mod:`hesslab.report.folder`). Items are plain dicts with the keys documented in
``docs/run-folder.md``; adding one with the keys of an earlier one replaces it in place.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from hesslab.errors import ConfigurationError, DataError
from hesslab.io import as_float, to_jsonable, to_numpy
from hesslab.report.scalars import is_array, scalar_value

__all__ = ["RECORD_KINDS", "RESULTS_FORMAT", "RUN_SCHEMA", "Records", "summarise_result"]

RESULTS_FORMAT = "hesslab-run/1"
"""Value of the ``format`` key of ``config.json`` and ``results.json``."""

RUN_SCHEMA = 1
"""Version of the run-folder schema, the ``schema`` key of ``config.json`` and
``results.json`` (it covers ``metrics.jsonl`` too). Folders written before the key
existed read as version 0, which has the same layout without the key."""

#: The kinds of records, in the order of ``results.json``.
RECORD_KINDS = ("sections", "scalars", "claims", "tables", "figures", "texts", "results")

_NONFINITE = ("NaN", "Infinity", "-Infinity")


def _decode_nonfinite(x: Any) -> Any:
    """``"NaN"``/``"Infinity"``/``"-Infinity"`` (how JSON holds them) back to floats."""
    return as_float(x) if isinstance(x, str) and x in _NONFINITE else x


def _upsert(items: list[dict[str, Any]], record: dict[str, Any], *keys: str) -> None:
    for i, item in enumerate(items):
        if all(item.get(k) == record[k] for k in keys):
            items[i] = record
            return
    items.append(record)


def summarise_result(
    fields: Mapping[str, Any], prefix: str, *, save_vectors: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A result's fields with arrays replaced by their ``arrays.npz`` keys.

    Args:
        fields: the result's fields (``info`` is left out).
        prefix: the arrays' key prefix, ``"<section>/<name>"``.
        save_vectors: keep a ``vectors`` array (else only its shape is noted).

    Returns:
        ``(summary, arrays)``: the JSON-ready summary and ``{key: array}`` to save.
    """
    summary: dict[str, Any] = {}
    arrays: dict[str, Any] = {}
    for key, val in fields.items():
        if key == "info":
            continue
        if is_array(val):
            if key == "vectors" and not save_vectors:
                summary[key] = {"shape": list(val.shape), "saved": False}
                continue
            arrays[f"{prefix}/{key}"] = val
            summary[key] = {"array": f"{prefix}/{key}", "shape": list(val.shape)}
        elif isinstance(val, (torch.Tensor, np.ndarray)):  # 0-d
            summary[key] = scalar_value(val, key)
        else:
            summary[key] = val
    return to_jsonable(summary), arrays


class Records:
    """Everything a run recorded, in memory (see :mod:`hesslab.report.records`)."""

    def __init__(self) -> None:
        """No records."""
        self.sections: list[str] = []
        self.scalars: list[dict[str, Any]] = []
        self.claims: list[dict[str, Any]] = []
        self.tables: list[dict[str, Any]] = []
        self.figures: list[dict[str, Any]] = []
        self.texts: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.arrays: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ adding

    def section(self, section: str) -> str:
        """Register ``section`` (first-use order) and return it."""
        if not isinstance(section, str) or not section.strip():
            raise ConfigurationError(f"section must be a non-empty string, got {section!r}")
        if section not in self.sections:
            self.sections.append(section)
        return section

    def add_text(self, section: str, text: str) -> None:
        """A paragraph of Markdown."""
        self.texts.append({"section": self.section(section), "text": str(text)})

    def add_scalar(
        self,
        section: str,
        name: str,
        value: Any,
        stderr: Any = None,
        unit: str | None = None,
        diagnostics: Mapping[str, Any] | None = None,
    ) -> None:
        """One number with its standard error, unit and diagnostics."""
        record = {
            "section": self.section(section),
            "name": str(name),
            "value": scalar_value(value, f"value of {name!r}"),
            "stderr": scalar_value(stderr, f"stderr of {name!r}"),
            "unit": unit,
            "diagnostics": to_jsonable(dict(diagnostics or {})),
        }
        _upsert(self.scalars, record, "section", "name")

    def add_result(self, section: str, name: str, type_name: str, summary: Any) -> None:
        """The summary of a result (its fields, arrays replaced by their keys)."""
        record = {
            "section": self.section(section),
            "name": str(name),
            "type": type_name,
            "fields": summary,
        }
        _upsert(self.results, record, "section", "name")

    def add_array(self, name: str, array: Any) -> None:
        """A copy of a numeric array under ``name``."""
        if not isinstance(name, str) or not name or name.endswith(".npy"):
            raise ConfigurationError(f"array name must be a non-empty string, got {name!r}")
        arr = np.array(to_numpy(array), copy=True)
        if arr.dtype == object:
            raise DataError(f"array {name!r} is not numeric (dtype object); pass numbers")
        self.arrays[name] = arr

    def add_figure(self, section: str, name: str, file: str, caption: str) -> None:
        """The entry of a saved figure file (unique by name)."""
        record = {"section": self.section(section), "name": name, "file": file, "caption": caption}
        _upsert(self.figures, record, "name")

    def add_claim(self, section: str, claim: str, measured: Any, holds: bool | None) -> None:
        """A paper's claim beside what was measured (``holds``: ``True``/``False``/``None``)."""
        if holds is not None:
            holds = bool(scalar_value(holds, "holds"))
        measured = measured if isinstance(measured, str) else scalar_value(measured, "measured")
        self.claims.append(
            {
                "section": self.section(section),
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
        columns: Sequence[str] | None,
        caption: str | None,
    ) -> None:
        """A table of rows; columns default to the keys in first-seen order."""
        rows = [to_jsonable(dict(r)) for r in rows]
        if columns is None:
            cols: list[str] = []
            for r in rows:
                cols.extend(k for k in r if k not in cols)
        else:
            cols = [str(c) for c in columns]
        record = {
            "section": self.section(section),
            "name": str(name),
            "columns": cols,
            "rows": rows,
            "caption": caption,
        }
        _upsert(self.tables, record, "section", "name")

    # ------------------------------------------------------------------ reading

    def scalar(self, section: str, name: str, where: Any = "") -> dict[str, Any]:
        """The record of one scalar; raises :class:`KeyError` naming what exists."""
        for s in self.scalars:
            if s["section"] == section and s["name"] == name:
                return dict(s)
        known = ", ".join(f"{s['section']}/{s['name']}" for s in self.scalars) or "none"
        raise KeyError(f"no scalar {section}/{name} in {where}; known: {known}")

    def to_json(self) -> dict[str, Any]:
        """The records' part of ``results.json`` (``sections`` ... ``results``, ``arrays``)."""
        out: dict[str, Any] = {kind: getattr(self, kind) for kind in RECORD_KINDS}
        out["arrays"] = [
            {"name": k, "shape": list(v.shape), "dtype": str(v.dtype)}
            for k, v in self.arrays.items()
        ]
        return out

    @classmethod
    def from_json(cls, results: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Records:
        """Records read back from ``results.json`` (``{}`` if none) and ``arrays.npz``."""
        records = cls()
        for kind in RECORD_KINDS:
            setattr(records, kind, list(results.get(kind, [])))
        records.scalars = [
            {
                **s,
                "value": _decode_nonfinite(s.get("value")),
                "stderr": _decode_nonfinite(s.get("stderr")),
            }
            for s in records.scalars
        ]
        records.arrays = dict(arrays)
        return records

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of every record, for :meth:`restore`.

        Keys are ``"_sections"``, ..., ``"_arrays"`` (the attribute names of the
        :class:`~hesslab.report.RunDir` that first wrote them, so parts saved by older
        versions restore unchanged).
        """
        kinds = (*RECORD_KINDS, "arrays")
        return {f"_{kind}": copy.deepcopy(getattr(self, kind)) for kind in kinds}

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Replace the records by a :meth:`snapshot`."""
        known = {f"_{kind}" for kind in (*RECORD_KINDS, "arrays")}
        unknown = set(snapshot) - known
        if unknown:
            raise ConfigurationError(
                f"not a RunDir snapshot (unknown keys {sorted(unknown)}); pass what "
                "RunDir.snapshot() returned"
            )
        for key, value in snapshot.items():
            setattr(self, key[1:], copy.deepcopy(value))
