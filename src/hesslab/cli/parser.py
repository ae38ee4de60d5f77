"""The ``hesslab`` argument parser: one sub-command per ``cmd_*`` function."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from hesslab.cli.analyze import cmd_analyze
from hesslab.cli.compare import cmd_compare, cmd_report
from hesslab.cli.demo import DEMO_DESCRIPTION, cmd_demo
from hesslab.cli.reproduce import cmd_list, cmd_reproduce


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line: problem, then where to look."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _int_at_least(lo: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer ``>= lo``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}")
        return value

    parse.__name__ = f"integer >= {lo}"
    return parse


# ------------------------------------------------------------------- parsing
def _add_analysis_options(p: argparse.ArgumentParser, *, exact_limit: int) -> None:
    g = p.add_argument_group("analysis")
    g.add_argument(
        "--what",
        default="eig,trace,density,layers,ggn,classes",
        help="comma-separated parts: eig,trace,density,layers,ggn,classes (or 'all'; "
        "classes: Papyan's class structure, C-class cross-entropy only)",
    )
    g.add_argument("--k", type=_int_at_least(1), default=20, help="top eigenpairs (default 20)")
    g.add_argument(
        "--k-bottom", type=_int_at_least(0), default=3, help="bottom eigenpairs (default 3)"
    )
    g.add_argument("--tol", type=float, default=1e-6, help="relative residual tolerance")
    g.add_argument(
        "--trace-matvecs", type=_int_at_least(1), default=96, help="products for tr H, tr H²"
    )
    g.add_argument(
        "--density-steps", type=_int_at_least(1), default=90, help="Lanczos steps of the density"
    )
    g.add_argument(
        "--density-probes", type=_int_at_least(1), default=1, help="probes of the density"
    )
    g.add_argument(
        "--basis-device",
        default=None,
        help="where Krylov bases live: cpu, cuda[:i] or disk (memory-mapped file; "
        "for models whose basis does not fit beside them); default: the --device",
    )
    g.add_argument("--basis-dir", default=None, help="folder of the disk basis (default $TMPDIR)")
    g.add_argument(
        "--exact-limit",
        type=_int_at_least(0),
        default=exact_limit,
        help=f"also compute the exact spectrum when P <= this (default {exact_limit})",
    )
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run in RUN_DIR (give the same options as the run "
        "that created it): finished stages are reused, the interrupted one resumes from "
        "its checkpoint",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``hesslab`` argument parser: one sub-command per ``cmd_*`` function."""
    from hesslab import __version__

    parser = _Parser(
        prog="hesslab",
        description="Measure, track and shape the Hessian spectrum of neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"hesslab {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="print the full traceback of every error"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    debug = _Parser(add_help=False)  # `hesslab CMD ... --debug` works too
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="tracebacks")
    common = _Parser(add_help=False, parents=[debug])
    common.add_argument("--out", default="runs", help="folder for run folders (default runs/)")
    common.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    _add_run_options(common)
    common_noseed = _Parser(add_help=False, parents=[debug])
    common_noseed.add_argument("--out", default="runs", help="folder for run folders")
    _add_run_options(common_noseed)

    _add_demo_command(sub, common)
    _add_analyze_command(sub, common)
    _add_reproduce_command(sub, common_noseed)
    _add_run_folder_commands(sub, debug)
    return parser


def _add_run_options(parent: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``--threads``, shared by the commands that compute."""
    parent.add_argument("--quiet", action="store_true", help="no progress bars")
    parent.add_argument(
        "--threads",
        type=_int_at_least(0),
        default=0,
        help="torch CPU threads (default: torch's choice)",
    )


def _add_demo_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """``hesslab demo``."""
    p = sub.add_parser(
        "demo", parents=[common], help="analyse a small MLP on digits", description=DEMO_DESCRIPTION
    )
    p.add_argument(
        "--epochs", type=_int_at_least(0), default=20, help="training epochs (default 20)"
    )
    p.add_argument("--widths", default="32,32", help="hidden widths of the MLP (default 32,32)")
    _add_analysis_options(p, exact_limit=4000)
    p.set_defaults(func=cmd_demo)


def _add_analyze_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """``hesslab analyze``: the model, the data and the analysis options."""
    p = sub.add_parser(
        "analyze",
        parents=[common],
        help="analyse your own model",
        description="Curvature summary of your model on a data set.",
    )
    p.add_argument(
        "--model",
        required=True,
        help="path/to/file.py:factory returning a Module, or a zoo model (mlp, lenet, "
        "resnet_small, gpt, vit) sized from the data",
    )
    p.add_argument(
        "--model-option",
        action="append",
        metavar="KEY=VALUE",
        help="option of a zoo model, e.g. dim=16 or 'widths=[32,32]' (repeatable)",
    )
    p.add_argument("--weights", help="state_dict file (.pt) to load into the model")
    p.add_argument(
        "--data",
        required=True,
        help="bundled name (digits, digits-image, mnist5k, mnist5k-image, mixture, blobs, moons, "
        "circles, text), "
        "a .pt/.npz file with x and y, or an MNIST / CIFAR-10 folder",
    )
    p.add_argument("--split", default="train", choices=["train", "test"])
    p.add_argument(
        "--max-points", type=_int_at_least(0), default=0, help="use the first N points only"
    )
    p.add_argument(
        "--batch-size",
        type=_int_at_least(0),
        default=0,
        help="batch size of the data passes (default: all points in one batch)",
    )
    p.add_argument(
        "--loss",
        default=None,
        choices=["ce", "mse", "causal_lm", "masked_lm"],
        help="default: causal_lm (next-token cross-entropy) for --data text, else ce",
    )
    p.add_argument("--params", default=None, help="parameter subset, e.g. 'layers.2.*'")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", help="float32 or float64")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over torchrun processes (auto-detected under torchrun)",
    )
    p.add_argument(
        "--shard",
        nargs="?",
        const="exact",
        default=None,
        choices=("exact", "finite-difference"),
        help="under torchrun: shard the model with FSDP2 (fully_shard on every child "
        "module with parameters, then the root) and run eig, trace and density on sharded "
        "vectors; the product route (default exact)",
    )
    _add_analysis_options(p, exact_limit=0)
    p.set_defaults(func=cmd_analyze)


def _add_reproduce_command(sub: Any, common_noseed: argparse.ArgumentParser) -> None:
    """``hesslab reproduce``."""
    p = sub.add_parser(
        "reproduce",
        parents=[common_noseed],
        help="reproduce a paper's analysis",
        description="Run one of the reproductions listed by `hesslab list`.",
    )
    p.add_argument("name", help="experiment name (see `hesslab list`)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: the config's)")
    p.add_argument("--smoke", action="store_true", help="small sizes (about a minute)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set 'ks=[3,5]' (repeatable)",
    )
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted reproduction in RUN_DIR (give the same name, --smoke "
        "and --set/--seed options as the run that created it): finished parts are reused, "
        "the interrupted part runs again from its start",
    )
    p.set_defaults(func=cmd_reproduce)


def _add_run_folder_commands(sub: Any, debug: argparse.ArgumentParser) -> None:
    """``hesslab list``, ``report`` and ``compare`` (no computation)."""
    p = sub.add_parser("list", parents=[debug], help="list the reproducible analyses")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("report", parents=[debug], help="rebuild report.html of a run folder")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "compare",
        parents=[debug],
        help="the scalars of several runs side by side",
        description="A table of the runs' scalars: one row per quantity, one column per run.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    p.add_argument("--format", choices=["markdown", "csv"], default="markdown", help="table format")
    p.add_argument("--filter", metavar="SUBSTRING", help="only quantities containing SUBSTRING")
    p.set_defaults(func=cmd_compare)
