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

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from hesslab.errors import ConfigurationError, DataError, HesslabError

__all__ = ["UserCodeError", "main"]

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


# ------------------------------------------------------------------------ errors
class UserCodeError(HesslabError):
    """The user's own code (model file, factory, forward pass) raised an exception.

    The message names the step, the exception's type and first line, the line of the
    user's file where it was raised (when known) and what to check; the original
    exception is chained (``--debug`` prints both tracebacks).
    """


def _one_line(e: BaseException) -> str:
    """``Type: first line of the message`` (at most 240 characters)."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # torch colours some messages
    lines = [ln.strip() for ln in plain.splitlines() if ln.strip()]
    text = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    return text if len(text) <= 240 else text[:237] + "..."


def _where(e: BaseException, file: str | Path | None) -> str:
    """`` at file.py:LINE``: the deepest line of ``file`` in ``e``'s traceback, or ``""``."""
    if file is None:
        return ""
    target = Path(file).resolve()
    if isinstance(e, SyntaxError) and e.filename and Path(e.filename).resolve() == target:
        return f" at {target.name}:{e.lineno}"
    hits = [
        fr for fr in traceback.extract_tb(e.__traceback__) if Path(fr.filename).resolve() == target
    ]
    return f" at {target.name}:{hits[-1].lineno}" if hits else ""


@contextlib.contextmanager
def _user_code(what: str, fix: str, file: str | Path | None = None) -> Iterator[None]:
    """Turn an exception raised by the user's code inside the block into a one-liner.

    ``HesslabError`` and ``KeyboardInterrupt`` pass through unchanged; any other exception
    becomes :class:`UserCodeError` ``"<what> (<Type>: <first line>) at <file>:<line>;
    <fix>"`` chained to the original.
    """
    try:
        yield
    except HesslabError:
        raise
    except Exception as e:
        raise UserCodeError(f"{what} ({_one_line(e)}){_where(e, file)}; {fix}") from e


def _model_file(args: argparse.Namespace) -> str | None:
    spec = getattr(args, "model", None)
    return spec.rpartition(":")[0] if spec and ":" in spec else None


def _classify(e: Exception, args: argparse.Namespace) -> str | None:
    """The one-line message of a user error, or ``None`` for a bug in hesslab."""
    if isinstance(e, HesslabError):
        return " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())
    if isinstance(e, MemoryError) or "OutOfMemoryError" in type(e).__name__:
        return (
            f"out of memory ({_one_line(e)}); use a smaller --batch-size, --basis-device cpu "
            "or disk, a --params subset, or a smaller --exact-limit"
        )
    where = _where(e, _model_file(args))
    if where:  # raised inside the user's model file (e.g. a custom forward)
        return (
            f"your model code raised {_one_line(e)}{where}; fix the model "
            "(run with --debug for the traceback)"
        )
    return None


def _report_error(e: Exception, args: argparse.Namespace) -> int:
    """Print ``e`` as a one-line user error (exit code 2) or as a hesslab bug (1)."""
    message = _classify(e, args)
    if message is None or getattr(args, "debug", False):
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    if message is None:
        sys.stderr.write(
            f"hesslab: internal error: {_one_line(e)}. This is a bug in hesslab; please "
            "report it with the traceback above (and the command that caused it).\n"
        )
        return 1
    sys.stderr.write(f"hesslab: error: {message}\n")
    return 2


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


