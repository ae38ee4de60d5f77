"""``hesslab report`` and ``hesslab compare``: commands on saved run folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from hesslab.cli.common import (
    _out,
)
from hesslab.errors import DataError


def cmd_report(args: argparse.Namespace) -> int:
    """``hesslab report RUN_DIR``: rebuild the run's ``report.html``; exit code."""
    from hesslab.report.run import rebuild_report

    path = Path(args.run_dir)
    if not (path / "config.json").is_file():
        raise DataError(f"{path} is not a hesslab run folder (no config.json)")
    _out(f"report: {rebuild_report(path)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``hesslab compare RUN ...``: print the runs' scalars side by side; exit code."""
    from hesslab.runs import compare_table, load_run

    runs = [load_run(p) for p in args.runs]
    table = compare_table(runs, filter=args.filter, format=args.format)
    if table.count("\n") < (1 if args.format == "csv" else 2):
        raise DataError(
            f"no scalars{f' matching {args.filter!r}' if args.filter else ''} in "
            f"{', '.join(args.runs)}; drop --filter or check the run folders"
        )
    _out(table)
    return 0
