"""Reproduction of Li, Gu, Zhou, Chen, Banerjee (2019), arXiv:1907.10732.

"Hessian based analysis of SGD for Deep Nets: Dynamics and Generalization". Four parts:

1. **Overlap of top subspaces** (docs/PAPERS.md §2). With per-sample gradients ``gᵢ``,
   ``ḡ = ∇L`` and ``C = (1/N) Σ gᵢgᵢᵀ − ḡḡᵀ``, the second moment of a size-``B``
   minibatch gradient (drawn with replacement) is ``M_B = ḡḡᵀ + C/B``
   (:func:`hesslab.gradient_moment` with ``kind="minibatch"``). The top-``k``
   eigenvectors ``U_H`` of ``H`` and ``U_M`` of ``M_B`` (:func:`hesslab.eigenpairs`,
   thick-restart Lanczos) are compared by ``overlap = ‖U_HᵀU_M‖²_F / k``
   (:func:`hesslab.measures.subspace_overlap`); a random ``k``-subspace has mean
   overlap ``k/P`` (and an empirical random draw is reported beside it). Measured over
   SGD training for several batch sizes ``B`` and random-label fractions
   (:func:`hesslab.data.with_label_noise`) on a Gaussian mixture with a ReLU MLP.

2. **One-step loss change.** For ``θ' = θ − η g_B`` a Taylor expansion gives
   ``E_B[L(θ')] − L(θ) = −η‖∇L‖² + (η²/2) Tr(H M_B) + O(η³)``, because
   ``E[g_B] = ∇L`` and ``E[g_B g_Bᵀ] = M_B``. ``Tr(H M_B)`` is computed exactly from dense
   matrices (``P`` small) and stochastically with Hutchinson probes on the symmetrised
   product ``½(H M_B + M_B H)`` (same trace) through a
   :class:`~hesslab.operators.FunctionOperator` and :func:`hesslab.trace`. The *actual*
   change is the mean of ``L(θ − η g_B) − L(θ)`` over ``K`` sampled minibatches at fixed
   ``θ`` (losses of all ``K`` perturbed parameter vectors evaluated with
   :func:`torch.func.vmap`), with its standard error. A control-variate estimate of the
   same mean, ``Δ − η(‖∇L‖² − ∇Lᵀg_B)`` (unbiased because ``E[∇Lᵀg_B] = ‖∇L‖²``), removes
   the first-order noise and isolates the curvature term, whose prediction is
   ``(η²/2) Tr(H M_B)``. The step sizes are ``η = c / λ_max(H)`` for a grid of ``c``.
   The diagonally preconditioned step ``θ − η D g_B`` with Adam-like
   ``D = diag(1/(√v + ε))``, ``v = diag(M_B)``, is predicted by
   ``−η ∇LᵀD∇L + (η²/2) Tr(D H D M_B)``.

3. **Many repeats as quantile bands.** ``R`` tiny ReLU MLPs (different initialisation and
   label-noise seeds) trained together with :func:`torch.func.vmap` over parameters
   stacked by :func:`torch.func.stack_module_state` (per-model minibatches); at each
   checkpoint the dense Hessians (``torch.func.hessian``), per-sample gradients and
   ``M_B`` of all ``R`` models are computed under ``vmap`` too, and the top-``k``
   eigenspaces come from a batched dense ``torch.linalg.eigh`` (not
   :func:`hesslab.eigenpairs`, which is not batched). Plotted with
   :func:`hesslab.report.plots.plot_quantile_bands`.

4. **Scale invariance.** ``Σⱼ θⱼ² H_jj = tr(ΘHΘ)``
   (:func:`hesslab.measures.scale_invariant_trace`) under the function-preserving layer
   rescaling ``W_l ← α_l W_l`` of a ReLU MLP (:func:`hesslab.reparam.rescale`,
   ``Π α_l = 1``): each ``H_jj`` scales by ``1/α²`` and ``θⱼ²`` by ``α²``, so the sum is
   exactly invariant, while ``tr H`` changes.

**Verdicts** (:mod:`hesslab.experiments._claims`), each a statistic over ≥ 3 seeds:
parts 1 and 3, the share of runs (own init and SGD seed per (noise, B) run) or tiny nets (``R``
seeds per group) whose end overlap exceeds ``max(0.5, overlap_factor·k/P)``, holding at
≥ 2/3; part 2, the mean over the runs of the |relative error| of the prediction at the
smallest ``c`` below ``pred_rel_tol`` (5%, the ``O(η³)`` allowance; the sampled mean's
own relative s.e. is reported beside it) by 2 s.e. (:func:`within`); part 4, over
``invariance_runs`` (3) trained models, the relative change of ``Σθ²H_jj`` below
:data:`INVARIANCE_TOL` by 2 s.e., and ``tr H`` changing by more than 2x in ≥ 2/3 of
them.

Layout: :mod:`.config` (the config, section names), :mod:`.onestep` (the one-step
prediction and its sampled measurement), :mod:`.overlap` (part 1), :mod:`.prediction`
(part 2), :mod:`.repeats` (part 3), :mod:`.invariance` (part 4); this module holds the
checks, the parts list, the summary and :data:`SPEC`.

Run: ``hesslab reproduce li2019 --smoke`` (under a minute on 2 cores) or
``hesslab reproduce li2019``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from hesslab.errors import ConfigurationError
from hesslab.experiments._base import Context, Experiment, Part
from hesslab.experiments._base import config_dtype as _dtype
from hesslab.experiments.li2019.config import (
    FULL_SECONDS,
    S1,
    S2,
    S3,
    S4,
    SMOKE_SECONDS,
    Li2019Config,
)
from hesslab.experiments.li2019.invariance import INVARIANCE_TOL, part4
from hesslab.experiments.li2019.onestep import (
    SAMPLED_MEMORY_BYTES,
    all_sample_gradients,
    loss_at,
    predicted_change,
    sampled_change,
    sampled_chunk_rows,
)
from hesslab.experiments.li2019.overlap import part1
from hesslab.experiments.li2019.prediction import part2, within
from hesslab.experiments.li2019.repeats import part3

__all__ = [
    "FULL_SECONDS",
    "INVARIANCE_TOL",
    "S1",
    "S2",
    "S3",
    "S4",
    "SAMPLED_MEMORY_BYTES",
    "SMOKE_SECONDS",
    "SPEC",
    "Li2019Config",
    "all_sample_gradients",
    "loss_at",
    "predicted_change",
    "run",
    "sampled_change",
    "sampled_chunk_rows",
    "within",
]


def _check(cfg: Li2019Config) -> None:
    _dtype(cfg)
    if len(cfg.noise_fractions) * len(cfg.batch_sizes) < 3:
        raise ConfigurationError(
            "the verdicts of parts 1, 2 and 4 are statistics over the (noise, B) runs: give "
            "at least 3, e.g. noise_fractions=[0, 0.5] and batch_sizes=[4, 32]"
        )
    if not 3 <= cfg.invariance_runs <= len(cfg.noise_fractions) * len(cfg.batch_sizes):
        raise ConfigurationError(
            f"invariance_runs must be at least 3 and at most the number of (noise, B) runs, "
            f"got {cfg.invariance_runs}"
        )
    if cfg.repeats < 3:
        raise ConfigurationError(f"repeats must be at least 3 (seeds), got {cfg.repeats}")
    if not cfg.widths:
        raise ConfigurationError("widths must be non-empty (part 4 rescales a hidden layer)")
    if not cfg.pred_lr_factors:
        raise ConfigurationError("pred_lr_factors must be non-empty")
    if cfg.top_k < 1:
        raise ConfigurationError(f"top_k must be at least 1, got {cfg.top_k}")


def _invariance(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    out = part4(cfg, ctx.run_dir, ctx.results["overlap"]["runs"])
    ctx.tick("scale invariance")
    return out


def _parts(cfg: Li2019Config) -> list[Part]:
    """The four parts; parts 2 and 4 reuse the models part 1 trained."""
    return [
        Part("overlap", lambda c: part1(c.cfg, c.run_dir, c.tick)),
        Part("prediction", lambda c: part2(c.cfg, c.run_dir, c.results["overlap"]["runs"], c.tick)),
        Part("repeats", lambda c: part3(c.cfg, c.run_dir, c.tick)),
        Part("invariance", _invariance),
    ]


def _steps(cfg: Li2019Config) -> int:
    n_runs = len(cfg.noise_fractions) * len(cfg.batch_sizes)
    return 2 * n_runs + len(cfg.repeat_noise_fractions) + 1


def _summary(ctx: Context) -> dict[str, Any]:
    """The parts' headlines and wall times.

    Returns:
        ``{"overlap": {...}, "prediction": {...}, "repeats": {...}, "invariance": {...},
        "claims": {...}, "seconds": {...}, "config": {...}}``.
    """
    seconds = ctx.record_part_seconds()
    p1 = {k: v for k, v in ctx.results["overlap"].items() if k != "runs"}
    p2, p3, p4 = (ctx.results[k] for k in ("prediction", "repeats", "invariance"))
    return {
        "overlap": p1,
        "prediction": p2,
        "repeats": p3,
        "invariance": p4,
        "claims": {
            "overlap_strong": p1["holds"],
            "prediction_matches": p2["holds"],
            "repeats_overlap_strong": p3["holds"],
            "invariant": p4["holds"],
        },
        "seconds": seconds,
        "config": asdict(ctx.cfg),
    }


#: The registry entry (``hesslab.experiments.EXPERIMENTS[...]`` imports this module on access).
SPEC = Experiment(
    name="li2019",
    title="Hessian and gradient second moment under SGD (Li et al. 2019)",
    paper=(
        "Li, Gu, Zhou, Chen, Banerjee (2019), Hessian based analysis of SGD for Deep "
        "Nets: Dynamics and Generalization"
    ),
    arxiv="1907.10732",
    description=(
        "Overlap of the top-k subspaces of H and the minibatch gradient second moment M_B "
        "over SGD training for several batch sizes and random-label fractions; predicted "
        "(−η‖∇L‖² + η²/2·Tr(HM_B)) vs sampled one-step loss change; quantile bands over "
        "many tiny nets trained with vmap; invariance of Σθ²H_jj under layer rescaling."
    ),
    config_type=Li2019Config,
    smoke_seconds=SMOKE_SECONDS,
    full_seconds=FULL_SECONDS,
    parts=_parts,
    summary=_summary,
    steps=_steps,
    check=_check,
)

#: ``run(run_dir, config=None, progress=None, stages=None) -> dict``: the runner
#: (:meth:`Experiment.run`; ``config=None`` is the smoke size): all four parts. Reference:
#: Li, Gu, Zhou, Chen, Banerjee (2019), "Hessian based analysis of SGD for Deep Nets:
#: Dynamics and Generalization", arXiv:1907.10732.
run = SPEC.run
