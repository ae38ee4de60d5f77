"""Li et al. (2019), part 2: predicted vs actual one-step loss change, and its claims."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hesslab.experiments._claims import Verdict, add_claim, decide
from hesslab.experiments.li2019.config import S2, Li2019Config, _gen
from hesslab.experiments.li2019.onestep import (
    _hm_trace_stochastic,
    all_sample_gradients,
    predicted_change,
    sampled_change,
)
from hesslab.objective import Objective
from hesslab.operators import gradient_moment, hessian
from hesslab.report import plots
from hesslab.report.run import RunDir


def _point(
    cfg: Li2019Config,
    obj: Objective,
    G: Tensor,
    mats: dict[str, Any],
    B: int,
    seed: int,
    *,
    c: float,
    kind: str,
) -> dict[str, Any]:
    """Predicted vs sampled one-step change at ``η = c/λ_max`` (SGD) or ``c/λ_max(DHD)``."""
    gbar, H, M, D = mats["gbar"], mats["H"], mats["M"], mats["D"]
    lr = c / (mats["lmax"] if kind == "SGD" else mats["lmax_d"])
    pre = None if kind == "SGD" else D
    pred = predicted_change(gbar, H, M, lr, pre)
    dg = gbar if pre is None else pre * gbar
    pred_curv = pred + lr * float(gbar @ dg)
    s = sampled_change(obj, G, B, lr, cfg.pred_samples, _gen(seed), precond=pre)
    return {
        "c": c,
        "kind": kind,
        "lr": lr,
        "predicted": pred,
        "actual": s["mean"],
        "actual_se": s["stderr"],
        "actual_cv": s["cv_mean"],
        "actual_cv_se": s["cv_stderr"],
        "rel_error": abs(s["cv_mean"] - pred) / abs(pred),
        "curv_predicted": pred_curv,
        "curv_actual": s["curv_mean"],
        "curv_se": s["curv_stderr"],
        "curv_rel_error": abs(s["curv_mean"] - pred_curv) / abs(pred_curv),
    }


def _one_run(
    cfg: Li2019Config, n: int, frac: float, B: int, model: torch.nn.Module, data: Any
) -> dict[str, Any]:
    """Run ``n`` of part 1 at its end: dense ``H``, ``M_B``, ``Tr(H M_B)`` and the points."""
    obj = Objective(model, "ce", data, check_determinism=False)
    G = all_sample_gradients(obj)
    gbar = G.mean(1)
    H = hessian(obj).to_dense()
    H = 0.5 * (H + H.T)
    M = gradient_moment(obj, kind="minibatch", batch_size=B).to_dense()
    trHM = float((H * M.T).sum())
    trHM_s, trHM_se = _hm_trace_stochastic(H, M, cfg.pred_probes, cfg.seed + 31 * n)
    lmax = float(torch.linalg.eigvalsh(H)[-1])
    v = torch.diagonal(M)
    D = 1.0 / (v.sqrt() + cfg.adam_eps)
    DHD = D[:, None] * H * D[None, :]
    lmax_d = float(torch.linalg.eigvalsh(0.5 * (DHD + DHD.T))[-1])
    mats = {"gbar": gbar, "H": H, "M": M, "D": D, "lmax": lmax, "lmax_d": lmax_d}
    entry: dict[str, Any] = {
        "noise": frac,
        "B": B,
        "grad_norm_sq": float(gbar @ gbar),
        "trace_HM_exact": trHM,
        "trace_HM_hutchinson": trHM_s,
        "trace_HM_hutchinson_se": trHM_se,
        "lambda_max": lmax,
        "points": [],
    }
    for i, c in enumerate(cfg.pred_lr_factors):
        for kind in ("SGD", "Adam-like") if i == 0 else ("SGD",):
            seed = cfg.seed + 97 * n + i
            entry["points"].append(_point(cfg, obj, G, mats, B, seed, c=c, kind=kind))
    return entry


def part2(
    cfg: Li2019Config, run_dir: RunDir, runs: dict, tick: Callable[[str], None]
) -> dict[str, Any]:
    """Part 2: predicted vs sampled one-step loss change at the end of each part-1 run.

    Returns:
        ``{"entries": [...], "holds", "verdict", "curvature_holds", "max_small_rel_error",
        "max_small_curv_rel_error", "signed_rel_errors"}``.
    """
    run_dir.add_text(
        S2,
        "At the end of each run of part 1 (fixed θ): predicted E[L(θ − η g_B)] − L(θ) = "
        "−η‖∇L‖² + (η²/2)Tr(H M_B) (dense H and M_B; also Hutchinson on ½(HM + MH)) vs "
        f"the mean over K = {cfg.pred_samples} sampled minibatches (± stderr), for "
        "η = c/λ_max. 'curvature' compares the second-order term alone with the "
        "control-variate mean of Δ + η∇Lᵀg_B. 'Adam-like' uses θ − ηDg_B, "
        "D = diag(1/(√diag(M_B) + ε)), with η = c/λ_max(DHD).",
    )
    out = []
    for n, ((frac, B), (model, data, _)) in enumerate(runs.items()):
        out.append(_one_run(cfg, n, frac, B, model, data))
        tick(f"one-step prediction noise {frac}, B={B}")
    _report_part2(cfg, run_dir, out)
    small = [e["points"][0] for e in out]  # SGD at the smallest c
    small_adam = [p for e in out for p in e["points"] if p["kind"] == "Adam-like"]
    verdict, curv_verdict = _part2_claims(cfg, run_dir, small, small_adam)
    return {
        "entries": out,
        "holds": verdict.holds,
        "verdict": verdict.as_dict(),
        "curvature_holds": curv_verdict.holds,
        "max_small_rel_error": max(p["rel_error"] for p in small),
        "max_small_curv_rel_error": max(p["curv_rel_error"] for p in small),
        "signed_rel_errors": [_signed_rel(p, "actual_cv", "predicted") for p in small],
    }


def _report_part2(cfg: Li2019Config, run_dir: RunDir, out: list[dict[str, Any]]) -> None:
    """Part 2's tables (points, ``Tr(H M_B)``) and the one-step figure of the first run."""
    rows = [{"noise": e["noise"], "B": e["B"], **pt} for e in out for pt in e["points"]]
    run_dir.add_table(S2, "one-step loss change", rows)
    run_dir.add_table(
        S2,
        "Tr(H M_B)",
        [
            {
                "noise": e["noise"],
                "B": e["B"],
                "exact": e["trace_HM_exact"],
                "Hutchinson": e["trace_HM_hutchinson"],
                "± se": e["trace_HM_hutchinson_se"],
                "‖∇L‖²": e["grad_norm_sq"],
            }
            for e in out
        ],
        caption=f"Hutchinson with {cfg.pred_probes} Rademacher probes on ½(HM_B + M_BH).",
    )
    e0 = out[0]
    sgd = [p for p in e0["points"] if p["kind"] == "SGD"]
    cs = np.asarray([p["c"] for p in sgd])
    run_dir.add_figure(
        S2,
        "one_step",
        plots.plot_series(
            cs,
            {
                "predicted": np.asarray([p["predicted"] for p in sgd]),
                "actual (control variate)": (
                    np.asarray([p["actual_cv"] for p in sgd]),
                    np.asarray([p["actual_cv_se"] for p in sgd]),
                ),
            },
            title=f"one-step change, noise {e0['noise']:g}, B={e0['B']}",
            xlabel="c = η λ_max",
            ylabel="E[L(θ−ηg_B)] − L(θ)",
        ),
        caption="Second-order prediction vs sampled mean (± stderr) against the step size.",
    )


