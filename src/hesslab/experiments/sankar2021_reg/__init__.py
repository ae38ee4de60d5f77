"""Hessian-trace and Wolkowicz–Styan-bound regularization (Sankar et al., AAAI 2021; HSR).

Two reproductions (docs/PAPERS.md §5 and §4), one runner parametrised by the penalty
(:class:`PenaltyKind`), each its own :class:`~hesslab.experiments._base.Experiment`:

* ``sankar2021-reg`` (:data:`SPEC`): a LeNet-style CNN on scikit-learn digits (8x8
  images) trained with SGD + momentum, with and without the Hessian-trace penalty
  ``γ · (1/m) Σᵢ vᵢᵀ H_B vᵢ`` (:class:`~hesslab.train.regularizers.HessianTracePenalty`) on
  the full network and on the middle parameter tensors (the paper's rule, indices
  ``[⌊n/4⌋, ⌊3n/4⌋]``). Per variant over several seeds: test accuracy (mean ± std), and
  on the final model the trace (``hesslab.trace``) and ``λ_max`` (``hesslab.eigenpairs``)
  of the full training-set Hessian. Claim: the penalty lowers the trace and does not hurt
  (ideally helps) test accuracy.
* ``wsbound-reg`` (:data:`WSBOUND_SPEC`): the same training with the HSR-style penalty
  ``γ · U``, ``U = μ + s√(P−1)`` the Wolkowicz–Styan upper bound on ``λ_max``
  (:class:`~hesslab.train.regularizers.WSBoundPenalty`). Claim: the penalty narrows the
  eigenvalue range ``λ_max − λ_min`` and lowers the WS bound.

Setup choices (scaled from the paper's LeNet/MNIST: SGD momentum 0.9, lr 1e-2, batch
256, 30 epochs, milestones 10 and 20, ``γ = 1e-3``, ``m = 10``, ``freq = 50``): digits has
1,347 training images (not 60,000), so the batch is 64 (21 steps per epoch); lr 0.02 for
12 epochs, then 0.002 (one milestone, ``milestones = (12,)``) for 13 more (25 in all);
the penalty is on from ``start_epoch = 12`` (the paper's "start epoch"), every
``every = 2`` steps (the paper's ``freq``; 50 would mean only about 70 penalized steps
here), ``γ = 3e-3``, ``m = 4`` probes (smoke) or 10 (full).

Why the penalty starts at the lr decay (measured on digits, seed 0): the gradient of
``vᵀH_Bv`` is about 1,000 times the loss gradient of a half-trained LeNet
(‖∇L‖ ≈ 1.2, ‖∇(vᵀHv)‖ ≈ 1,060 on 256 images, one probe draw) and the penalty is very
curved: a step of 1e-4 along its gradient lowers it by a third, a step of 1e-3 raises it
threefold. At lr 0.02 (momentum 0.9) its noisy gradient kicks training out of its
basin; the run ends at a higher training loss and, because the trace of a cross-entropy
Hessian follows the loss, at a *higher* trace: e.g. penalty from epoch 10 without decay,
``γ = 1e-3``: full 39.7 and middle 18.3 vs 12.9 without penalty; ``γ = 3e-4``: full 8.4
(lower) but middle 17.0 (higher), and full 17.7 with another probe seed. Also ``γ = 1e-2``
after the decay is too strong (full 38.2, middle 34.4 vs 29.8). With the decay at epoch
12 and ``γ = 3e-3``, seed 0 gives: none 46.6 ± 1.4, full 45.2 ± 1.0, middle 35.6 ± 1.9
(test accuracy 0.978, 0.969, 0.980). The effect is sensitive to ``γ``, the schedule and
the probe seed; the full size (5 seeds) reports mean ± std. Every knob is a config field.

Measured, full size (5 seeds, ``m = 10``; mean ± std over seeds): trace none 57.3 ± 9.4,
full 41.2 ± 7.8, middle 45.5 ± 5.8 (lower on every seed); ``λ_max`` 10.6 ± 2.5, 7.4 ± 2.1,
8.8 ± 1.8; test accuracy 0.966 ± 0.010, 0.970 ± 0.008, 0.968 ± 0.008 (the paper's
claim holds: lower trace, accuracy kept, slightly higher, within one std).
``wsbound-reg`` with the smoke settings over seeds 0-2: ``λ_max − λ_min`` 9.87 ± 2.44
vs 8.01 ± 1.76 with the penalty, WS bound 15.7 ± 3.0 vs 13.4 ± 2.0, ``λ_max`` 9.79 vs
7.87 (narrower on every seed), test accuracy 0.970 both.

Measurements (final model, eval mode, the whole training set): trace by
``hesslab.trace`` (block-Krylov, ``trace_matvecs`` products, stderr reported);
``λ_max`` (and ``λ_min`` for ``wsbound-reg``) by Lanczos (``lanczos_tol``); the WS
bound by :func:`hesslab.wolkowicz_styan` with estimated traces.

Training: :func:`hesslab.train.fit` with ``penalty=`` (:func:`train_with_penalty`): the
penalty is added to each minibatch loss before ``backward``, reusing its graph.

Layout: :mod:`.config` (configs, section names, :class:`~.config.PenaltyKind`),
:mod:`.training` (one training run and its measurements), :mod:`.report` (summaries,
claims, tables, figures); this module holds the two kinds and the two :data:`SPEC` entries.

Run: ``hesslab reproduce sankar2021-reg --smoke`` (one seed, under a minute on 2 cores)
or ``hesslab reproduce sankar2021-reg`` (5 seeds); likewise ``wsbound-reg``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from hesslab.experiments._base import Context, Experiment, Part
from hesslab.experiments._claims import Verdict, all_of
from hesslab.experiments.sankar2021_reg.config import (
    FULL_SECONDS,
    PAPER,
    S_TRACE,
    S_WS,
    SMOKE_SECONDS,
    WSBOUND_FULL_SECONDS,
    WSBOUND_SMOKE_SECONDS,
    PenaltyKind,
    Sankar2021RegConfig,
    WSBoundRegConfig,
)
from hesslab.experiments.sankar2021_reg.report import (
    add_report,
    plot_variants,
    summarise,
    trace_claims,
    ws_claims,
)
from hesslab.experiments.sankar2021_reg.training import (
    Penalty,
    TrainOutcome,
    check_config,
    train_one,
    train_with_penalty,
)

__all__ = [
    "FULL_SECONDS",
    "SMOKE_SECONDS",
    "SPEC",
    "WSBOUND_FULL_SECONDS",
    "WSBOUND_SMOKE_SECONDS",
    "WSBOUND_SPEC",
    "Penalty",
    "Sankar2021RegConfig",
    "TrainOutcome",
    "WSBoundRegConfig",
    "plot_variants",
    "run",
    "run_wsbound",
    "train_with_penalty",
]


def _trace_setup(cfg: Sankar2021RegConfig) -> str:
    return (
        f"LeNet ({cfg.channels}, {cfg.hidden}) on digits 8x8 (1,347 train / 450 test), SGD "
        f"momentum {cfg.momentum}, lr {cfg.lr}, batch {cfg.batch_size}, {cfg.epochs} epochs, "
        f"milestones {list(cfg.milestones)}. Penalty γ·(1/m)Σ vᵢᵀH_Bvᵢ with γ = {cfg.gamma}, "
        f"m = {cfg.num_probes} {cfg.distribution} probes, every {cfg.every} steps from "
        f"epoch {cfg.start_epoch}. Variants: {', '.join(cfg.variants)}; seeds "
        f"{list(cfg.seeds)}. Trace and λ_max of the full training-set Hessian at the end."
    )


def _ws_setup(cfg: WSBoundRegConfig) -> str:
    return (
        f"LeNet on digits 8x8 as in sankar2021-reg (SGD momentum {cfg.momentum}, lr "
        f"{cfg.lr}, batch {cfg.batch_size}, {cfg.epochs} epochs). Penalty γ·U with "
        "U = μ + s√(P−1), μ = tr H_B/P, s² = tr H_B²/P − μ² (both traces from the same "
        f"probes), γ = {cfg.gamma}, m = {cfg.num_probes}, every {cfg.every} steps from epoch "
        f"{cfg.start_epoch}. At the end: λ_max, λ_min (Lanczos), the WS bound from "
        "estimated traces of the full training-set Hessian."
    )


def _trace_headline(verdicts: dict[str, dict[str, Verdict]]) -> dict[str, Any]:
    return {
        "trace_lower": {v: d["trace"].holds for v, d in verdicts.items()},
        "accuracy_kept": {v: d["accuracy"].holds for v, d in verdicts.items()},
    }


def _ws_headline(verdicts: dict[str, dict[str, Verdict]]) -> dict[str, Any]:
    return {"narrower": {v: all_of(*d.values()) for v, d in verdicts.items()}}


TRACE = PenaltyKind(
    section=S_TRACE,
    ws=False,
    keys=("test_accuracy", "trace", "lambda_max", "train_loss"),
    bars={"test accuracy": "test_accuracy", "trace of H": "trace", "λ_max": "lambda_max"},
    bars_title="Final test accuracy, Hessian trace and λ_max per variant",
    bars_caption=(
        "Mean over seeds with ±1 std bars; trace and λ_max of the full training-set Hessian."
    ),
    setup=_trace_setup,
    claims=trace_claims,
    headline=_trace_headline,
    scalar_note="mean and std over seeds",
    penalty_column=True,
)
"""``sankar2021-reg``: the Hutchinson Hessian-trace penalty."""

WSBOUND = PenaltyKind(
    section=S_WS,
    ws=True,
    keys=("spread", "ws_upper", "lambda_max", "lambda_min", "trace", "test_accuracy"),
    bars={
        "λ_max − λ_min": "spread",
        "WS upper bound": "ws_upper",
        "test accuracy": "test_accuracy",
    },
    bars_title="Eigenvalue range, WS bound and accuracy per variant",
    bars_caption="Mean over seeds with ±1 std bars.",
    setup=_ws_setup,
    claims=ws_claims,
    headline=_ws_headline,
)
"""``wsbound-reg``: the Wolkowicz–Styan bound penalty (Wolkowicz, Styan 1980)."""


def _parts_of(kind: PenaltyKind) -> Callable[[Any], list[Part]]:
    def parts(cfg: Any) -> list[Part]:
        return [
            Part(
                f"{variant}_seed{seed}",
                lambda c, s=seed, v=variant: train_one(c, s, v, ws=kind.ws),
            )
            for seed in cfg.seeds
            for variant in cfg.variants
        ]

    return parts


def _summary_of(kind: PenaltyKind) -> Callable[[Context], dict[str, Any]]:
    def summary_fn(ctx: Context) -> dict[str, Any]:
        cfg, run_dir = ctx.cfg, ctx.run_dir
        done = [ctx.results[f"{v}_seed{s}"] for s in cfg.seeds for v in cfg.variants]
        rows = [row for row, _ in done]
        curves = {row["variant"]: out for row, out in done if row["seed"] == cfg.seeds[0]}
        run_dir.add_table(kind.section, "runs", rows)
        summary = summarise(cfg, rows, kind.keys)
        add_report(kind, cfg, run_dir, summary, curves)
        verdicts = kind.claims(cfg, run_dir, rows, summary)
        seconds = ctx.elapsed()
        run_dir.add_scalar("Timing", "seconds", seconds, unit="s")
        return {
            "summary": summary,
            **kind.headline(verdicts),
            "holds": all_of(*(x for d in verdicts.values() for x in d.values())),
            "verdicts": {v: {k: x.as_dict() for k, x in d.items()} for v, d in verdicts.items()},
            "rows": rows,
            "seconds": seconds,
            "config": asdict(cfg),
        }

    return summary_fn


def _penalty_experiment(kind: PenaltyKind, **text: Any) -> Experiment:
    """The experiment that trains with and without ``kind``'s penalty."""
    return Experiment(
        parts=_parts_of(kind),
        summary=_summary_of(kind),
        steps=lambda cfg: len(cfg.seeds) * len(cfg.variants),
        setup=lambda ctx: ctx.run_dir.add_text(kind.section, kind.setup(ctx.cfg)),
        check=check_config,
        **text,
    )


