"""Run an experiment's smoke config into a fresh run folder (the experiment tests' fixture)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hesslab.report.run import RunDir


def run_smoke(spec: Any, out: Path) -> tuple[RunDir, Any, list[float]]:
    """``(run folder, result, progress fractions)`` of ``spec``'s smoke config under ``out``."""
    cfg = spec.config(smoke=True)
    run = RunDir.create(out, spec.name, config=cfg, command=["x"])
    calls: list[float] = []
    result = spec.run(run, cfg, progress=lambda desc, frac: calls.append(frac))
    run.finalize()
    return run, result, calls
