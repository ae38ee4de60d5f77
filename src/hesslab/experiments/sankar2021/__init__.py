"""Reproduction of Sankar, Khasbage, Vigneswaran, Balasubramanian (AAAI 2021), spectra part.

"A Deeper Look at the Hessian Eigenspectrum of Deep Neural Networks and its Applications
to Regularization", arXiv:2012.03801 (docs/PAPERS.md §5). Claims reproduced here:

1. The layerwise Hessians ``H_ll`` (diagonal blocks of ``∇²L`` for each Conv2d/Linear
   WEIGHT, biases excluded) have spectra that look like the full Hessian's, and the
   **middle layers' spectra are closest to the full one** (a U-shaped distance curve over
   depth).
2. ``λ_max`` and ``Tr H``, full and layerwise, **decrease during training**.

(The layerwise trace regularizer is :mod:`hesslab.experiments.sankar2021_reg`.)

Setup, mirroring the authors' code ([CODE] in PAPERS.md §5), scaled to scikit-learn's
8x8 digits: a LeNet-style CNN (:func:`hesslab.models.lenet`, 3x3 convolutions with
padding for 8x8 images) and a ReLU MLP ``64-32-32-32-32-10``, both trained with SGD,
momentum 0.9, lr ``1e-2`` (their LeNet/MNIST lr), batch 8 (their batch 256 on 60,000
MNIST images gives 234 steps per epoch; 1,347 digits with batch 8 give 169, with batch 32
only 43, too few to train in a few epochs at this lr). Optionally (``models`` with
``"vit"``) a transformer too: the zoo's small ViT (:func:`hesslab.models.vit`, 2x2
patches, class token, pre-LN blocks; its weight layers are the patch convolution, each
block's ``q``, ``k``, ``v``, ``o``, ``fc``, ``proj`` and the head). After every
epoch (and at initialization, epoch 0) the float64 copy of the network is measured on a
class-balanced subset of ``per_class`` (10, as in their code) training points per class:

* **Densities** by stochastic Lanczos quadrature (:func:`hesslab.spectral_density`) of
  ``m = num_steps`` (128) steps from ``num_probes`` (1) Rademacher start vector(s), for
  the full Hessian ``H`` and each block ``H_ll``. Their code runs a separate 64-step
  Lanczos to find the spectral range; here the range is the SLQ run's own extreme Ritz
  values (``m ≥ 64`` steps, so at least as accurate), widened by ``range_margin`` (5%) of
  the width on each side, with ``grid_points`` (1,024) points and a Gaussian kernel
  ``σ = sigma_rel · width`` (``sigma_rel = √1e-5``).
* **Distances** between each layer's density and the full density, two metrics:

  - ``"w1"``, the principled one: :func:`hesslab.measures.spectrum_w1`, the exact
    1-Wasserstein distance ``∫|F_l(x) − F(x)| dx`` between the two SLQ eigenvalue
    distributions after mapping each to ``[0, 1]`` by its OWN support
    (``x ↦ (x − λ_min)/(λ_max − λ_min)``, ``normalize="width"``): it compares shapes,
    invariant to shifting and rescaling either spectrum (``w1_normalize="scale"``,
    ``x ↦ x / max|x|``, keeps zero fixed).
  - ``"sankar"``, **Sankar et al. code's variant**
    (:func:`hesslab.measures.sankar_density_distance`, ``method="values"``):
    ``scipy.stats.wasserstein_distance`` between the two arrays of broadened density
    VALUES on a common 1,024-point grid (positions discarded). It is not a distance
    between spectra (mirror images are at distance 0) and is reported for comparison
    with their numbers only.

  Every claim is a statistic over the training seeds ``seeds`` (3; one network per
  model and seed, same data): "middle closest" is, per seed, whether the arg-min over
  layers of the distance averaged over the epochs ``≥ 1`` is neither the first nor the
  last layer (chance level ``(L − 2)/L``, 3/5 for both nets here), and it holds for a
  model and metric when ≥ 2/3 of the seeds agree (does not hold when ≤ 1/3 do;
  :func:`~hesslab.experiments._claims.decide`, ``rule="fraction"``).
* ``λ_max`` = the largest Ritz value of each SLQ run (Ritz values converge fastest at the
  ends; the full network's is checked against :func:`hesslab.eigenpairs` at the last
  epoch: agreement within ``max(σ, Ritz residual)``), ``Tr`` by
  :func:`hesslab.trace` (Krylov-deflated Hutchinson, ``trace_matvecs`` products; exact for
  blocks of at most ``trace_matvecs`` parameters).
* **Trends**: for each series (full and layerwise ``λ_max`` and trace) over the epochs
  ``≥ trend_from_epoch`` (early training is a warm-up in which sharpness typically
  RISES from its small value at initialization): Spearman's ``ρ`` with the epoch and
  the ratio last/first. A series "decreases" when ``ρ < 0`` and last < first; a seed
  agrees when more than half of its series decrease, and the claim holds for a model
  when ≥ 2/3 of the seeds agree. The ratio to the value at
  initialization is reported too.

Run: ``hesslab reproduce sankar2021 --smoke`` (3 epochs, small SLQ, under a minute on
2 cores) or ``hesslab reproduce sankar2021`` (30 epochs, the authors' SLQ sizes; see
:data:`FULL_SECONDS`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from hesslab.data import balanced_subset, digits, mnist5k
from hesslab.experiments._base import Context, Experiment, Part
from hesslab.experiments._base import config_dtype as _dtype
from hesslab.experiments.sankar2021.config import (
    FULL_SECONDS,
    METRICS,
    MNIST_FULL_SECONDS,
    SMOKE_SECONDS,
    Sankar2021Config,
    Sankar2021MnistConfig,
    _seed_part,
    _validate,
)
from hesslab.experiments.sankar2021.report import (
    _claims_over_seeds,
    _trend,  # noqa: F401  (re-exported for tests)
    plot_distance_vs_depth,
    plot_layer_densities,
    spearman,
)
from hesslab.experiments.sankar2021.training import _run_model

__all__ = [
    "FULL_SECONDS",
    "MNIST_FULL_SECONDS",
    "MNIST_SPEC",
    "SMOKE_SECONDS",
    "SPEC",
    "Sankar2021Config",
    "Sankar2021MnistConfig",
    "plot_distance_vs_depth",
    "plot_layer_densities",
    "run",
    "spearman",
]


def _setup(ctx: Context) -> None:
    cfg = ctx.cfg
    ctx.run_dir.add_text(
        "Setup",
        "Layerwise Hessians = diagonal blocks H_ll of the Conv2d/Linear weights. SLQ with "
        f"{cfg.num_steps} Lanczos steps, {cfg.num_probes} Rademacher start vector(s), range "
        f"= extreme Ritz values widened by {cfg.range_margin:.0%}, Gaussian kernel σ = "
        f"{cfg.sigma_rel:.3g} × width on {cfg.grid_points} grid points. Distances: "
        f"'w1' = hesslab.measures.spectrum_w1 (1-Wasserstein between the eigenvalue "
        f"distributions, each mapped to [0, 1] by its own support: normalize="
        f"'{cfg.w1_normalize}'); 'sankar' = Sankar et al. code's variant "
        "(hesslab.measures.sankar_density_distance: W1 between the arrays of density "
        "values on a common grid; positions discarded). Traces by hesslab.trace "
        f"({cfg.trace_matvecs} products; exact for smaller blocks).",
    )


def _model_part(ctx: Context, name: str, mi: int, seed: int) -> dict[str, Any]:
    """Train network ``name`` on ``cfg.data`` with training seed ``seed``, measuring each epoch."""
    cfg = ctx.cfg
    load = mnist5k if cfg.data == "mnist5k" else digits
    split = load(flat=False, seed=cfg.seed)  # seeded: the same split in every part
    sub_data = balanced_subset(split.train, per_class=cfg.per_class, seed=cfg.seed)
    sub = (sub_data.x.to(_dtype(cfg)), sub_data.y)
    return _run_model(name, cfg, split, sub, ctx.run_dir, ctx.tick, mi, seed)


def _parts(cfg: Sankar2021Config) -> list[Part]:
    """Per network: one part per training seed, then one deciding its claims over them."""
    parts = []
    for mi, name in enumerate(cfg.models):
        parts += [
            Part(_seed_part(name, s), lambda c, n=name, mi=mi, s=s: _model_part(c, n, mi, s))
            for s in cfg.seeds
        ]
        parts.append(Part(name, lambda c, n=name, mi=mi: _claims_over_seeds(c, n, mi)))
    return parts


def _summary(ctx: Context) -> dict[str, Any]:
    """The per-network claims and the wall times.

    Returns:
        ``{"models": {name: {...}}, "claims": {name: {...}}, "seconds": {...},
        "config": {...}}``.
    """
    models = {name: ctx.results[name] for name in ctx.cfg.models}
    claims = {
        n: {
            **{f"middle_closest_{k}": m["middle_closest"][k] for k in METRICS},
            "trend_decreases": m["trend_holds"],
            "lmax_check": m["lmax_holds"],
        }
        for n, m in models.items()
    }
    seconds = {n: m["seconds"] for n, m in models.items()}
    seconds["total"] = ctx.elapsed()
    ctx.run_dir.add_scalar("Timing", "total seconds", seconds["total"], unit="s")
    return {"models": models, "claims": claims, "seconds": seconds, "config": asdict(ctx.cfg)}


#: the fields both configurations share (the data and the sizes are the configs' own)
_SPEC_COMMON: dict = {
    "paper": (
        "Sankar, Khasbage, Vigneswaran, Balasubramanian (AAAI 2021), A Deeper Look at the "
        "Hessian Eigenspectrum of Deep Neural Networks and its Applications to "
        "Regularization"
    ),
    "arxiv": "2012.03801",
    "smoke_seconds": SMOKE_SECONDS,
    "parts": _parts,
    "summary": _summary,
    "steps": lambda cfg: len(cfg.models) * len(cfg.seeds) * (cfg.epochs + 1),
    "setup": _setup,
    "check": _validate,
}
_ANALYSES = (
    "with SGD + momentum; after every epoch, SLQ densities of the full Hessian and of each "
    "weight layer's diagonal block on a class-balanced subset; distance of each layer to "
    "the full spectrum vs depth (1-Wasserstein on a normalized axis, and the authors' code "
    "variant), and λ_max / trace trends, full and layerwise."
)

#: The registry entry (``hesslab.experiments.EXPERIMENTS[...]`` imports this module on access).
SPEC = Experiment(
    name="sankar2021",
    title="Layerwise vs full Hessian spectra over training (Sankar et al. 2021)",
    description="A LeNet-style CNN and an MLP trained on digits " + _ANALYSES,
    config_type=Sankar2021Config,
    full_seconds=FULL_SECONDS,
    **_SPEC_COMMON,
)

#: ``sankar2021-mnist``: the same analyses on the authors' data (5,000 real MNIST images).
MNIST_SPEC = Experiment(
    name="sankar2021-mnist",
    title="Layerwise vs full Hessian spectra over training, on real MNIST (Sankar et al. 2021)",
    description=(
        "A LeNet-style CNN and an MLP trained on 4,000 real MNIST images (mnist5k) " + _ANALYSES
    ),
    config_type=Sankar2021MnistConfig,
    full_seconds=MNIST_FULL_SECONDS,
    **_SPEC_COMMON,
)


#: ``run(run_dir, config=None, progress=None, stages=None) -> dict``: the runner
#: (:meth:`Experiment.run`; ``config=None`` is the smoke size): trains each network on
#: digits, measuring layerwise and full spectra every epoch; raises
#: :class:`~hesslab.errors.ConfigurationError` for an unknown model, metric normalization
#: or dtype. Reference: Sankar, Khasbage, Vigneswaran, Balasubramanian (AAAI 2021), "A
#: Deeper Look at the Hessian Eigenspectrum of Deep Neural Networks and its Applications
#: to Regularization", arXiv:2012.03801.
run = SPEC.run