SPEC = _penalty_experiment(
    TRACE,
    name="sankar2021-reg",
    title="Hessian-trace regularization (Sankar et al. 2021)",
    paper=PAPER,
    arxiv="2012.03801",
    description=(
        "LeNet on digits trained with SGD with and without the Hutchinson Hessian-trace "
        "penalty (full network, middle tensors, middle layers), several seeds: test "
        "accuracy mean ± std and the final trace and λ_max of the training-set Hessian."
    ),
    config_type=Sankar2021RegConfig,
    smoke_seconds=SMOKE_SECONDS,
    full_seconds=FULL_SECONDS,
)
"""Registry entry for ``sankar2021-reg``."""

WSBOUND_SPEC = _penalty_experiment(
    WSBOUND,
    name="wsbound-reg",
    title="Wolkowicz–Styan bound regularization (HSR)",
    paper="Wolkowicz, Styan (1980), Bounds for eigenvalues using traces; HSR regularization",
    arxiv="",
    description=(
        "LeNet on digits trained with and without a penalty on the Wolkowicz–Styan upper "
        "bound on λ_max (traces of H and H² from shared probes, differentiated): "
        "eigenvalue range, bound, λ_max and test accuracy."
    ),
    config_type=WSBoundRegConfig,
    smoke_seconds=WSBOUND_SMOKE_SECONDS,
    full_seconds=WSBOUND_FULL_SECONDS,
)
"""Registry entry for ``wsbound-reg``."""

#: ``sankar2021-reg``'s runner, ``run(run_dir, config=None, progress=None, stages=None)``
#: (:meth:`Experiment.run`; ``config=None`` is the smoke size): trains with and without
#: the trace penalty; accuracy, trace, λ_max. Returns ``{"summary": {variant:
#: {"test_accuracy": (mean, std), "trace": ..., "lambda_max": ...}}, "holds": bool,
#: "trace_lower", "accuracy_kept", "verdicts", "rows": [...], "config": {...}}``.
#: Reference: Sankar, Khasbage, Vigneswaran, Balasubramanian (2021), arXiv:2012.03801.
run = SPEC.run
#: ``wsbound-reg``'s runner: the same with the WS-bound penalty; range, bound, λ_max
#: (result entries ``"narrower"`` instead of ``"trace_lower"``/``"accuracy_kept"``).
#: Reference: Wolkowicz, Styan (1980); docs/PAPERS.md §4 (HSR regularization).
run_wsbound = WSBOUND_SPEC.run
