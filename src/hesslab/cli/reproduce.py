"""``hesslab list`` and ``hesslab reproduce``: the paper reproductions."""

from __future__ import annotations

import argparse
import shutil
import time

from hesslab.cli.common import (
    CHECKPOINTS_DIR,
    _already_complete,
    _open_run,
    _out,
)


def cmd_list(args: argparse.Namespace) -> int:
    """``hesslab list``: the reproducible analyses with their expected run times."""
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
    """``hesslab reproduce NAME``: run a paper's reproduction; exit code."""
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
