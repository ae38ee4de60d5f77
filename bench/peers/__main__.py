"""Side-by-side benchmark of hesslab against PyHessian, curvlinops, hessian-eigenthings and
BackPACK (issue 5).

Run (after ``bench/install_peers.sh``)::

    .venv/bin/python bench/peers --quick    # P1 only, density at 100 products (~2 min)
    .venv/bin/python bench/peers            # P1-P4 (see PLAN; 20-30 min on 2 shared cores)

Writes ``bench/results/peers.md``, ``peers.json`` and ``peers.png`` (``peers_quick.*``
with ``--quick`` unless ``--out`` is given) and prints the markdown.

Protocol: every problem is trained once with fixed seeds (``bench/problems.py``) and saved
by ``prepare.py`` in a fresh interpreter, which also computes the ground truth; every
library then loads the same float64 weights. Each measurement runs in its own forked child
process (peak memory = the child's ``ru_maxrss`` from ``os.wait4``), methods are interleaved
A B C A B C over the repeats, and tables give medians over >= 3 runs with ratios to hesslab
from the same run. A method that raises, crashes or times out is recorded as a failure
with its error message. Wall times are end to end from the loaded model: building the
library's operator (and whatever it does there) plus the algorithm. Products are the
Hessian-vector products the algorithm applies, counted by wrapping each library's product.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata as md
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
sys.path[:0] = [str(HERE), str(BENCH)]

import harness  # noqa: E402
from figure import plot  # noqa: E402
from methods import COST, DENSITY, DISTS, PEER_MODULES, PLAN, TOPK, TRACE  # noqa: E402
from tables import render, targets  # noqa: E402, F401 (targets: read from here by the tests)


# --------------------------------------------------------------------------- children
def _child(problem_path: str, threads: int, module: str, func: str, kwargs: dict) -> dict:
    """Runs in the forked child: load the saved problem, call the runner."""
    import warnings

    from common import load_problem

    warnings.simplefilter("ignore")  # peers' deprecation/user warnings would flood the log
    prob = load_problem(problem_path, threads)
    mod = importlib.import_module(module)
    return getattr(mod, func)(prob, **kwargs)


def _baseline(problem_path: str, threads: int) -> dict:
    from common import load_problem

    prob = load_problem(problem_path, threads)
    return {"num_params": prob.num_params}


def _preimport() -> dict[str, str]:
    """Import torch, hesslab, the runners and the peers before forking (no numerics)."""
    status = {}
    for mod in (
        "torch",
        "numpy",
        "scipy.sparse.linalg",
        "hesslab",
        "common",
        "eigen",
        "lib_hesslab",
        "lib_pyhessian",
        "lib_curvlinops",
        "lib_eigenthings",
        "lib_backpack",
        *PEER_MODULES,
    ):
        try:
            importlib.import_module(mod)
            status[mod] = "ok"
        except Exception as exc:
            status[mod] = f"{type(exc).__name__}: {exc}"
    return status


# --------------------------------------------------------------------------- prepare
def _cache_key() -> str:
    h = hashlib.sha256()
    files = sorted((ROOT / "src" / "hesslab").rglob("*.py"))
    files += [BENCH / "problems.py", HERE / "prepare.py"]
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    try:
        h.update(md.version("torch").encode())
    except md.PackageNotFoundError:
        pass
    return h.hexdigest()[:16]


def prepare(problem: str, cache: Path, threads: int, need_truth: bool) -> tuple[Path, dict]:
    model_path, truth_path = cache / f"{problem}.pt", cache / f"{problem}_truth.json"
    have = truth_path.exists() and (
        not need_truth or json.loads(truth_path.read_text()).get("top") is not None
    )
    if not (model_path.exists() and have):
        what = "training + ground truth" if need_truth else "training"
        print(f"[peers] preparing {problem} ({what}) in {cache}", flush=True)
        cmd = [sys.executable, str(HERE / "prepare.py"), problem, str(cache)]
        if threads:
            cmd += ["--threads", str(threads)]
        if not need_truth:
            cmd.append("--no-truth")
        subprocess.run(cmd, check=True)
    return model_path, json.loads(truth_path.read_text())


# --------------------------------------------------------------------------- running
def _run(methods, reps, problem_path, threads, timeout, params_list, log, label):
    """Interleave: for each params (k, budget, seed...) and repeat, every method once."""
    records: dict[tuple, list[dict]] = {}
    for params in params_list:
        for rep in range(reps):
            for m in methods:
                kwargs = {**m.call_kwargs(), **params}
                if "seed" in kwargs:
                    kwargs["seed"] = kwargs["seed"] + rep
                out = harness.run_isolated(
                    _child,
                    str(problem_path),
                    threads,
                    m.module,
                    m.func,
                    kwargs,
                    timeout=timeout,
                )
                out["method"], out["params"] = m.name, kwargs
                key = (m.name, *[(k, v) for k, v in params.items() if k != "seed"])
                records.setdefault(key, []).append(out)
                state = "ok" if out.get("ok") else "FAILED " + out.get("error", "")
                log(f"{label} {m.name} {kwargs}: {state} ({out['elapsed_s']:.1f} s)")
    return records


def _strip(rec: dict) -> dict:
    """A run record for the JSON file: drop large arrays and tracebacks."""
    return {k: v for k, v in rec.items() if k not in ("nodes", "weights", "traceback")}


def _section(methods, reps, params, summarize, ratios, raw, extra=None, *, run) -> dict:
    """Every method at ``params`` (``reps`` interleaved runs each), one summary row each.

    ``run(methods, reps, [params])`` runs them (:func:`_run`); each method's runs are
    appended (stripped) to ``raw`` and summarized into ``{**summarize(runs), "library",
    "settings", **extra(runs)}``; ratios to hesslab are added for the ``ratios`` keys.
    """
    recs = run(methods, reps, [params])
    key = tuple((k, v) for k, v in params.items() if k != "seed")
    rows = {}
    for m in methods:
        runs = recs[(m.name, *key)]
        raw += [_strip(r) for r in runs]
        rows[m.name] = {**summarize(runs), "library": m.library, "settings": m.settings}
        rows[m.name].update(extra(runs) if extra else {})
    harness.add_ratios(rows, ratios)
    return rows


def _density_example(runs: list[dict]) -> dict:
    """One measured density per method (the first successful run), for the plot."""
    ok = [r for r in runs if r.get("ok")]
    return {"example": {"nodes": ok[0]["nodes"], "weights": ok[0]["weights"]}} if ok else {}


def bench_problem(name: str, args, cache: Path, log) -> dict[str, Any]:
    plan = PLAN.get(name, PLAN["P2"])
    measures = args.measures or plan["measures"]
    cost_reps = args.cost_reps or plan["cost_reps"]
    cost_block = plan["cost_block"] if args.cost_block is None else args.cost_block
    need_truth = any(m in measures for m in ("topk", "trace", "density"))
    path, truth = prepare(name, cache, args.threads, need_truth)
    reps, timeout = args.reps, args.timeout
    res: dict[str, Any] = {
        "truth": {k: v for k, v in truth.items() if k != "eigs"},
        "measures": measures,
    }
    base = harness.run_isolated(_baseline, str(path), args.threads, timeout=timeout)
    res["baseline_rss_mb"] = base["peak_rss_mb"]
    raw: list[dict] = []
    top = truth.get("top")
    skip = set(args.skip)

    def keep(ms):
        return [m for m in ms if m.name not in skip and m.library not in skip]

    def section(methods, reps_, params, label, summarize, ratios, extra=None):
        return _section(
            keep(methods),
            reps_,
            params,
            summarize,
            ratios,
            raw,
            extra,
            run=lambda ms, r, ps: _run(ms, r, path, args.threads, timeout, ps, log, label),
        )

    if "topk" in measures:
        res["topk"] = {
            str(k): section(
                TOPK,
                reps,
                {"k": k, "seed": 0},
                f"{name} top-{k}",
                lambda runs, k=k: harness.summarize_topk(runs, top, k),
                ["products", "wall_s", "rel_error"],
            )
            for k in args.ks
        }
    if "trace" in measures:
        res["trace"] = section(
            TRACE,
            args.seeds,
            {"budget": args.trace_budget, "seed": 0},
            f"{name} trace",
            lambda runs: harness.summarize_trace(runs, truth["trace"]),
            ["mean_rel_error", "wall_s"],
        )
    if "density" in measures and "eigs" in truth:
        res["density"] = {
            str(budget): section(
                DENSITY,
                reps,
                {"budget": budget, "seed": 0},
                f"{name} density",
                lambda runs: harness.summarize_density(runs, truth["eigs"]),
                ["w1_over_width", "wall_s"],
                extra=_density_example,
            )
            for budget in args.density_budgets
        }
    if "cost" in measures:
        res["cost"] = section(
            COST,
            reps,
            {"reps": cost_reps, "block": cost_block},
            f"{name} cost",
            harness.summarize_cost,
            ["hvp_over_grad"],
        )
    res["runs"] = raw
    if "eigs" in truth:
        res["exact_eigs"] = truth["eigs"]
    return res


# --------------------------------------------------------------------------- main
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    out = {}
    for d in DISTS:
        try:
            out[d] = md.version(d)
        except md.PackageNotFoundError:
            out[d] = "not installed"
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="P1 only")
    ap.add_argument("--problems", nargs="+", default=None, help="default P1 P2 P3 P4")
    ap.add_argument(
        "--measures",
        nargs="+",
        default=None,
        choices=["topk", "trace", "density", "cost"],
        help="default: per problem (P1 all; P2, P3 topk trace cost; P4 cost)",
    )
    ap.add_argument("--skip", nargs="*", default=[], help="method names or libraries to skip")
    ap.add_argument("--ks", nargs="+", type=int, default=[1, 5])
    ap.add_argument("--reps", type=int, default=3, help="runs per method (>= 3)")
    ap.add_argument("--seeds", type=int, default=5, help="trace seeds")
    ap.add_argument("--trace-budget", type=int, default=96)
    ap.add_argument(
        "--density-budgets", nargs="+", type=int, default=None, help="default 100 800 (quick: 100)"
    )
    ap.add_argument("--cost-reps", type=int, default=None, help="timed repeats per child")
    ap.add_argument("--cost-block", type=int, default=None, help="block width (0: none)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per child")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per child")
    ap.add_argument(
        "--cache-dir",
        default=None,
        help="trained problems + truth (default ~/.cache/hesslab/bench-peers/KEY)",
    )
    ap.add_argument("--out", default=None, help="output stem (default bench/results/peers)")
    ap.add_argument(
        "--render", default=None, help="re-write the .md of a saved results .json; no runs"
    )
    return ap


def _fill_defaults(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The problem list, density budgets and cost repeats that depend on ``--quick``."""
    if args.problems is None:
        args.problems = ["P1"] if args.quick else ["P1", "P2", "P3", "P4"]
    if args.density_budgets is None:
        args.density_budgets = [100] if args.quick else [100, 800]
    if args.quick and args.cost_reps is None:
        args.cost_reps = 10
    if args.reps < 3:
        ap.error("--reps must be >= 3 (medians of at least three runs)")


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The output stem and the cache folder (both created)."""
    default_stem = "peers_quick" if args.quick else "peers"
    stem = Path(args.out) if args.out else BENCH / "results" / default_stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    cache = (
        Path(args.cache_dir)
        if args.cache_dir
        else (
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
            / "hesslab"
            / "bench-peers"
            / _cache_key()
        )
    )
    cache.mkdir(parents=True, exist_ok=True)
    return stem, cache


def _meta(args: argparse.Namespace, missing: dict, warm_s: float) -> dict[str, Any]:
    """The run's description: command, machine, versions, settings."""
    return {
        "command": "python bench/peers" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": _cpu_name(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "python": platform.python_version(),
        "versions": _versions(),
        "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "reps": args.reps,
        "seeds": args.seeds,
        "trace_budget": args.trace_budget,
        "missing": missing,
        "torch_warmup_s": warm_s,
    }


