"""Reproduction of Sagun, Evci, Guney, Dauphin, Bottou (2017), arXiv:1706.04454.

"Empirical Analysis of the Hessian of Over-Parametrized Neural Networks": at the end of
training the Hessian spectrum is a *bulk* concentrated near zero plus a few *outliers*;
their number is about the number of classes ``k``; adding parameters (fixed data) only
grows the bulk; changing the data (more clusters, less separation) moves the outliers;
the outliers come from the Gauss–Newton term of

    ∇²L = (1/N) Σᵢ Jᵢᵀ ∇²ℓᵢ Jᵢ  (G)  +  (1/N) Σᵢ Σ_c ∂ℓᵢ/∂f_c ∇²f_c  (residual);

and small- and large-batch solutions lie in one basin: the loss along the straight line
between them rises only slightly.

Six parts, each a report section with figures, a table, numbers and a claim-vs-measured
row:

1. Bulk and outliers on Gaussian mixtures with ``k`` classes (exact Hessian, dense
   ``eigh`` in float64) and on digits (dense or Lanczos top eigenvalues).
2. Width sweep on fixed data.
3. Data sweep (number of classes, separation) on a fixed architecture.
4. Gauss–Newton vs Hessian: top-``k`` eigenvalues and subspace overlap.
5. Small-batch vs large-batch solutions: loss and ``λ_max`` on the line between them.
6. Papyan's class structure of ``G`` for every part-1 model: the leading eigenvectors of
   ``G`` in the span of the ``C`` class means (Papyan 2020: ``C`` or ``C−1`` of them) and
   the mini-bulk after them in the span of the class and cross-class means — the
   explanation of "outliers ≈ number of classes", not an eigengap guess.

Setup: the authors' own first (docs/PAPERS.md §3, [CODE]). The full size
(:meth:`Sagun2017Config.full`) is their public code's setup as closely as it is known:
``sklearn.datasets.make_blobs`` in 2-D (100 training and 100 test points, centres in
``[-10, 10]²``, ``cluster_std`` 1.0, standardised inputs), a ReLU MLP with hidden widths
[10, 5], init ``N(0, 0.1²)``, softmax cross-entropy, full-batch GD with lr 0.1 until
``‖∇L‖ ≤ 1e-4`` (at most 5,000 steps, then full-batch L-BFGS with a strong Wolfe line
search, restarted while it makes progress), exact Hessians; five seeds instead of their
50 repeats. Where L-BFGS stalls above the criterion a ReLU kink sits on a training point
(the smallest relative ``|pre-activation|`` is ~1e-12, reported as "ReLU kink"): the
loss is not differentiable there and ``‖∇L‖`` cannot reach 1e-4; such a run is "not a
minimum" and the count claims are decided over the minima only.
Every spectrum is reported with the gradient norm of its solution and whether
it is a minimum (``‖∇L‖ ≤ minimum_tol``); the small-batch solution of part 5 is
polished by full-batch GD to a minimum of its basin before the line is drawn, and the
line claim is undecided when an endpoint is not a minimum. The earlier variation
(10-D simplex mixtures, widths (20, 20), a fixed budget of 2,000 GD steps: on separable
data the cross-entropy has no finite minimiser, so a fixed budget stops at a small
finite loss) is the named extra configuration ``sagun2017-simplex``
(:meth:`Sagun2017Config.simplex`); the smoke size is a small simplex run.

Outlier count (the rule used everywhere, hesslab's one meaning of "outlier":
:func:`hesslab.count_outliers`, ``method="density"``): values zero within rounding are
set to 0; with ``λ₁ ≥ λ₂ ≥ ...`` above the floor ``outlier_floor·λ₁``, each gap
``λᵢ − λᵢ₊₁`` (``i ≤ outlier_search·k``) is measured in local mean eigenvalue spacings
just below it; the bulk edge is the lowest gap of at least 8 spacings, the count the
number of eigenvalues above it, the plausible range the counts at 8·``outlier_margin``
and 8/``outlier_margin`` spacings. The log-eigengap count of earlier versions
(:func:`count_outliers_eigengap`) is shown beside it in part 1's table for comparison
only. Papyan's class structure (part 6) explains the count: the class outliers (``k``
or ``k − 1``) and, above the bulk edge too, the leading cross-class (mini-bulk)
eigenvalues. The claim "count = k" is decided by the
share of (k, seed) runs with count k (≥ 2/3 holds, ≤ 1/3 does not hold).

Run: ``hesslab reproduce sagun2017 --smoke`` (all parts in well under a minute on 2 CPU
cores) or ``hesslab reproduce sagun2017`` (full size; see :data:`FULL_SECONDS`).

Layout: :mod:`.config` (the knobs and sizes), :mod:`.train` (data, models, GD and the
L-BFGS finisher), :mod:`.spectra` (eigenvalues, outlier count, bulk statistics),
:mod:`.part1`, :mod:`.sweeps` (parts 2 and 3), :mod:`.ggn` (part 4), :mod:`.line`
(part 5), :mod:`.papyan` (part 6), :mod:`.claims` (the claim rows) and
:mod:`.experiment` (parts, summary, :data:`SPEC`, :data:`SIMPLEX_SPEC`).
"""

from __future__ import annotations

from hesslab.experiments.sagun2017.config import (
    FULL_SECONDS,
    PAPER,
    SIMPLEX_FULL_SECONDS,
    SMOKE_SECONDS,
    Sagun2017Config,
    Sagun2017SimplexConfig,
)
from hesslab.experiments.sagun2017.experiment import SIMPLEX_SPEC, SPEC, run
from hesslab.experiments.sagun2017.ggn import _part4
from hesslab.experiments.sagun2017.line import _part5
from hesslab.experiments.sagun2017.papyan import _part6
from hesslab.experiments.sagun2017.part1 import _part1
from hesslab.experiments.sagun2017.spectra import count_outliers_eigengap
from hesslab.experiments.sagun2017.sweeps import _part2, _part3

__all__ = [
    "FULL_SECONDS",
    "PAPER",
    "SIMPLEX_FULL_SECONDS",
    "SIMPLEX_SPEC",
    "SMOKE_SECONDS",
    "SPEC",
    "Sagun2017Config",
    "Sagun2017SimplexConfig",
    "_part1",
    "_part2",
    "_part3",
    "_part4",
    "_part5",
    "_part6",
    "count_outliers_eigengap",
    "run",
]
