"""Run folders, figures and the self-contained HTML report.

* :class:`RunDir` writes (and reads back) a run folder: ``config.json``,
  ``results.json``, ``arrays.npz``, ``metrics.jsonl``, ``figures/*.png``, ``report.html``.
* :mod:`hesslab.report.plots` turns arrays into matplotlib figures (pure functions);
  :mod:`hesslab.plot` does it from hesslab results and run folders.
* :func:`rebuild_report` regenerates ``report.html`` from a run folder's files.
* :func:`progress_bar` and :class:`ProgressCallback` show progress on a terminal.
"""

from hesslab.report import plots
from hesslab.report.folder import RunDir, rebuild_report
from hesslab.report.plots import *  # noqa: F403  (the plot functions, listed once in plots.__all__)
from hesslab.report.progress import ProgressCallback, progress_bar

__all__ = ["ProgressCallback", "RunDir", "progress_bar", "rebuild_report"]
__all__ += plots.__all__
