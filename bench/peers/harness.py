"""Library-independent parts of the peer benchmark: isolation, statistics, scoring, tables.

Nothing here imports torch or a peer library, so ``tests/test_bench_peers.py`` can test it
cheaply. The pieces:

* :func:`run_isolated` runs one measurement in a forked child process and returns its
  result dict together with the child's peak resident memory from the OS
  (``os.wait4`` -> ``ru_maxrss``). A child that raises, crashes or runs past its time
  limit gives a failure record (``ok: False`` and the error), never an exception here.
* :func:`median`, :func:`wasserstein1`, :func:`rel_error`, :func:`topk_rel_error`,
  :func:`covers` score the raw outputs against the ground truth.
* :func:`summarize_*` turn the per-run records into table rows (medians over runs,
  ratios to hesslab measured in the same run), :func:`markdown_table` formats them.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

HESSLAB = "hesslab"
Z95 = 1.96  # error bars are read as value +- 1.96 stderr (95% normal interval)


# --------------------------------------------------------------------------- isolation
def _error_text(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    first = msg[0] if msg else ""
    return f"{type(exc).__name__}: {first}"[:300]


def run_isolated(
    fn: Callable[..., dict[str, Any]],
    *args: Any,
    timeout: float = 600.0,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run ``fn(*args, **kwargs)`` in a forked child; return its dict plus OS measurements.

    The parent should not have run multi-threaded (OpenMP) work before forking: with GNU
    OpenMP a child of such a parent can hang. The benchmark's orchestrator only imports
    libraries and reads files; all numerical work happens in children.

    Returns:
        ``fn``'s dict with ``ok: True``, or ``{"ok": False, "error": ...}``; in both cases
        ``peak_rss_mb`` (the child's ``ru_maxrss``; on Linux it starts from the parent's
        resident size at fork, so compare against a baseline child) and ``elapsed_s``
        (wall time of the whole child, for information).
    """
    fd, path = tempfile.mkstemp(prefix="hesslab-peer-", suffix=".json")
    os.close(fd)
    sys.stdout.flush()
    sys.stderr.flush()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            signal.alarm(max(1, math.ceil(timeout)))  # default action of SIGALRM: terminate
            try:
                out = dict(fn(*args, **kwargs))
                out.setdefault("ok", True)
            except BaseException as exc:
                out = {
                    "ok": False,
                    "error": _error_text(exc),
                    "traceback": traceback.format_exc()[-2000:],
                }
            with open(path, "w") as f:
                json.dump(out, f, default=_json_default)
        except BaseException:
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - t0
    out = _read_result(path)
    if out is None:
        out = {"ok": False, "error": _child_failure(status, timeout)}
    out["peak_rss_mb"] = usage.ru_maxrss / 1024.0  # Linux: kilobytes
    out["elapsed_s"] = elapsed
    return out


def _read_result(path: str) -> dict[str, Any] | None:
    """The child's JSON result (``None`` if it wrote none); the file is removed."""
    try:
        with open(path) as f:
            text = f.read()
        return json.loads(text) if text else None
    except (OSError, json.JSONDecodeError):
        return None
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def _child_failure(status: int, timeout: float) -> str:
    """Why a child that wrote no result ended: timeout, signal or exit status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGALRM:
            return f"timeout: no result after {timeout:g} s"
        return f"child killed by signal {signal.Signals(sig).name}"
    return f"child exited with status {os.waitstatus_to_exitcode(status)} and no result"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if hasattr(o, "tolist"):  # torch tensors
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def self_peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- statistics
def median(values: Iterable[float | None]) -> float | None:
    """Median of the finite values, ``None`` when there are none."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return statistics.median(vals) if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, ``None`` when either is missing or ``b`` is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


# --------------------------------------------------------------------------- scoring
def rel_error(estimate: float, truth: float) -> float:
    return abs(float(estimate) - float(truth)) / abs(float(truth))


def topk_rel_error(estimates: Sequence[float], truth_desc: Sequence[float], k: int) -> float:
    """``max_i |est_i - lambda_i| / |lambda_i|`` over the ``k`` largest, both sorted
    descending (an estimate list shorter than ``k`` gives ``inf``)."""
    est = sorted((float(v) for v in estimates), reverse=True)
    if len(est) < k:
        return math.inf
    true = sorted((float(v) for v in truth_desc), reverse=True)[:k]
    return max(rel_error(e, t) for e, t in zip(est[:k], true, strict=True))


def covers(estimate: float, stderr: float | None, truth: float, z: float = Z95) -> bool | None:
    """Whether ``estimate +- z * stderr`` contains ``truth``; ``None`` without an error bar."""
    if stderr is None or not math.isfinite(float(stderr)):
        return None
    return abs(float(estimate) - float(truth)) <= z * float(stderr)


def wasserstein1(
    nodes_a: Sequence[float] | np.ndarray,
    weights_a: Sequence[float] | np.ndarray | None,
    nodes_b: Sequence[float] | np.ndarray,
    weights_b: Sequence[float] | np.ndarray | None = None,
) -> float:
    """Exact 1-Wasserstein distance between two discrete measures on the line.

    ``integral |F_a - F_b| dx`` on the merged sorted support; weights ``None`` mean
    uniform, and each measure is normalised to mass 1. NaN nodes (padding) and zero
    weights are dropped.
    """

    def prep(x, w):
        x = np.asarray(x, dtype=np.float64).ravel()
        w = np.full(x.shape, 1.0) if w is None else np.asarray(w, dtype=np.float64).ravel()
        if w.shape != x.shape:
            raise ValueError(f"nodes {x.shape} and weights {w.shape} differ in shape")
        keep = np.isfinite(x) & np.isfinite(w) & (w > 0)
        x, w = x[keep], w[keep]
        if x.size == 0 or w.sum() <= 0:
            raise ValueError("a measure needs at least one node with positive weight")
        return x, w / w.sum()

    xa, wa = prep(nodes_a, weights_a)
    xb, wb = prep(nodes_b, weights_b)
    x = np.concatenate([xa, xb])
    w = np.concatenate([wa, -wb])
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order]
    cdf = np.cumsum(w)[:-1]
    return float(np.sum(np.abs(cdf) * np.diff(x)))


