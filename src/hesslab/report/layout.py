"""The layout of a run folder: its file names, how one is made, how one is recognised.

:class:`~hesslab.report.RunDir` (:mod:`hesslab.report.folder`) writes the files named
here; ``docs/run-folder.md`` documents their keys.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from hesslab.errors import ConfigurationError, DataError
from hesslab.io import to_jsonable
from hesslab.report.environment import capture_environment, now
from hesslab.report.records import RESULTS_FORMAT, RUN_SCHEMA

__all__ = [
    "ARRAYS_FILE",
    "CONFIG_FILE",
    "FIGURES_DIR",
    "METRICS_FILE",
    "REPORT_FILE",
    "RESULTS_FILE",
    "check_name",
    "check_run_folder",
    "clear_run_folder",
    "config_record",
    "new_run_path",
]

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
ARRAYS_FILE = "arrays.npz"
METRICS_FILE = "metrics.jsonl"
REPORT_FILE = "report.html"
FIGURES_DIR = "figures"

_RUN_FILES = (CONFIG_FILE, RESULTS_FILE, ARRAYS_FILE, METRICS_FILE, REPORT_FILE)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_name(name: str, what: str) -> None:
    """Raise :class:`ConfigurationError` unless ``name`` is letters, digits and ``_.-``."""
    if not _NAME_RE.match(name):
        raise ConfigurationError(
            f"{what} {name!r} may only contain letters, digits, '_', '.' and '-' "
            "(and must start with a letter or digit)"
        )


def new_run_path(out: Path, name: str) -> Path:
    """``out/<name>-<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3``, ... appended if taken."""
    check_name(name, "run name")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = out / f"{name}-{stamp}", 2
    while path.exists():
        path, n = out / f"{name}-{stamp}-{n}", n + 1
    return path


def clear_run_folder(path: Path, overwrite: bool) -> None:
    """Make ``path`` usable as a run folder: absent, empty, or (``overwrite``) cleared."""
    if path.exists() and not path.is_dir():
        raise ConfigurationError(f"{path} is a file; choose a folder for the run")
    if not (path.is_dir() and any(path.iterdir())):
        return
    if not overwrite:
        raise ConfigurationError(
            f"{path} exists and is not empty; choose a new output folder or allow overwriting it"
        )
    for file in _RUN_FILES:
        (path / file).unlink(missing_ok=True)
    figures = path / FIGURES_DIR
    if figures.is_dir():
        for png in figures.glob("*.png"):
            png.unlink()


def config_record(
    path: Path,
    name: str | None,
    config: Mapping[str, Any],
    command: Sequence[str],
    *,
    title: str | None,
    description: str | None,
    seed: int | None,
    device: str | torch.device | None,
) -> dict[str, Any]:
    """The contents of ``config.json``."""
    if seed is None and isinstance(config.get("seed"), int):
        seed = config["seed"]
    device_str = str(device if device is not None else config.get("device") or "cpu")
    return {
        "format": RESULTS_FORMAT,
        "schema": RUN_SCHEMA,
        "name": name or path.name,
        "title": title or name or path.name,
        "description": description,
        "created": now(),
        "command": [str(c) for c in command],
        "command_line": shlex.join(str(c) for c in command),
        "cwd": os.getcwd(),
        "seed": seed,
        "device": device_str,
        "config": to_jsonable(config),
        "environment": capture_environment(device_str),
    }


def check_run_folder(path: Path) -> None:
    """Raise :class:`DataError` unless ``path`` holds a ``config.json``."""
    if not (path / CONFIG_FILE).exists():
        raise DataError(
            f"{path} is not a hesslab run folder (no {CONFIG_FILE}); pass the folder a "
            "hesslab command wrote"
        )