def _device(name: str, option: str = "--device") -> torch.device:
    """``torch.device(name)``, checked to exist here (a tensor can be made on it)."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise ConfigurationError(
            f"{option} {name!r} is not a device name ({_one_line(e)[:80]}...); use cpu, cuda, "
            "cuda:N or mps"
        ) from None
    if device.type == "meta":
        raise ConfigurationError(f"{option} meta holds no data; use {option} cpu or cuda")
    if device.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigurationError(
                f"{option} {name}: CUDA is not available here (torch.cuda.is_available() is "
                f"False, torch {torch.__version__}); use {option} cpu"
            )
        if device.index is not None and device.index >= n:
            raise ConfigurationError(
                f"{option} {name}: there are {n} CUDA device(s) here (cuda:0..cuda:{n - 1}); "
                f"pick one of them"
            )
    try:
        torch.zeros(1, device=device) + 1
    except Exception as e:
        raise ConfigurationError(
            f"{option} {name} cannot be used here ({_one_line(e)[:120]}); use {option} cpu"
        ) from None
    return device


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
    if not what:
        raise ConfigurationError(
            f"--what {args.what!r} selects no part; give some of {','.join(PARTS)} (or all)"
        )
    cfg = AnalysisConfig(
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
    if cfg.basis_device not in (None, "disk"):
        _device(cfg.basis_device, "--basis-device")
    return cfg


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
        try:
            return RunDir.create(args.out, name, config, **kw)
        except OSError as e:
            raise ConfigurationError(
                f"--out {args.out}: cannot create a run folder there ({_one_line(e)}); pass "
                "a writable folder"
            ) from e
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
    try:
        widths = [int(w) for w in args.widths.split(",") if w.strip()]
    except ValueError:
        widths = [0]
    if not widths or min(widths) < 1:
        raise ConfigurationError(
            f"--widths must be comma-separated positive integers, e.g. 32,32; got {args.widths!r}"
        )
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
    """The callable ``factory`` of ``--model path/to/file.py:factory``."""
    if ":" not in spec:
        raise ConfigurationError(f"--model must look like path/to/file.py:factory, got {spec!r}")
    path, _, name = spec.rpartition(":")
    file = Path(path)
    if not file.is_file():
        raise ConfigurationError(
            f"--model file {file} does not exist; pass path/to/file.py:factory with an "
            "existing file"
        )
    mod_spec = importlib.util.spec_from_file_location(f"hesslab_user_{file.stem}", file)
    if mod_spec is None or mod_spec.loader is None:
        raise ConfigurationError(f"cannot import {file} as a Python module; pass a .py file")
    module = importlib.util.module_from_spec(mod_spec)
    with _user_code(
        f"cannot import the --model file {file}",
        "fix the file (it must run with `python " + str(file) + "`)",
        file,
    ):
        mod_spec.loader.exec_module(module)
    if not hasattr(module, name):
        public = sorted(n for n, v in vars(module).items() if callable(v) and n[0] != "_")
        raise ConfigurationError(
            f"{file} defines no {name!r}; callables it defines: {', '.join(public) or 'none'}"
        )
    factory = getattr(module, name)
    if not callable(factory):
        raise ConfigurationError(f"{spec} is not callable; name a function returning a Module")
    return factory


def _build_model(spec: str) -> torch.nn.Module:
    """The ``nn.Module`` that ``--model FILE:factory`` builds."""
    factory = _load_factory(spec)
    file = spec.rpartition(":")[0]
    with _user_code(f"the --model factory {spec}() raised", "fix the factory", file):
        model = factory()
    if not isinstance(model, torch.nn.Module):
        raise ConfigurationError(
            f"{spec} returned a {type(model).__name__}, not a torch.nn.Module; return the model"
        )
    return model


def _names(keys: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _load_weights(model: torch.nn.Module, path: str) -> None:
    """Load ``--weights`` (a state_dict file) into ``model``, or say why it cannot be."""
    fix = "save them with torch.save(model.state_dict(), path) from the model --model builds"
    if not Path(path).is_file():
        raise DataError(f"--weights {path}: no such file; {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(
            f"--weights {path} cannot be read by torch.load(weights_only=True) "
            f"({_one_line(e)[:160]}); the file is truncated, not a PyTorch file, or holds "
            f"pickled objects: {fix}"
        ) from e
    for key in ("state_dict", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"--weights {path} holds a {type(state).__name__}, not a state_dict; {fix}")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    sizes = [
        f"{k} (file {list(state[k].shape)}, model {list(own[k].shape)})"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = [f"missing {_names(missing)}"] if missing else []
    problems += [f"unexpected {_names(extra)}"] if extra else []
    problems += [f"size mismatch for {_names(sizes, 2)}"] if sizes else []
    if problems:
        hint = ""
        if extra and all(k.startswith("module.") for k in extra):
            hint = " (keys start with 'module.': save model.module.state_dict())"
        raise DataError(
            f"--weights {path} do not fit the model of --model: {'; '.join(problems)}{hint}; {fix}"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise DataError(f"--weights {path}: {_names(bad)} hold NaN or inf values; {fix}")
    model.load_state_dict(state)


def _check_model_on_data(args: argparse.Namespace, model: torch.nn.Module, part: Any) -> None:
    """One forward pass on the first points, and the labels against the outputs.

    Catches what would otherwise surface deep in the first curvature product: a model
    whose input size does not fit the data, outputs that are not a tensor, class labels
    outside ``0..C-1`` for the model's ``C`` outputs (``ce``, and ``mse`` with one-hot
    targets) and regression targets whose shape differs from the outputs' (``mse``).
    """
    n = min(len(part), args.batch_size or len(part), 64)
    x = part.x[:n].to(next(model.parameters()).device)
    with (
        _user_code(
            f"the model's forward pass on the first {n} points of --data {args.data} failed",
            f"the data has inputs of shape {list(part.x.shape[1:])} per point: make --model "
            "accept them, or pass the data it was built for",
            _model_file(args),
        ),
        torch.no_grad(),
    ):
        out = model(x)
    if not isinstance(out, torch.Tensor):
        raise ConfigurationError(
            f"the model returns a {type(out).__name__}, not a tensor of outputs; wrap it so "
            "that forward returns the logits (or use the Python API with a custom loss)"
        )
    _check_targets(args, out, part.y)


def _shape_n(t: torch.Tensor) -> str:
    """``[N, d1, ...]``: the shape of a batch with its leading dimension named N."""
    return "[" + ", ".join(["N", *map(str, t.shape[1:])]) + "]"


def _check_targets(args: argparse.Namespace, out: torch.Tensor, y: torch.Tensor) -> None:
    shape = list(out.shape[1:])
    if y.is_floating_point():
        if args.loss == "ce":
            raise DataError(
                f"--loss ce needs integer class labels, but --data {args.data} holds floating "
                "targets (regression); use --loss mse, or store the labels as integers"
            )
        if list(y.shape[1:]) != shape:
            raise DataError(
                f"--loss mse: --data {args.data} has targets of shape {_shape_n(y)} but the "
                f"model outputs {_shape_n(out)} (a broadcast would give a wrong loss); store "
                f"targets of shape {_shape_n(out)}, or make the model output {_shape_n(y)}"
            )
        return
    if out.ndim < 2 or (args.loss == "mse" and out.ndim != 2):
        need = "[N, C] (class scores)" if args.loss == "ce" else "[N, C] for one-hot targets"
        raise DataError(
            f"--loss {args.loss} with class labels needs model outputs {need}, got "
            f"{list(out.shape)}; make the model output one score per class"
        )
    shape_y = y.shape
    y = y[y != -100]  # ignore_index of cross-entropy and the LM losses: not a label
    if not y.numel():
        return
    seq = args.loss in ("causal_lm", "masked_lm") or (
        out.ndim == 3 and out.shape[:-1] == shape_y
    )  # [N, T, V] logits with [N, T] labels: the classes are the last dimension
    lo, hi, classes = int(y.min()), int(y.max()), out.shape[-1 if seq else 1]
    if lo < 0 or hi >= classes:
        raise DataError(
            f"--data {args.data} has labels in [{lo}, {hi}] but the model outputs {classes} "
            f"scores per point (labels must be 0..{classes - 1}); give the model "
            f"{max(hi + 1, classes)} outputs, or relabel the data"
        )


def _analyze_inputs(args: argparse.Namespace) -> tuple[torch.nn.Module, Any, torch.device]:
    """The model (with ``--weights``, on ``--device``) and the data part to analyse."""
    from hesslab.data import load_data

    dtype = _dtype(args.dtype)
    device = _device(args.device)
    loaded = load_data(args.data, dtype=dtype)
    model = _make_model(args, loaded)
    if args.weights:
        _load_weights(model, args.weights)
    if next(model.parameters(), None) is None:
        raise ConfigurationError(f"{args.model} builds a model without parameters")
    model = model.to(device=device, dtype=dtype).eval()
    part = getattr(loaded, args.split, None) if hasattr(loaded, "train") else loaded
    if part is None:
        raise DataError(
            f"data {args.data!r} has no {args.split!r} split; use --split train (or store "
            "x_test and y_test in the file)"
        )
    if args.max_points and len(part) > args.max_points:
        part = part.subset(torch.arange(args.max_points))
    _check_model_on_data(args, model, part)
    return model, part, device


def _make_model(args: argparse.Namespace, data: Any) -> torch.nn.Module:
    """``--model``: a zoo name (sizes from the data, ``--model-option`` s) or ``file.py:fn``."""
    from hesslab.experiments._base import parse_value
    from hesslab.models import MODELS, build_model

    options = {}
    for item in args.model_option or []:
        key, sep, value = str(item).partition("=")
        if not sep:
            raise ConfigurationError(f"--model-option {item!r} must look like key=value")
        options[key.strip()] = parse_value(value.strip())
    if ":" not in args.model and args.model.lower().replace("-", "_") in MODELS:
        return build_model(args.model, data, **{"seed": args.seed, **options})
    if options:
        raise ConfigurationError("--model-option applies to zoo models (--model gpt, ...) only")
    return _build_model(args.model)


def cmd_analyze(args: argparse.Namespace) -> int:
    from hesslab import Objective
    from hesslab.analysis import analyze
    from hesslab.report.run import RunDir

    t0 = time.perf_counter()
    if args.loss is None:  # the bundled text is a language-modelling corpus
        args.loss = "causal_lm" if args.data == "text" else "ce"
    model, part, device = _analyze_inputs(args)
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
        "model_options": list(args.model_option or []),
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
    from hesslab.experiments import get_experiment
    from hesslab.report.progress import progress_bar
    from hesslab.stages import StageStore

    spec = get_experiment(args.name)
    overrides = list(args.set or [])
    if args.seed is not None:
        fields = spec.config(smoke=args.smoke)
        overrides.append(f"seeds=[{args.seed}]" if "seeds" in fields else f"seed={args.seed}")
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


def cmd_compare(args: argparse.Namespace) -> int:
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


# ------------------------------------------------------------------- parsing
def _add_analysis_options(p: argparse.ArgumentParser, *, exact_limit: int) -> None:
    g = p.add_argument_group("analysis")
    g.add_argument(
        "--what",
        default="eig,trace,density,layers,ggn",
        help="comma-separated parts: eig,trace,density,layers,ggn (or 'all')",
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
