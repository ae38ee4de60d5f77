"""sagun2017 part 6: Papyan's class structure of the Gauss–Newton term.

Computed for every part-1 model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hesslab.data.datasets import Split
from hesslab.experiments.sagun2017.claims import _part6_claims
from hesslab.experiments.sagun2017.config import S6, Sagun2017Config
from hesslab.experiments.sagun2017.spectra import _fmt, _leading
from hesslab.objective import Objective
from hesslab.operators import class_structure, subspace_fraction
from hesslab.report import plots
from hesslab.report.progress import StepProgress
from hesslab.report.run import RunDir


def _papyan_run(cfg: Sagun2017Config, model: nn.Module, split: Split, k: int) -> dict[str, Any]:
    """Papyan's split of ``G`` for one trained model, dense (``P`` is small here).

    Each eigenvector ``u_j`` of ``G`` (descending) is attributed by the fraction of its
    squared norm in the span of the ``C`` class means (:func:`hesslab.subspace_fraction`):
    the *class outliers* are the leading eigenvectors with fraction ``≥ 1/2`` (counted
    from the top until the first that is not), the *mini-bulk* the following ones whose
    fraction in the span of the class and cross-class means is ``≥ 1/2`` (at most
    ``C(C−1)``). Papyan (2020): ``C`` or ``C−1`` class outliers. ``within edge`` (the
    within-class part's ``λ_max``) is reported beside them.
    """
    cs = class_structure(Objective(model.eval(), cfg.loss, split.train.tensors), k)
    G = cs.ggn.to_dense().to(torch.float64)
    g, U = torch.linalg.eigh((G + G.T) / 2)
    g, U = g.flip(0), U.flip(1)
    W = cs.within_class.to_dense().to(torch.float64)
    Qc = cs.class_means.range_basis()
    Qb = torch.cat([Qc, cs.cross_class.range_basis()], dim=1)
    top = min(U.shape[1], 2 * k + k * (k - 1))
    f_class = subspace_fraction(U[:, :top].to(Qc.dtype), Qc).cpu()
    f_both = subspace_fraction(U[:, :top].to(Qb.dtype), Qb).cpu()
    n_class = _leading(f_class >= 0.5)
    n_mini = _leading(f_both[n_class:] >= 0.5)
    n_mini = min(n_mini, k * (k - 1))
    arrays = {
        "G": g[:top],
        "class-mean part": cs.class_means.eigenvalues(),
        "cross-class part": cs.cross_class.eigenvalues()[:top],
    }
    return {
        "arrays": arrays,
        "n_class": n_class,
        "n_mini": n_mini,
        "f_class": _fmt(f_class[: k + 2]),
        "top G": _fmt(g[: k + 2]),
        "class-mean part": _fmt(cs.class_means.eigenvalues()[: k + 1]),
        "within edge": float(torch.linalg.eigvalsh((W + W.T) / 2)[-1]),
    }


def _part6(
    cfg: Sagun2017Config, run: RunDir, tick: StepProgress, every: dict[str, Any]
) -> dict[str, Any]:
    run.add_text(
        S6,
        "Papyan (2020) splits the Gauss–Newton term G of a C-class cross-entropy model "
        "exactly into a class-mean part (rank ≤ C), a cross-class part (rank ≤ C(C−1)) and "
        "a within-class part (hesslab.class_structure, operators, nothing P×P formed but "
        "the dense checks here). Explanation tested on every part-1 model: the outliers "
        "are the eigenvalues of the class-mean part that clear the within-class bulk edge "
        "λ_max(within), so their number is C (or C−1), and the top eigenvectors of G lie "
        "in the span of the class means; the next ones (the mini-bulk, up to C(C−1)) in "
        "the span of the class and cross-class means.",
    )
    rows, shown = [], {}
    for key, (model, split, is_min) in every.items():
        k, seed = (int(t) for t in key.split("/"))
        r = _papyan_run(cfg, model, split, k)
        arrays = r.pop("arrays")
        if seed == cfg.seeds[0] and k == max(cfg.ks):
            shown = {f"{n} (k={k})": v.numpy() for n, v in arrays.items()}
        for n, v in arrays.items():
            run.add_array(f"part6/k{k}/seed{seed}/{n.replace(' ', '_')}", v)
        rows.append({"k": k, "seed": seed, "minimum": is_min, **r})
        tick(f"sagun2017 part 6: k={k} seed={seed}: {r['n_class']} class outliers")
    run.add_figure(
        S6,
        "part6_class_structure",
        plots.plot_spectra_comparison(
            shown, title="Top eigenvalues of G and of its class-mean and cross-class parts"
        ),
        f"Ranked top eigenvalues of the Gauss–Newton term G (first seed, k = {max(cfg.ks)}) "
        "beside the exact spectra of its class-mean part (rank ≤ C) and cross-class part "
        "(rank ≤ C(C−1)).",
    )
    run.add_table(
        S6,
        "class structure per (k, seed)",
        rows,
        caption="n_class: leading eigenvectors of G with ≥ 1/2 of their squared norm in "
        "span(class means); n_mini: the following ones with ≥ 1/2 in span(class + "
        "cross-class means) (≤ C(C−1)); f_class: those fractions for the top C+2; "
        "within edge: λ_max of the within-class part.",
    )
    _part6_claims(cfg, run, rows)
    return {"rows": rows}
