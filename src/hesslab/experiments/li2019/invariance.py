"""Li et al. (2019), part 4: Σθ²H_jj under function-preserving layer rescaling."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from hesslab.errors import ConfigurationError
from hesslab.experiments._claims import add_claim, all_of, decide
from hesslab.experiments.li2019.config import S4, Li2019Config
from hesslab.experiments.li2019.prediction import within
from hesslab.linalg import trace
from hesslab.measures import scale_invariant_trace
from hesslab.objective import Objective
from hesslab.operators import hessian
from hesslab.reparam import rescale
from hesslab.report.run import RunDir


def _rescalings(cfg: Li2019Config, model: torch.nn.Module) -> list[tuple[float, ...]]:
    n_layers = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    if n_layers < 2:
        raise ConfigurationError("part 4 needs at least one hidden layer (widths non-empty)")
    sets: list[tuple[float, ...]] = [tuple([1.0] * n_layers)]
    for a in cfg.rescale_factors:
        sets.append(tuple([a, 1.0 / a] + [1.0] * (n_layers - 2)))
    if n_layers >= 3:
        sets.append(tuple([2.0, 2.0, 0.25] + [1.0] * (n_layers - 3)))
    return sets


def _invariance_run(cfg: Li2019Config, label: str, model: torch.nn.Module, data) -> dict:
    """``Σθ²H_jj``, ``tr H`` and the loss of one model under each rescaling (exact)."""
    rows = []
    for alphas in _rescalings(cfg, model):
        obj = Objective(rescale(model, list(alphas)), "ce", data, check_determinism=False)
        rows.append(
            {
                "run": label,
                "alphas": str(tuple(round(a, 4) for a in alphas)),
                "loss": obj.value(),
                "tr H": float(trace(hessian(obj), method="exact").value),
                "Σθ²H_jj": scale_invariant_trace(obj, method="exact").value,
            }
        )
    base, loss0 = rows[0]["Σθ²H_jj"], rows[0]["loss"]
    trs = [r["tr H"] for r in rows]
    return {
        "rows": rows,
        "rel": max(abs(r["Σθ²H_jj"] - base) / abs(base) for r in rows),
        "tr_ratio": max(trs) / min(trs),
        "loss_rel": max(abs(r["loss"] - loss0) for r in rows) / abs(loss0),
    }


#: Tolerance of "Σθ²H_jj is invariant": exact in exact arithmetic; float64 round-off on a
#: sum of P ~ 10³ terms is ~ P·ε ~ 1e-13, so 1e-8 leaves 5 orders of slack while staying
#: 6+ orders below the change of tr H.
INVARIANCE_TOL = 1e-8


def part4(cfg: Li2019Config, run_dir: RunDir, runs: dict) -> dict[str, Any]:
    """Part 4: ``Σθ²H_jj`` and ``tr H`` of the first part-1 models under layer rescalings.

    Returns:
        ``{"rows", "max_rel_change", "trace_ratio", "loss_rel_change", "runs", "verdict",
        "trace_verdict", "holds"}``.
    """
    chosen = list(runs.items())[: cfg.invariance_runs]
    per = [
        _invariance_run(cfg, f"noise {frac:g}, B={B}", model, data)
        for (frac, B), (model, data, _) in chosen
    ]
    rels = [p["rel"] for p in per]
    ratios = [p["tr_ratio"] for p in per]
    loss_rel = max(p["loss_rel"] for p in per)
    run_dir.add_text(
        S4,
        f"The first {len(per)} trained ReLU MLPs of part 1 (own init and SGD seed each: "
        + "; ".join(p["rows"][0]["run"] for p in per)
        + ") rescaled layerwise by hesslab.reparam.rescale (Π α = 1: same function); "
        "exact diagonal of H.",
    )
    run_dir.add_table(S4, "rescalings", [r for p in per for r in p["rows"]])
    inv = within(rels, INVARIANCE_TOL)
    changes = decide(np.log(ratios), rule="fraction", margin=math.log(2.0))
    add_claim(
        run_dir,
        S4,
        "Σθ²H_jj is invariant under rescaling",
        inv,
        f"max relative change of Σθ²H_jj per run {', '.join(f'{r:.2g}' for r in rels)}; "
        f"tolerance {INVARIANCE_TOL:g} = float64 round-off allowance (P·ε ~ 1e-13) with 5 "
        f"orders of slack; loss relative change ≤ {loss_rel:.2g}; x = tol − change",
    )
    add_claim(
        run_dir,
        S4,
        "tr H is not invariant under the same rescalings (changes by more than a factor 2)",
        changes,
        f"max/min tr H per run {', '.join(f'{r:.3g}' for r in ratios)} (x = log ratio)",
    )
    return {
        "rows": [r for p in per for r in p["rows"]],
        "max_rel_change": max(rels),
        "trace_ratio": min(ratios),
        "loss_rel_change": loss_rel,
        "runs": len(per),
        "verdict": inv.as_dict(),
        "trace_verdict": changes.as_dict(),
        "holds": all_of(inv, changes),
    }
