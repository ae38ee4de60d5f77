"""The sagun2017 experiments ``sagun2017`` and ``sagun2017-simplex``.

The six parts, the summary and the registry entries.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from hesslab.experiments._base import Context, Experiment, Part
from hesslab.experiments.sagun2017.config import (
    FULL_SECONDS,
    SIMPLEX_FULL_SECONDS,
    SMOKE_SECONDS,
    Sagun2017Config,
    Sagun2017SimplexConfig,
)
from hesslab.experiments.sagun2017.ggn import _part4
from hesslab.experiments.sagun2017.line import _part5
from hesslab.experiments.sagun2017.papyan import _part6
from hesslab.experiments.sagun2017.part1 import _part1
from hesslab.experiments.sagun2017.sweeps import _part2, _part3


def _steps(cfg: Sagun2017Config) -> int:
    return (
        2 * len(cfg.ks) * len(cfg.seeds) + int(cfg.digits) + len(cfg.width_sweep)
        + len(cfg.data_sweep) + len(cfg.ggn_ks) + 3
    )  # fmt: skip


def _parts(cfg: Sagun2017Config) -> list[Part]:
    """The six parts; parts 4 and 6 reuse what part 1 trained."""
    return [
        Part("part1", lambda c: _part1(c.cfg, c.run_dir, c.tick)),
        Part("part2", lambda c: _part2(c.cfg, c.run_dir, c.tick)),
        Part("part3", lambda c: _part3(c.cfg, c.run_dir, c.tick)),
        Part("part4", lambda c: _part4(c.cfg, c.run_dir, c.tick, c.results["part1"]["models"])),
        Part("part5", lambda c: _part5(c.cfg, c.run_dir, c.tick)),
        Part("part6", lambda c: _part6(c.cfg, c.run_dir, c.tick, c.results["part1"]["every"])),
    ]


def _summary(ctx: Context) -> dict[str, Any]:
    """The headline of the six parts and their wall times.

    Returns:
        ``{"outliers": {k: count of the first seed}, "outliers_by_seed": {k: [counts]},
        "digits_outliers": int | None, "width_sweep": {...}, "data_sweep": {...},
        "ggn": {"overlap": {k: float}, ...}, "line": {"barrier": float, ...},
        "class_structure": {...}, "claims": {section: {claim: holds}}, "seconds": {part: float}}``.
    """
    seconds = ctx.record_part_seconds()
    p1 = ctx.results["part1"]
    return {
        "outliers": {k: v[0] for k, v in p1["counts"].items()},
        "outliers_by_seed": p1["counts"],
        "outlier_bounds": p1["bounds"],
        "outlier_verdict": p1["verdict"],
        "digits_outliers": None if p1["digits"] is None else p1["digits"]["outliers"],
        "width_sweep": ctx.results["part2"],
        "data_sweep": ctx.results["part3"],
        "ggn": ctx.results["part4"],
        "line": ctx.results["part5"],
        "class_structure": ctx.results["part6"],
        "claims": ctx.claims,
        "seconds": seconds,
        "config": asdict(ctx.cfg),
    }


_SPEC_TEXT = {
    "paper": (
        "Sagun, Evci, Guney, Dauphin, Bottou (2017), Empirical Analysis of the Hessian "
        "of Over-Parametrized Neural Networks"
    ),
    "arxiv": "1706.04454",
    "smoke_seconds": SMOKE_SECONDS,
    "parts": _parts,
    "summary": _summary,
    "steps": _steps,
}

#: ``sagun2017``: the authors' setup. Reference: Sagun, Evci, Guney, Dauphin, Bottou
#: (2017), "Empirical Analysis of the Hessian of Over-Parametrized Neural Networks",
#: arXiv:1706.04454.
SPEC = Experiment(
    name="sagun2017",
    title="Bulk and outliers of the Hessian (Sagun et al. 2017)",
    description=(
        "Exact Hessian spectra of small ReLU MLPs trained on Gaussian mixtures with k "
        "classes (and an MLP on digits): a bulk near zero plus about k outliers; width "
        "sweep (bulk grows, outliers stay), data sweep (outliers move), Gauss-Newton vs "
        "Hessian outliers, and the line between small- and large-batch solutions."
    ),
    config_type=Sagun2017Config,
    full_seconds=FULL_SECONDS,
    **_SPEC_TEXT,
)

#: ``sagun2017-simplex``: the same analyses on the simplex-mixture variation.
SIMPLEX_SPEC = Experiment(
    name="sagun2017-simplex",
    title="Bulk and outliers of the Hessian, simplex-mixture variation (Sagun et al. 2017)",
    description=(
        "The sagun2017 analyses on a variation of the authors' setup: 10-D Gaussian "
        "mixtures with simplex means, hidden widths (20, 20), a fixed budget of 2,000 "
        "GD steps instead of training to ‖∇L‖ ≤ 1e-4 on 2-D blobs."
    ),
    config_type=Sagun2017SimplexConfig,
    full_seconds=SIMPLEX_FULL_SECONDS,
    **_SPEC_TEXT,
)

#: ``run(run_dir, config=None, progress=None, stages=None) -> dict``: the runner
#: (:meth:`Experiment.run`; ``config=None`` is the smoke size).
run = SPEC.run