# --------------------------------------------------------------------------- summaries
def _ok(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r.get("ok")]


def _failure(runs: list[dict]) -> str | None:
    bad = [r for r in runs if not r.get("ok")]
    if not bad:
        return None
    errs = sorted({r.get("error", "?") for r in bad})
    return f"{len(bad)}/{len(runs)} runs failed: " + "; ".join(errs)


def summarize_topk(runs: list[dict], truth_desc: Sequence[float], k: int) -> dict[str, Any]:
    """Median products / wall / rel. error of one method's top-``k`` runs."""
    ok = _ok(runs)
    errs = [topk_rel_error(r["values"], truth_desc, k) for r in ok]
    return {
        "runs": len(runs),
        "ok_runs": len(ok),
        "products": median(r.get("products") for r in ok),
        "wall_s": median(r.get("wall_s") for r in ok),
        "setup_s": median(r.get("setup_s") for r in ok),
        "rel_error": median(errs),
        "max_rel_error": max(errs) if errs else None,
        "peak_rss_mb": max((r["peak_rss_mb"] for r in runs if "peak_rss_mb" in r), default=None),
        "failure": _failure(runs),
    }


def summarize_trace(runs: list[dict], truth: float) -> dict[str, Any]:
    """Mean / max |rel. error| over seeds, error-bar coverage, median products and wall."""
    ok = _ok(runs)
    errs = [rel_error(r["value"], truth) for r in ok]
    cov = [covers(r["value"], r.get("stderr"), truth) for r in ok]
    has_bar = [c for c in cov if c is not None]
    return {
        "runs": len(runs),
        "ok_runs": len(ok),
        "products": median(r.get("products") for r in ok),
        "wall_s": median(r.get("wall_s") for r in ok),
        "mean_rel_error": float(np.mean(errs)) if errs else None,
        # standard error of that mean over seeds: differences smaller than about twice
        # this are not resolved by the number of seeds
        "mean_rel_error_se": (
            float(np.std(errs, ddof=1) / np.sqrt(len(errs))) if len(errs) > 1 else None
        ),
        "max_rel_error": max(errs) if errs else None,
        "error_bar": bool(has_bar),
        "covered": sum(has_bar) if has_bar else None,
        "exact": any(bool(r.get("exact")) for r in ok),
        "peak_rss_mb": max((r["peak_rss_mb"] for r in runs if "peak_rss_mb" in r), default=None),
        "failure": _failure(runs),
    }


def summarize_density(runs: list[dict], exact_eigs: Sequence[float]) -> dict[str, Any]:
    """Median W1(estimate, exact) / spectral width over runs."""
    eigs = np.asarray(exact_eigs, dtype=np.float64)
    width = float(eigs.max() - eigs.min())
    ok = _ok(runs)
    w1 = [wasserstein1(r["nodes"], r["weights"], eigs) / width for r in ok]
    return {
        "runs": len(runs),
        "ok_runs": len(ok),
        "products": median(r.get("products") for r in ok),
        "wall_s": median(r.get("wall_s") for r in ok),
        "w1_over_width": median(w1),
        "max_w1_over_width": max(w1) if w1 else None,
        "peak_rss_mb": max((r["peak_rss_mb"] for r in runs if "peak_rss_mb" in r), default=None),
        "failure": _failure(runs),
    }


def summarize_cost(runs: list[dict]) -> dict[str, Any]:
    ok = _ok(runs)
    return {
        "runs": len(runs),
        "ok_runs": len(ok),
        "hvp_over_grad": median(r.get("hvp_over_grad") for r in ok),
        "block_over_grad": median(r.get("block_over_grad") for r in ok),
        "hvp_ms": median(None if r.get("hvp_s") is None else 1e3 * r["hvp_s"] for r in ok),
        "grad_ms": median(None if r.get("grad_s") is None else 1e3 * r["grad_s"] for r in ok),
        "peak_rss_mb": max((r["peak_rss_mb"] for r in runs if "peak_rss_mb" in r), default=None),
        "failure": _failure(runs),
    }


def add_ratios(rows: dict[str, dict], keys: Sequence[str], ref: str = HESSLAB) -> None:
    """Add ``<key>_vs_hesslab = row[key] / rows[ref][key]`` to every row (in place)."""
    base = rows.get(ref, {})
    for row in rows.values():
        for key in keys:
            row[f"{key}_vs_{ref}"] = ratio(row.get(key), base.get(key))


# --------------------------------------------------------------------------- formatting
def fmt(x: Any, spec: str = ".3g") -> str:
    """Table cell: ``-`` for missing, ``yes``/``no`` for booleans, else ``format(x, spec)``."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else "nan"
    if isinstance(x, (int, float)):
        return format(x, spec)
    return str(x)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """Markdown table lines; pipes inside cells are escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(c).replace("|", "\\|").replace("\n", " ") for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
