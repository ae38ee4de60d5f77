"""The ``hesslab`` command line.

Commands::

    hesslab demo                       train a small MLP on digits, analyse it, write a report
    hesslab analyze --model F.py:fn --data NAME|PATH ...   your own model
    hesslab reproduce NAME [--smoke]   reproduce a paper's analysis
    hesslab list                       what can be reproduced, with expected run times
    hesslab report RUN_DIR             rebuild a run's report.html from its saved files
    hesslab compare RUN [RUN ...]      the runs' scalars side by side (markdown or csv)

``demo`` and ``analyze`` save every finished stage and the state of the running solver
under ``RUN_DIR/checkpoints/`` (removed when the run completes); after a crash or a
preemption, the same command with ``--resume RUN_DIR`` continues where it stopped and
records the numbers an uninterrupted run would have. ``reproduce`` saves each finished
part of the reproduction there (parts are coarse: an interrupted part, which may take
minutes at full size, runs again from its start).

Errors in arguments, files, data, devices or the user's own code (model file, factory,
forward pass) end the program with a one-line message naming the problem and the fix,
exit code 2. Any other exception is a bug in hesslab: its traceback is printed, exit code
1. ``hesslab --debug ...`` prints the traceback of every error.
"""

import logging
import sys
from collections.abc import Sequence

import torch

from hesslab.cli.analyze import _check_targets as _check_targets
from hesslab.cli.analyze import cmd_analyze as cmd_analyze
from hesslab.cli.common import CHECKPOINTS_DIR as CHECKPOINTS_DIR
from hesslab.cli.common import UserCodeError, _report_error
from hesslab.cli.compare import cmd_compare as cmd_compare
from hesslab.cli.compare import cmd_report as cmd_report
from hesslab.cli.demo import DEMO_DESCRIPTION as DEMO_DESCRIPTION
from hesslab.cli.demo import cmd_demo as cmd_demo
from hesslab.cli.parser import build_parser
from hesslab.cli.reproduce import cmd_list as cmd_list
from hesslab.cli.reproduce import cmd_reproduce as cmd_reproduce

__all__ = ["UserCodeError", "build_parser", "main"]

log = logging.getLogger("hesslab.cli")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hesslab`` console script.

    Returns the exit code: 0 on success, 2 for a user error (one line on stderr naming
    the problem and the fix), 1 for a bug in hesslab (its traceback on stderr), 130 when
    interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("hesslab: interrupted\n")
        return 130
    except Exception as e:  # a user error (exit 2) or a bug in hesslab (traceback, 1)
        return _report_error(e, args)