def _signed_rel(p: dict[str, float], actual: str, predicted: str) -> float:
    return (p[actual] - p[predicted]) / abs(p[predicted])


def within(errors: Any, tol: float) -> Verdict:
    """Whether ``|error| ≤ tol`` over runs: ``x = tol − |errorᵢ|`` positive by 2 s.e.

    One-sided and strict (as in a two-one-sided-tests equivalence): a noisy sample is
    *undecided*, never a confirmation, and signed errors cannot cancel (unlike
    ``|mean error| ≤ tol + 2 s.e.``); does not hold when the mean ``|error|`` exceeds
    ``tol`` by 2 s.e. (:func:`~hesslab.experiments._claims.decide`, ``rule="paired"``).
    """
    err = np.abs(np.asarray(errors, dtype=np.float64))
    return decide(np.full(err.shape, float(tol)), err, rule="paired")


def _part2_claims(
    cfg: Li2019Config, run_dir: RunDir, small: list, small_adam: list
) -> tuple[Verdict, Verdict]:
    """Part 2's verdicts: equivalence over the part-1 runs (own init and SGD seed each, ≥ 3).

    Each run gives the relative error ``(actual − predicted)/|predicted|`` at the
    smallest ``c``; the claim holds when the mean ``|error|`` over the runs is below
    ``tol`` by 2 standard errors (:func:`within`).
    """
    c0 = cfg.pred_lr_factors[0]
    rel = [_signed_rel(p, "actual_cv", "predicted") for p in small]
    mc = float(np.median([p["actual_cv_se"] / abs(p["predicted"]) for p in small]))
    z_plain = [(p["actual"] - p["predicted"]) / p["actual_se"] for p in small]
    tol = cfg.pred_rel_tol
    verdict = within(rel, tol)
    add_claim(
        run_dir,
        S2,
        f"the second-order prediction matches the actual one-step change for small η "
        f"(c = {c0:g}; mean |relative error| over the runs below {tol:.0%})",
        verdict,
        f"relative errors {', '.join(f'{r:+.2%}' for r in rel)} over {len(rel)} runs "
        f"(noise x B, own init and SGD seed each); the tolerance {tol:.0%} is the O(η³) remainder "
        f"allowance (≈ c = {c0:g} of the second-order term, plus ReLU kinks), above the "
        f"sampled mean's own resolution (median relative s.e. {mc:.2%}); plain sample "
        f"mean vs prediction in s.e.: {', '.join(f'{z:+.1f}' for z in z_plain)}; "
        f"x = {tol:g} − |relative error|",
    )
    curv = [_signed_rel(p, "curv_actual", "curv_predicted") for p in small]
    curv_verdict = within(curv, 0.1)
    add_claim(
        run_dir,
        S2,
        "the curvature term (η²/2)Tr(H M_B) alone matches the measured Δ + η∇Lᵀg_B at "
        "small η (mean |relative error| below 10%; a stricter test than the claim "
        "above: with ReLU the Hessian misses the kinks crossed by the step)",
        curv_verdict,
        f"relative errors {', '.join(f'{r:+.2%}' for r in curv)} over {len(curv)} runs; "
        "x = 0.1 − |relative error|",
    )
    if small_adam:
        adam = [_signed_rel(p, "actual_cv", "predicted") for p in small_adam]
        add_claim(
            run_dir,
            S2,
            "Adam-like preconditioned step: −η∇LᵀD∇L + (η²/2)Tr(DHDM_B) matches at small η "
            f"(mean |relative error| over the runs below {tol:.0%})",
            within(adam, tol),
            f"relative errors {', '.join(f'{r:+.2%}' for r in adam)} over {len(adam)} runs; "
            f"x = {tol:g} − |relative error|",
        )
    return verdict, curv_verdict
