"""Run folders (compatibility module): the names that lived here before the split.

The run folder is now five modules, re-exported here so that
``from hesslab.report.run import RunDir`` keeps working:

* :mod:`hesslab.report.folder`: :class:`RunDir` (the folder and its files) and
  :func:`rebuild_report`;
* :mod:`hesslab.report.layout`: the file names, how a folder is made and recognised;
* :mod:`hesslab.report.records`: the records in memory and their ``results.json`` form;
* :mod:`hesslab.report.scalars`: result dataclasses flattened into scalars, by type;
* :mod:`hesslab.report.environment`: versions, platform and device of a run.
"""

from __future__ import annotations

from hesslab.report.folder import (
    ARRAYS_FILE,
    CONFIG_FILE,
    FIGURES_DIR,
    METRICS_FILE,
    REPORT_FILE,
    RESULTS_FILE,
    RunDir,
    rebuild_report,
)
from hesslab.report.records import RESULTS_FORMAT, RUN_SCHEMA

__all__ = [
    "ARRAYS_FILE",
    "CONFIG_FILE",
    "FIGURES_DIR",
    "METRICS_FILE",
    "REPORT_FILE",
    "RESULTS_FILE",
    "RESULTS_FORMAT",
    "RUN_SCHEMA",
    "RunDir",
    "rebuild_report",
]