def _write(results: dict, stem: Path, log: Callable[[str], None]) -> None:
    """The markdown (also printed), the slim JSON (no eigenvalues or densities), the figure."""
    text = render(results)
    print(text)
    stem.with_suffix(".md").write_text(text + "\n")
    slim = json.loads(json.dumps(results, default=str))
    for res in slim["problems"].values():
        res.pop("exact_eigs", None)
        for rows in res.get("density", {}).values():
            for row in rows.values():
                row.pop("example", None)
    stem.with_suffix(".json").write_text(json.dumps(slim, indent=1) + "\n")
    try:
        plot(results, stem.with_suffix(".png"))
    except Exception as exc:
        log(f"plot failed: {type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> None:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.render:
        src = Path(args.render)
        text = render(json.loads(src.read_text()))
        src.with_suffix(".md").write_text(text + "\n")
        print(text)
        return
    _fill_defaults(ap, args)
    stem, cache = _paths(args)
    t_start = time.time()

    def log(msg: str) -> None:
        print(f"[peers {time.time() - t_start:7.1f}s] {msg}", flush=True)

    imports = _preimport()
    missing = {m: s for m, s in imports.items() if s != "ok"}
    if missing:
        log(f"not importable: {missing} (their rows will be recorded as failures)")
    from common import warm_torch

    warm_s = warm_torch()
    log(f"PyTorch warm-up (lazy imports, functorch) before forking: {warm_s:.1f} s")
    meta = _meta(args, missing, warm_s)
    results: dict[str, Any] = {"meta": meta, "problems": {}}
    for pname in args.problems:
        results["problems"][pname] = bench_problem(pname, args, cache, log)
    meta["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    meta["total_s"] = time.time() - t_start
    _write(results, stem, log)
    log(f"wrote {stem}.md/.json/.png in {meta['total_s']:.0f} s")


if __name__ == "__main__":
    main()
