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

from hesslab.report import folder, layout
from hesslab.report.folder import *  # noqa: F403  (names listed once, in each module's __all__)
from hesslab.report.layout import *  # noqa: F403
from hesslab.report.records import RESULTS_FORMAT, RUN_SCHEMA

__all__ = ["RESULTS_FORMAT", "RUN_SCHEMA"]
__all__ += folder.__all__
__all__ += layout.__all__
