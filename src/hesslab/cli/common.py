"""What the commands share: output, user-error messages, devices, run folders."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from hesslab.errors import ConfigurationError, DataError, HesslabError

CHECKPOINTS_DIR = "checkpoints"


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
    if "classes" in summary:
        lines.append(f"class structure (Papyan 2020): {summary['classes']['text']}")
    elif "classes_skipped" in summary:
        lines.append(f"class structure (Papyan 2020): {summary['classes_skipped']}")
    for line in lines:
        _out("  " + line)
    _out(f"report: {path}")
