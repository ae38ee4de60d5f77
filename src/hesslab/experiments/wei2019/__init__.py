"""Reproduction of Wei & Schwab (2019), arXiv:1910.00195.

"How noise affects the Hessian spectrum in overparameterized neural networks": near a
degenerate valley of minima, SGD-like noise (covariance ``C ∝ H``) drifts the weights
along the valley towards smaller ``Tr H``; isotropic noise drifts them towards smaller
``log det`` of the Hessian's non-degenerate block; plain GD does not move.

Theory (docs/PAPERS.md §1 [DER]). With ``θ = (u along the valley, v across it)``,
``L ≈ ½ vᵀ H(u) v`` and ``dθ = −∇L dt + √η C^{1/2} dW``, the drift along the valley is
``−(η/4B) ∂_u Tr H`` for ``C = H/B`` and ``−(ησ²/4) ∂_u log det H_nondeg`` for
``C = σ² P_nondeg``.

Part 1, toy valley ``L(w) = ½(w₁w₂ − 1)²`` (and ``½(w₁w₂w₃ − 1)²`` at full size), many
independent runs vectorised as an ``[R, d]`` parameter tensor, started ON the valley at
an unbalanced point. Exact Hessian: with ``p = Πwᵢ``, ``r = p − 1``, ``vᵢ = ∂p/∂wᵢ``:
``H = v vᵀ + r ∇²p``; on the valley ``H = v vᵀ`` has one non-zero eigenvalue
``λ = ‖v‖² = Tr H`` (``w₁² + w₂²`` for depth 2; note ``Tr H = w₁² + w₂²`` holds off the
valley too). Four processes:

* **GD** (``torch.optim.SGD`` on the exact loss): the gradient vanishes on the valley:
  ``Tr H`` stays exactly put.
* **SGD with label noise** (``torch.optim.SGD`` on ``½(p − 1 − s ε)²`` with a fresh
  ``ε ~ N(0, 1)`` each step, i.e. a non-realizable online regression): the gradient noise
  ``s ε v`` has covariance ``s² v vᵀ = s² H`` on the valley and persists there (the
  PITFALL of PAPERS.md: a realizable problem would have no noise at zero loss). Depth 2
  exactly: ``D = w₁² − w₂²`` obeys ``ΔD = −η²(r − sε)² D``; with the stationary spread of
  ``r`` (``Var r = ηλ s² / (2 − ηλ)``) this gives the prediction
  ``dD/dk = −2η²s² D / (2 − ηλ)``, ``λ = Tr H = √(D² + 4)`` on the valley: ``Tr H`` falls
  towards the balanced minimum ``2``.
* **GD + H-shaped noise** (:class:`~hesslab.train.optim.HessianShapedNoiseGD` with a
  ``noise_fn`` drawing ``ξ ~ N(0, s² v vᵀ)``): the same covariance by injection; on this
  toy it is the label-noise process with Gaussian noise decoupled from the drift.
* **GD + isotropic noise** (:class:`~hesslab.train.optim.NoisyGD`, ``convention="sgd"``:
  ``θ ← θ − η g + η σ ξ``, ``C = σ² I``): on the valley ``E[ΔD] = −η² r² D ≈ 0``, so
  ``E[D]`` is (nearly) a martingale and ``E[Tr H] = E[√(D² + 4)]`` does NOT fall (it rises
  by Jensen and by the off-valley spread), while ``D`` diffuses with variance
  ``4η²σ² λ`` per step, which gives ``E[Δ log λ] < 0``: isotropic noise lowers the
  mean ``log det`` of the (here 1-D) non-degenerate block, not the mean trace. On this toy
  the two theories are told apart by *mean of λ* vs *mean of log λ*.

Part 2, an MLP on digits. The data set is made NON-realizable on purpose: ``n`` digits
inputs, each twice, with targets ``onehot ± s·e`` (``e ~ N(0, I₁₀)`` fixed, antithetic),
MSE loss. The minimum has ``f(xᵢ) = onehot(yᵢ)``, loss ``mean(s² e²)`` and per-sample
gradients that do NOT vanish there, so minibatch SGD keeps its noise; the network is
overparameterised (``P > n·10``), so the minima form a degenerate manifold. Trained to
the minimum (Adam, then full-batch GD to ``‖∇L‖`` ≈ 1e-6), then continued with (a) GD,
(b) minibatch SGD with batch ``B`` (with replacement), (c) GD + isotropic noise of the
same total power (``σ² = tr C_B / P``, ``"sgd"`` convention), (d) GD + Gaussian noise
with covariance ``C_B`` from per-sample gradients
(:class:`~hesslab.train.optim.HessianShapedNoiseGD`). Tracked: exact ``Tr H`` and
``Σ_{i≤r} log λᵢ`` of the dense Hessian (``eigenpairs(method="auto")``: dense up to
``P = 2000``; otherwise :func:`hesslab.trace` with its stderr and
:func:`hesslab.logdet`). The injected noise covariance is measured (trace of the
empirical covariance of many draws vs ``tr C_B``).

Claims are decided with standard errors over runs (:mod:`hesslab.experiments._claims`):
"falls" holds only when the mean decrease exceeds ``z_holds`` (3) standard errors over
at least 3 runs, and does not hold when the mean rises by as much; one MLP run per
process (the smoke size) leaves the MLP claims undecided. Toy runs that diverge
(non-finite, or ``|w| ≥`` :data:`DIVERGED_ABS`) are excluded from the statistics from
the step they diverge, and counted in the table and in every claim (at the full size, 2
of the 4,000 depth-3 isotropic runs).

Layout: :mod:`.config` (the config, section names, shared helpers), :mod:`.toy` (part 1),
:mod:`.mlp` (parts 2 and 3); this module holds the parts list, the summary and
:data:`SPEC`.

Run: ``hesslab reproduce wei2019 --smoke`` (toy depth 2 plus a short MLP part, under a
minute on 2 cores) or ``hesslab reproduce wei2019`` (see :data:`FULL_SECONDS`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from hesslab.experiments._base import Context, Experiment, Part
from hesslab.experiments.wei2019.config import (
    FULL_SECONDS,
    OPTIMIZERS,
    S1,
    S2,
    S3,
    SMOKE_SECONDS,
    Wei2019Config,
)
from hesslab.experiments.wei2019.mlp import part2
from hesslab.experiments.wei2019.toy import DIVERGED_ABS, part1, toy_hessian

__all__ = [
    "DIVERGED_ABS",
    "FULL_SECONDS",
    "OPTIMIZERS",
    "S1",
    "S2",
    "S3",
    "SMOKE_SECONDS",
    "SPEC",
    "Wei2019Config",
    "run",
    "toy_hessian",
]


def _parts(cfg: Wei2019Config) -> list[Part]:
    """The toy valley, then (optionally) the MLP part with the injected-noise check."""
    toy = Part("toy", lambda c: part1(c.cfg, c.run_dir, c.tick))
    return [toy, Part("mlp", lambda c: part2(c.cfg, c.run_dir, c.tick))] if cfg.mlp else [toy]


def _summary(ctx: Context) -> dict[str, Any]:
    """The parts' wall times.

    Returns:
        ``{"toy": {depth: {"changes": {process: {...}}, "claims": {...}}}, "mlp": {...} |
        None, "seconds": {...}, "config": {...}}``.
    """
    seconds = ctx.record_part_seconds()
    return {
        "toy": ctx.results["toy"],
        "mlp": ctx.results.get("mlp"),
        "seconds": seconds,
        "config": asdict(ctx.cfg),
    }


#: The registry entry (``hesslab.experiments.EXPERIMENTS[...]`` imports this module on access).
SPEC = Experiment(
    name="wei2019",
    title="How noise shapes the Hessian in a degenerate valley (Wei & Schwab 2019)",
    paper=(
        "Wei, Schwab (2019), How noise affects the Hessian spectrum in overparameterized "
        "neural networks"
    ),
    arxiv="1910.00195",
    description=(
        "Toy valleys ½(Πwᵢ − 1)² started on the valley and an MLP on a non-realizable digits "
        "subset at its minimum, continued with GD, SGD (label noise / minibatches), GD + "
        "isotropic noise and GD + minibatch-covariance (H-shaped) noise: Tr H falls under "
        "SGD-like noise, log det of the non-degenerate block under isotropic noise, GD stays."
    ),
    config_type=Wei2019Config,
    smoke_seconds=SMOKE_SECONDS,
    full_seconds=FULL_SECONDS,
    parts=_parts,
    summary=_summary,
    steps=lambda cfg: len(cfg.toy_depths) + (5 if cfg.mlp else 0),
)

#: ``run(run_dir, config=None, progress=None, stages=None) -> dict``: the runner
#: (:meth:`Experiment.run`; ``config=None`` is the smoke size): the toy valley and the MLP
#: part. Reference: Wei & Schwab (2019), "How noise affects the Hessian spectrum in
#: overparameterized neural networks", arXiv:1910.00195.
run = SPEC.run
