"""The claim-vs-measured rows of the sagun2017 parts.

One claims schema keyed by (section, claim), :mod:`hesslab.experiments._claims`.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from hesslab.experiments._claims import add_claim, decide, record
from hesslab.experiments.sagun2017.config import S1, S2, S3, S4, S5, S6, Sagun2017Config
from hesslab.experiments.sagun2017.spectra import _fmt
from hesslab.experiments.sagun2017.train import _is_min
from hesslab.report.run import RunDir


def _part1_claim(cfg, run, counts, bounds, minima, digits_out):
    """The claim "count = k", decided by the share of (k, seed) runs whose count is k (≥ 2/3)."""
    runs = [(k, n) for k in cfg.ks for n in counts[k]]
    hits = [float(n == k) for k, n in runs]
    if cfg.grad_tol is not None:  # trained to a criterion: decide over the actual minima
        hits = [h for h, m in zip(hits, minima, strict=True) if m]
    verdict = decide(hits, rule="fraction", margin=0.5)
    in_range = sum(lo <= k <= hi for k in cfg.ks for lo, hi in bounds[k])
    eq_k1 = sum(n == k - 1 for k, n in runs)
    at_least = sum(n >= k for k, n in runs)
    measured = (
        f"count = k in {int(sum(hits))}/{len(runs)} runs (k within the plausible range in "
        f"{in_range}/{len(runs)}), = k−1 in {eq_k1}/{len(runs)}, ≥ k in "
        f"{at_least}/{len(runs)} (bulk edge by count_outliers' density rule; part 6 "
        "tells the class outliers from the cross-class ones above the edge); "
        + "; ".join(f"k={k}: {counts[k]}" for k in cfg.ks)
        + f"; minima (‖∇L‖ ≤ {cfg.minimum_tol:g}) {sum(minima)}/{len(minima)}"
        + (
            "; the verdict counts the minima only"
            if cfg.grad_tol is not None
            else "; fixed GD budget: the verdict counts every run"
        )
    )
    if digits_out is not None:
        d = digits_out
        measured += f"; digits (k=10): {d['outliers']} (plausible {d['plausible']})"
    add_claim(
        run,
        S1,
        "The spectrum is a bulk near zero plus outliers, and the number of outliers equals "
        "the number of classes k (Sagun et al. 2017; Papyan 2018 also report k, with k−1 "
        "for some cross-entropy setups).",
        verdict,
        measured,
    )
    return verdict


def _part6_claims(cfg: Sagun2017Config, run: RunDir, rows: list[dict[str, Any]]) -> None:
    use = [r for r in rows if r["minimum"]] if cfg.grad_tol is not None else rows
    which = "the minima only" if cfg.grad_tol is not None else "every run"
    hits = [float(r["n_class"] in (r["k"] - 1, r["k"])) for r in use]
    add_claim(
        run,
        S6,
        "Outliers ≈ number of classes, explained: the leading eigenvectors of G that lie "
        "in the span of the C class means number C or C−1 (Papyan 2020).",
        decide(hits, rule="fraction", margin=0.5),
        "; ".join(f"k={r['k']} s{r['seed']}: {r['n_class']}" for r in rows)
        + f"; minima {sum(r['minimum'] for r in rows)}/{len(rows)}; the verdict counts {which}",
    )
    mini = [r for r in use if r["k"] > 2]
    hits = [float(r["n_mini"] >= 1) for r in mini]
    add_claim(
        run,
        S6,
        "A mini-bulk follows the class outliers: at least one further eigenvector of G "
        "lies in the span of the class and cross-class means (up to C(C−1)), for C > 2.",
        decide(hits, rule="fraction", margin=0.5),
        "; ".join(f"k={r['k']} s{r['seed']}: {r['n_mini']}" for r in mini)
        + f"; the verdict counts {which}",
    )


def _part2_claim(
    cfg: Sagun2017Config,
    run: RunDir,
    k: int,
    Ps: list[int],
    zeros: list[int],
    counts: list[int],
    stability: float,
    mins: int,
) -> None:
    """Width sweep: the near-zero count grows with P, the top-k stay, count = k mostly."""
    grows = all(b > a for a, b in itertools.pairwise(zeros))
    share = decide([float(c == k) for c in counts], rule="fraction", margin=0.5)
    steady = stability <= cfg.outlier_stability
    holds = False if not (grows and steady) else share.holds
    run.add_scalar(S2, "outlier stability max/min", stability)
    record(
        run,
        S2,
        "Adding parameters with the data fixed grows the bulk and leaves the outliers "
        f"(each top-k eigenvalue within a factor {cfg.outlier_stability} across widths, "
        "near-zero count increasing with P, count = k in ≥ 2/3 of the widths).",
        f"P = {Ps}; near-zero counts {zeros} ({'increasing' if grows else 'not increasing'}); "
        f"outlier counts {counts} ({share.text}); top-k eigenvalues vary by at most a factor "
        f"{stability:.2f}; minima {mins}/{len(Ps)}",
        holds,
    )


def _part3_claims(cfg: Sagun2017Config, run: RunDir, rows: list[dict[str, Any]]) -> dict[str, bool]:
    """Data sweep: one claim per varied factor (separation, clusters) with the other fixed.

    Returns:
        ``{"separation": holds, "clusters": holds}`` for the factors the sweep varies.
    """
    counts = [r["outliers"] for r in rows]
    follows_k = sum(r["outliers"] == r["k"] for r in rows)
    run.add_scalar(S3, "outlier count = k", follows_k, total=len(rows))
    verdicts = {}
    for label, key, other in (("separation", "k", "separation"), ("clusters", "separation", "k")):
        # groups that share `key` and vary `other`: the effect of `other` alone
        groups: dict[float, list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault(r[key], []).append(r)
        groups = {g: rs for g, rs in groups.items() if len({r[other] for r in rs}) > 1}
        if not groups:
            continue
        parts, ok = [], []
        for g, rs in groups.items():
            lam = [r["λ₁"] for r in rs]
            fr = [r["near-zero fraction"] for r in rs]
            ratio = max(lam) / max(min(lam), 1e-300)
            spread = max(fr) - min(fr)
            ok.append(ratio >= cfg.move_min and spread <= cfg.bulk_max_change)
            parts.append(
                f"{key}={g:g}: {other} {[r[other] for r in rs]} → λ₁ {_fmt(lam)} "
                f"(×{ratio:.2f}), near-zero fraction {_fmt(fr)} (range {spread:.3f})"
            )
        verdicts[label] = all(ok)
        what = "less separation" if label == "separation" else "more clusters"
        record(
            run,
            S3,
            f"Changing the data ({what}) moves the outliers but not the bulk: λ₁ changes by "
            f"≥ {cfg.move_min}× while the fraction of near-zero eigenvalues changes by "
            f"≤ {cfg.bulk_max_change}.",
            "; ".join(parts) + f"; outlier counts {counts} (= k in {follows_k}/{len(rows)})",
            all(ok),
        )
    return verdicts


def _part5_claim(
    cfg: Sagun2017Config,
    run: RunDir,
    train_l: np.ndarray,
    inside: np.ndarray,
    ends: tuple[int, int],
    barrier: float,
    barrier_test: float,
    lmax: np.ndarray,
    gn: dict[str, float],
) -> None:
    """The line claim: barrier ≤ ``barrier_tol``, undecided unless both ends are minima."""
    i0, i1 = ends
    both_min = _is_min(cfg, gn["small"]) and _is_min(cfg, gn["large"])
    holds = (barrier <= cfg.barrier_tol) if both_min else None
    seg = train_l[i0 : i1 + 1]
    shape = (
        "rises slightly then falls"
        if 0 < int(np.argmax(seg)) < seg.size - 1
        else "monotone between the endpoints (no bump)"
    )
    record(
        run,
        S5,
        "Small- and large-batch solutions are connected through a flat region: on the line "
        f"between them the loss goes slightly up then down (barrier ≤ {cfg.barrier_tol} nats).",
        f"the train loss {shape}; train barrier {barrier:.3g} (L(0) = {train_l[i0]:.3g}, "
        f"L(1) = {train_l[i1]:.3g}, "
        f"max on [0,1] {train_l[inside].max():.3g}); test barrier {barrier_test:.3g}; "
        f"λ_max small {lmax[i0]:.3g} vs large {lmax[i1]:.3g}; ‖∇L‖ small {gn['small']:.2g}, "
        f"large {gn['large']:.2g}"
        + ("" if both_min else f" — not both minima (‖∇L‖ > {cfg.minimum_tol:g}): undecided"),
        holds,
    )


def _part4_claim(
    cfg: Sagun2017Config,
    run: RunDir,
    rows: list[dict[str, Any]],
    overlaps: dict[int, float],
    rels: list[float],
) -> None:
    """H vs G: top-k overlap ≥ ``overlap_min`` and eigenvalues within ``ggn_rel_tol``."""
    holds = min(overlaps.values()) >= cfg.overlap_min and max(rels) <= cfg.ggn_rel_tol
    record(
        run,
        S4,
        "The outliers come from the Gauss–Newton term: the top-k eigenvalues of H and G agree "
        f"and their top-k eigenspaces coincide (overlap ≥ {cfg.overlap_min}, eigenvalues "
        f"within {cfg.ggn_rel_tol:.0%}).",
        "; ".join(
            f"k={r['k']}: overlap {r['overlap']:.3f}, max rel. diff {r['max rel. diff']:.2g}"
            for r in rows
        ),
        holds,
    )
