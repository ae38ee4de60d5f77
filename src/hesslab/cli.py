"""The ``hesslab`` command line.

Commands::

    hesslab demo                       train a small MLP on digits, analyse it, write a report
    hesslab analyze --model F.py:fn --data NAME|PATH ...   your own model
    hesslab reproduce NAME [--smoke]   reproduce a paper's analysis
    hesslab list                       what can be reproduced, with expected run times
    hesslab report RUN_DIR             rebuild a run's report.html from its saved files

``demo`` and ``analyze`` save every finished stage and the state of the running solver
under ``RUN_DIR/checkpoints/`` (removed when the run completes); after a crash or a
preemption, the same command with ``--resume RUN_DIR`` continues where it stopped and
records the numbers an uninterrupted run would have. ``reproduce`` saves each finished
part of the reproduction there (parts are coarse: an interrupted part, which may take
minutes at full size, runs again from its start).

Errors in arguments or data end the program with a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hesslab.errors import ConfigurationError, DataError, HesslabError

__all__ = ["main"]

log = logging.getLogger("hesslab.cli")

CHECKPOINTS_DIR = "checkpoints"

DEMO_DESCRIPTION = (
    "A 64-32-32-10 ReLU MLP trained on scikit-learn's digits for a few seconds, then the "
    "full curvature summary of its training loss: top/bottom eigenvalues, trace ± stderr, "
    "spectral density, per-layer blocks and Gauss–Newton vs Hessian outliers, each "
    "checked against the exact (dense float64) spectrum."
)


def _out(msg: str) -> None:
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


class _Stages:
    """A progress bar over named stages (quiet when stderr is not a terminal)."""

    def __init__(self, total: int, desc: str, quiet: bool) -> None:
        from hesslab.report.progress import progress_bar

        self.bar = progress_bar(total, desc, enabled=False if quiet else None, unit="step")
        self.started = False

    def __call__(self, msg: str) -> None:
        if self.started:
            self.bar.update(1)
        self.started = True
        self.bar.set_postfix_str(msg)

    def close(self) -> None:
        if self.started:
            self.bar.update(1)
        self.bar.close()


def _dtype(name: str) -> torch.dtype:
    try:
        return {
            "float32": torch.float32,
            "float64": torch.float64,
            "double": torch.float64,
            "float": torch.float32,
        }[name]
    except KeyError:
        raise ConfigurationError(f"--dtype must be float32 or float64, got {name!r}") from None


def _analysis_config(args: argparse.Namespace, *, exact_limit: int) -> Any:
    from hesslab.analysis import PARTS, AnalysisConfig

    what = tuple(w.strip() for w in args.what.split(",") if w.strip())
    if what == ("all",):
        what = PARTS
    return AnalysisConfig(
        what=what,
        k_top=args.k,
        k_bottom=args.k_bottom,
        tol=args.tol,
        trace_matvecs=args.trace_matvecs,
        density_steps=args.density_steps,
        density_probes=args.density_probes,
        seed=args.seed,
        exact_limit=exact_limit,
        basis_device=args.basis_device,
        basis_dir=args.basis_dir,
    )


def _check_resume(args: argparse.Namespace, config: dict[str, Any]) -> Path | None:
    """With ``--resume``: the run folder, or ``None`` if the run is complete.

    A resumed run keeps its ``config.json``; the command line must describe the same run
    (same model, data, analysis options and seed), else :class:`ConfigurationError`
    names the settings that differ. Only reads, so every torchrun rank may call it.
    """
    from hesslab.io import read_json, to_jsonable

    path = Path(args.resume)
    if not (path / "config.json").is_file():
        raise DataError(f"--resume {path}: not a hesslab run folder (no config.json)")
    stored = read_json(path / "config.json").get("config", {})
    now = json.loads(json.dumps(to_jsonable(config)))
    differ = [k for k in sorted(set(stored) | set(now)) if stored.get(k) != now.get(k)]
    if differ:
        details = "; ".join(
            f"{k}: {stored.get(k)!r} in the run, {now.get(k)!r} now" for k in differ
        )
        raise ConfigurationError(
            f"--resume {path}: the run was started with other settings ({details}); "
            f"repeat the command that started it (see {path / 'config.json'}) with --resume"
        )
    results = path / "results.json"
    if results.is_file() and read_json(results).get("status") == "complete":
        return None
    return path


def _open_run(args: argparse.Namespace, name: str, config: dict[str, Any], **kw: Any) -> Any:
    """A new run folder, or with ``--resume`` the given one (``None`` if it is complete)."""
    from hesslab.report.run import RunDir

    if not args.resume:
        return RunDir.create(args.out, name, config, **kw)
    path = _check_resume(args, config)
    return None if path is None else RunDir.reopen(path)


def _already_complete(args: argparse.Namespace) -> int:
    from hesslab.report.run import rebuild_report

    _out(f"{args.resume} is already complete; nothing to resume")
    _out(f"report: {rebuild_report(args.resume)}")
    return 0


def _finish(run: Any, summary: dict[str, Any], seconds: float) -> None:
    run.add_scalar("Run", "wall time", seconds, unit="s")
    path = run.finalize()
    shutil.rmtree(run.path / CHECKPOINTS_DIR, ignore_errors=True)
    lines = [f"P = {summary['P']} parameters, N = {summary['N']} points"]
    if "lambda_max" in summary:
        lines.append(f"λ_max = {summary['lambda_max']:.6g}")
    if "lambda_min" in summary:
        lines.append(f"λ_min = {summary['lambda_min']:.6g}")
    if "trace" in summary:
        lines.append(f"tr H = {summary['trace'][0]:.6g} ± {summary['trace'][1]:.2g}")
    if "outliers" in summary:
        text = summary.get("outliers_text", summary["outliers"])
        lines.append(f"outliers above the bulk edge: {text}")
    if "ggn_overlap" in summary:
        lines.append(f"top-k overlap Hessian/Gauss–Newton: {summary['ggn_overlap']:.3f}")
    for line in lines:
        _out("  " + line)
    _out(f"report: {path}")


# --------------------------------------------------------------------- commands
def cmd_demo(args: argparse.Namespace) -> int:
    from hesslab import Objective, data, models
    from hesslab.analysis import StageStore, analyze
    from hesslab.train import fit

    t0 = time.perf_counter()
    widths = [int(w) for w in args.widths.split(",") if w.strip()]
    cfg = _analysis_config(args, exact_limit=args.exact_limit)
    training = {
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "batch_size": 64,
        "epochs": args.epochs,
    }
    config = {
        "command": "demo",
        "seed": args.seed,
        "device": "cpu",
        "dtype": "float64",
        "data": "digits (scikit-learn, 8x8, standardised; train split 1347 points)",
        "model": "mlp 64-32-32-10 relu",
        "loss": "ce",
        "training": training,
        "analysis": cfg,
    }
    run = _open_run(
        args, "demo", config, title="hesslab demo: digits MLP", description=DEMO_DESCRIPTION
    )
    if run is None:
        return _already_complete(args)
    stages = _Stages(7, "demo", args.quiet)
    stages("training")
    split = data.digits(flat=True, seed=args.seed, dtype=torch.float64)
    model = models.mlp(64, widths, 10, seed=args.seed, dtype=torch.float64)

    def train(_: Any) -> dict[str, Any]:
        # the recorded training settings are the ones used
        res = fit(model, split.train, **training, seed=args.seed, eval_data=split.test)
        (run.path / "metrics.jsonl").unlink(missing_ok=True)  # a retrained run logs afresh
        for rec in res.history:
            run.log_metrics(rec["step"], loss=rec["loss"], accuracy=rec.get("accuracy"))
        return {
            "state_dict": {k: v.detach().cpu().clone() for k, v in res.model.state_dict().items()},
            "seconds": res.seconds,
            "train_accuracy": res.final_train_accuracy,
            "test_accuracy": res.final_test_accuracy,
            "train_loss": res.final_train_loss,
        }

    trained = StageStore(run.path / CHECKPOINTS_DIR, {"widths": widths, **config}).run(
        "training", train
    )
    model.load_state_dict(trained["state_dict"])
    model.eval()
    run.add_text(
        "Training",
        f"SGD (lr 0.05, momentum 0.9, batch 64) for {args.epochs} epochs in "
        f"{trained['seconds']:.1f} s.",
    )
    run.add_scalar("Training", "train accuracy", trained["train_accuracy"])
    run.add_scalar("Training", "test accuracy", trained["test_accuracy"])
    run.add_scalar("Training", "train loss", trained["train_loss"])
    obj = Objective(model, "ce", (split.train.x, split.train.y))
    summary = analyze(obj, run, cfg, progress=stages, checkpoint_dir=run.path / CHECKPOINTS_DIR)
    stages.close()
    _out(f"digits MLP: test accuracy {trained['test_accuracy']:.3f}")
    _finish(run, summary, time.perf_counter() - t0)
    return 0


def _load_factory(spec: str) -> Any:
    if ":" not in spec:
        raise ConfigurationError(f"--model must look like path/to/file.py:factory, got {spec!r}")
    path, _, name = spec.rpartition(":")
    file = Path(path)
    if not file.is_file():
        raise ConfigurationError(f"--model file {file} does not exist")
    mod_spec = importlib.util.spec_from_file_location(f"hesslab_user_{file.stem}", file)
    if mod_spec is None or mod_spec.loader is None:
        raise ConfigurationError(f"cannot import {file} as a Python module")
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    if not hasattr(module, name):
        raise ConfigurationError(f"{file} defines no {name!r}")
    factory = getattr(module, name)
    if not callable(factory):
        raise ConfigurationError(f"{spec} is not callable")
    return factory


def cmd_analyze(args: argparse.Namespace) -> int:
    from hesslab import Objective
    from hesslab.analysis import analyze
    from hesslab.data import load_data
    from hesslab.report.run import RunDir

    t0 = time.perf_counter()
    dtype = _dtype(args.dtype)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError("--device cuda requested but CUDA is not available")
    factory = _load_factory(args.model)
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise ConfigurationError(f"{args.model} returned a {type(model).__name__}, not a Module")
    if args.weights:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise DataError(
                f"--weights {args.weights} do not fit the model: {str(e).splitlines()[0]}"
            ) from None
    model = model.to(device=device, dtype=dtype).eval()
    loaded = load_data(args.data, dtype=dtype)
    part = getattr(loaded, args.split, None) if hasattr(loaded, "train") else loaded
    if part is None:
        raise DataError(f"data {args.data!r} has no {args.split!r} split")
    if args.max_points and len(part) > args.max_points:
        part = part.subset(torch.arange(args.max_points))
    num_points = len(part)
    wrap, rank, world = _setup_distributed(args, device)
    if world > 1:
        from hesslab.distributed import shard_indices

        part = part.subset(torch.tensor(list(shard_indices(len(part), rank, world))))
    batches = part.loader(args.batch_size) if args.batch_size else (part.x, part.y)
    obj = Objective(model, args.loss, batches, params=args.params, device=device)
    cfg = _analysis_config(args, exact_limit=args.exact_limit)
    config = {
        "command": "analyze",
        "model": args.model,
        "weights": args.weights,
        "data": args.data,
        "split": args.split,
        "num_points": num_points,
        "loss": args.loss,
        "params": args.params,
        "device": str(device),
        "dtype": args.dtype,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "analysis": cfg,
        "processes": world,
    }
    if rank != 0:  # every rank computes; only rank 0 writes the run folder
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            # read-only checkpoints: on resume the ones rank 0 wrote; on a fresh run a
            # folder that stays empty (a checkpointed solver runs the same collectives
            # as rank 0's, e.g. SLQ probes one by one)
            ckpt_in = Path(tmp) / CHECKPOINTS_DIR
            if args.resume:
                resumed = _check_resume(args, config)
                if resumed is None:
                    return 0
                ckpt_in = resumed / CHECKPOINTS_DIR
            analyze(
                obj,
                RunDir.create(tmp, "analyze", config),
                cfg,
                wrap=wrap,
                checkpoint_dir=ckpt_in,
                write_checkpoints=False,
            )
        return 0
    run = _open_run(args, "analyze", config, title=f"hesslab analyze: {args.model}")
    if run is None:
        return _already_complete(args)
    stages = _Stages(len(cfg.what) + 2, "analyze", args.quiet)
    ckpt = run.path / CHECKPOINTS_DIR
    summary = analyze(obj, run, cfg, progress=stages, wrap=wrap, checkpoint_dir=ckpt)
    stages.close()
    _finish(run, summary, time.perf_counter() - t0)
    return 0


def _setup_distributed(args: argparse.Namespace, device: torch.device) -> tuple[Any, int, int]:
    """Join the process group when launched by torchrun (or with ``--distributed``).

    Returns ``(wrap, rank, world_size)``; ``wrap`` turns a shard's operator into the
    operator over all shards (:class:`hesslab.distributed.DistributedOperator`).
    """
    import os

    import torch.distributed as dist

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not (args.distributed or launched):
        return None, 0, 1
    if not dist.is_available():
        raise ConfigurationError("--distributed needs a PyTorch build with torch.distributed")
    if "RANK" not in os.environ:
        raise ConfigurationError(
            "--distributed must run under torchrun, e.g. "
            "torchrun --nproc_per_node 2 -m hesslab.cli analyze ..."
        )
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    from hesslab.distributed import DistributedOperator

    return DistributedOperator, dist.get_rank(), dist.get_world_size()


def cmd_list(args: argparse.Namespace) -> int:
    from hesslab.experiments import EXPERIMENTS

    width = max(len(n) for n in EXPERIMENTS) if EXPERIMENTS else 4
    _out(f"{'name':<{width}}  {'smoke':>7}  {'full':>8}  title")
    for name, spec in EXPERIMENTS.items():
        _out(
            f"{name:<{width}}  {_secs(spec.smoke_seconds):>7}  {_secs(spec.full_seconds):>8}  "
            f"{spec.title}"
        )
    return 0


def _secs(s: float | None) -> str:
    if s is None:
        return "?"
    return f"~{s:.0f} s" if s < 120 else f"~{s / 60:.0f} min"


def cmd_reproduce(args: argparse.Namespace) -> int:
    from hesslab.analysis import StageStore
    from hesslab.experiments import get_experiment
    from hesslab.report.progress import progress_bar

    spec = get_experiment(args.name)
    overrides = list(args.set or [])
    if args.seed is not None:
        overrides.append(f"seeds=[{args.seed}]")
    cfg = spec.config(smoke=args.smoke, overrides=overrides)
    t0 = time.perf_counter()
    run = _open_run(
        args,
        args.name + ("-smoke" if args.smoke else ""),
        cfg,
        title=spec.title + (" (smoke size)" if args.smoke else ""),
        description=spec.description,
    )
    if run is None:
        return _already_complete(args)
    # every finished part is saved here, so that --resume RUN_DIR skips it
    stages = StageStore(run.path / CHECKPOINTS_DIR, cfg)
    bar = progress_bar(100, args.name, enabled=False if args.quiet else None, unit="%")

    def progress(desc: str, fraction: float) -> None:
        bar.set_postfix_str(desc)
        bar.update(max(0, round(100 * fraction) - bar.n))

    try:
        spec.run(run, cfg, progress=progress, stages=stages)
    except BaseException as e:
        bar.close()
        run.finalize(status="failed", error=f"{type(e).__name__}: {e}")
        raise
    bar.close()
    run.add_scalar("Run", "wall time", time.perf_counter() - t0, unit="s")
    path = run.finalize()
    shutil.rmtree(run.path / CHECKPOINTS_DIR, ignore_errors=True)
    for c in run.claims:
        mark = {True: "holds", False: "does NOT hold", None: "undecided"}[c.get("holds")]
        _out(f"  [{mark}] {c['claim']} — measured: {c['measured']}")
    _out(f"report: {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from hesslab.report.run import rebuild_report

    path = Path(args.run_dir)
    if not (path / "config.json").is_file():
        raise DataError(f"{path} is not a hesslab run folder (no config.json)")
    _out(f"report: {rebuild_report(path)}")
    return 0


# ------------------------------------------------------------------- parsing
def _add_analysis_options(p: argparse.ArgumentParser, *, exact_limit: int) -> None:
    g = p.add_argument_group("analysis")
    g.add_argument(
        "--what",
        default="eig,trace,density,layers,ggn",
        help="comma-separated parts: eig,trace,density,layers,ggn (or 'all')",
    )
    g.add_argument("--k", type=int, default=20, help="top eigenpairs (default 20)")
    g.add_argument("--k-bottom", type=int, default=3, help="bottom eigenpairs (default 3)")
    g.add_argument("--tol", type=float, default=1e-6, help="relative residual tolerance")
    g.add_argument("--trace-matvecs", type=int, default=96, help="products for tr H, tr H²")
    g.add_argument("--density-steps", type=int, default=90, help="Lanczos steps of the density")
    g.add_argument("--density-probes", type=int, default=1, help="probes of the density")
    g.add_argument(
        "--basis-device",
        default=None,
        help="where Krylov bases live: cpu, cuda[:i] or disk (memory-mapped file; "
        "for models whose basis does not fit beside them); default: the --device",
    )
    g.add_argument("--basis-dir", default=None, help="folder of the disk basis (default $TMPDIR)")
    g.add_argument(
        "--exact-limit",
        type=int,
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
    from hesslab import __version__

    parser = argparse.ArgumentParser(
        prog="hesslab",
        description="Measure, track and shape the Hessian spectrum of neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"hesslab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", default="runs", help="folder for run folders (default runs/)")
    common.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    common.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)"
    )
    common_noseed = argparse.ArgumentParser(add_help=False)
    common_noseed.add_argument("--out", default="runs", help="folder for run folders")
    common_noseed.add_argument("--quiet", action="store_true", help="no progress bars")
    common_noseed.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)"
    )

    p = sub.add_parser(
        "demo", parents=[common], help="analyse a small MLP on digits", description=DEMO_DESCRIPTION
    )
    p.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    p.add_argument("--widths", default="32,32", help="hidden widths of the MLP (default 32,32)")
    _add_analysis_options(p, exact_limit=4000)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "analyze",
        parents=[common],
        help="analyse your own model",
        description="Curvature summary of your model on a data set.",
    )
    p.add_argument("--model", required=True, help="path/to/file.py:factory returning a Module")
    p.add_argument("--weights", help="state_dict file (.pt) to load into the model")
    p.add_argument(
        "--data",
        required=True,
        help="bundled name (digits, digits-image, mixture, blobs, moons, circles), "
        "a .pt/.npz file with x and y, or an MNIST / CIFAR-10 folder",
    )
    p.add_argument("--split", default="train", choices=["train", "test"])
    p.add_argument("--max-points", type=int, default=0, help="use the first N points only")
    p.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="batch size of the data passes (default: all points in one batch)",
    )
    p.add_argument("--loss", default="ce", choices=["ce", "mse"])
    p.add_argument("--params", default=None, help="parameter subset, e.g. 'layers.2.*'")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", help="float32 or float64")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over torchrun processes (auto-detected under torchrun)",
    )
    _add_analysis_options(p, exact_limit=0)
    p.set_defaults(func=cmd_analyze)

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

    p = sub.add_parser("list", help="list the reproducible analyses")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("report", help="rebuild report.html of a run folder")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hesslab`` console script."""
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
    except HesslabError as e:
        sys.stderr.write(f"hesslab: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("hesslab: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
