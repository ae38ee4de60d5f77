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

Outlier count (the rule used everywhere, :func:`hesslab.count_outliers`): values zero
within rounding are set to 0; with ``λ₁ ≥ λ₂ ≥ ...`` above the floor
``outlier_floor·λ₁``, the gap ratios ``λᵢ/λᵢ₊₁`` (``i ≤ outlier_search·k``); the bulk
edge is the lowest gap that cannot be told from the widest one within the margin
(``outlier_margin``, 1.25), and the count is the number of eigenvalues above it, with
the plausible range spanning every such gap. The claim "count = k" is decided by the
share of (k, seed) runs with count k (≥ 2/3 holds, ≤ 1/3 does not hold).

Run: ``hesslab reproduce sagun2017 --smoke`` (all parts in well under a minute on 2 CPU
cores) or ``hesslab reproduce sagun2017`` (full size; see :data:`FULL_SECONDS`).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hesslab.data import balanced_subset, blobs, digits, gaussian_mixture
from hesslab.data.datasets import Split
from hesslab.errors import ConfigurationError
from hesslab.experiments._base import Context, Experiment, Part
from hesslab.experiments._claims import add_claim, decide, record
from hesslab.measures.spectrum import OutlierCount, count_outliers
from hesslab.models import mlp
from hesslab.objective import Objective
from hesslab.operators import class_structure, ggn, hessian, subspace_fraction
from hesslab.report import plots
from hesslab.report.progress import StepProgress
from hesslab.report.run import RunDir
from hesslab.train import evaluate, fit, resolve_loss

__all__ = [
    "FULL_SECONDS",
    "SIMPLEX_SPEC",
    "SMOKE_SECONDS",
    "SPEC",
    "Sagun2017Config",
    "Sagun2017SimplexConfig",
    "count_outliers_eigengap",
    "run",
]

logger = logging.getLogger(__name__)

#: Measured wall time of :meth:`Sagun2017Config.smoke` with one CPU thread (three seeds).
SMOKE_SECONDS = 60.0
#: Wall time of :meth:`Sagun2017Config.full` (the authors' setup): a full run here
#: (results/sagun2017) took 141 s CPU with one thread (1,074 s wall with the 2 cores shared
#: ~9 ways; 530 MiB peak).
FULL_SECONDS = 150.0
#: Wall time of :meth:`Sagun2017Config.simplex` (``sagun2017-simplex``): a full run here
#: with part 6 (results/sagun2017-simplex) took 199 s CPU with one thread (712 s wall on
#: the shared 2 cores; 837 MiB peak).
SIMPLEX_FULL_SECONDS = 200.0

PAPER = "Sagun, Evci, Guney, Dauphin, Bottou (2017), arXiv:1706.04454"

S1 = "1. Bulk and outliers"
S2 = "2. Width sweep (fixed data)"
S3 = "3. Data sweep (fixed architecture)"
S4 = "4. Gauss-Newton vs Hessian"
S5 = "5. Small-batch vs large-batch solutions"
S6 = "6. Class structure (Papyan): why the outliers number about k"


@dataclass(frozen=True)
class Sagun2017Config:
    """Every knob of the reproduction. Build with :meth:`smoke` or :meth:`full`.

    Attributes:
        seeds: seeds of part 1 (data, init and batch order all use the seed); parts 2-5
            use ``seeds[0]``.
        ks: numbers of classes of part 1.
        data: ``"blobs"`` (the authors' code: ``sklearn.datasets.make_blobs``, centres in
            ``[-10, 10]^dim``, ``cluster_std = spread``, standardised inputs) or
            ``"simplex"`` (means on a regular simplex ``separation`` apart). For blobs a
            ``separation`` s of the sweeps means ``cluster_std = spread·separation/s``.
        num_points: blobs: train + test points in all (the authors: 200), half each;
            ``0``: ``2·num_per_class·k``.
        dim: input dimension of the mixtures (``>= max(ks) - 1`` for simplex means).
        num_per_class: points per class before the 50/50 train/test split.
        spread: within-class standard deviation.
        separation: distance between class means.
        widths: hidden widths of the MLP (parts 1, 3, 4).
        activation: hidden activation.
        init: standard deviation of the ``N(0, init²)`` initialisation (Sagun: 0.1).
        loss: ``"ce"`` (the paper) or ``"mse"``.
        lr: full-batch GD learning rate.
        momentum: GD heavy-ball momentum.
        steps: GD steps (upper bound when ``grad_tol`` is set).
        grad_tol: stop when ``‖∇L‖ ≤ grad_tol`` (``None``: run all ``steps``).
        finisher: ``"lbfgs"``: a GD run that stops above ``grad_tol`` is continued by
            full-batch L-BFGS (strong Wolfe) to ``grad_tol`` (``"none"``: GD only).
        finisher_iters: most L-BFGS iterations of the finisher.
        minimum_tol: a solution counts as a minimum when ``‖∇L‖ ≤ minimum_tol`` (reported
            beside every spectrum; claims comparing solutions need minima).
        outlier_search: the outlier count is searched in ``1..ceil(outlier_search·k)``.
        outlier_floor: ``rel_floor`` of :func:`hesslab.count_outliers` (values below
            ``outlier_floor·λ₁`` are bulk).
        outlier_margin: ``margin`` of :func:`hesslab.count_outliers`.
        near_zero_tol: eigenvalues with ``|λ| ≤ near_zero_tol`` count as (near) zero.
        dense_max: largest ``P`` for a dense Hessian; above it Lanczos top eigenvalues.
        lanczos_tol: relative residual tolerance of Lanczos.
        digits: run the digits MLP in part 1.
        digits_widths: hidden widths of the digits MLP.
        digits_per_class: training points per class of digits (``0``: all 1,347).
        digits_lr: GD learning rate on digits.
        digits_steps: GD steps on digits.
        digits_top: eigenvalues computed on digits when Lanczos is used.
        width_sweep: hidden widths of part 2.
        width_k: classes of the part-2 data.
        data_sweep: ``(k, separation)`` pairs of part 3 (``spread`` fixed).
        ggn_ks: classes of the part-4 comparison (models of part 1, first seed).
        line_k: classes of the part-5 data.
        line_separation: class separation of the part-5 data (overlapping: finite loss).
        line_spread: within-class spread of the part-5 data.
        line_num_per_class: points per class of the part-5 data.
        small_batch: batch size of the small-batch (SGD) solution.
        small_lr: learning rate of the small-batch solution.
        small_epochs: epochs of the small-batch solution.
        large_lr: learning rate of the large-batch (full-batch GD) solution.
        large_steps: steps of the large-batch solution.
        polish_steps: full-batch GD steps (lr ``large_lr``, to ``grad_tol``) after the
            small-batch SGD, so that both endpoints are minima (``0``: none).
        line_t: ``(t_min, t_max, num_points)`` of ``w(t) = (1-t) w_small + t w_large``.
        barrier_tol: largest barrier ``max_t L(t) - max(L(0), L(1))`` (nats) that counts
            as "no large barrier".
        move_min: smallest ratio ``max/min`` of ``λ₁`` over a data sweep group that counts
            as "the outliers moved".
        bulk_max_change: largest change of the near-zero fraction over a data sweep group
            that counts as "the bulk stayed".
        overlap_min: smallest ``‖U_Hᵀ U_G‖²_F / k`` that counts as "the same subspace".
        ggn_rel_tol: largest relative difference of the top-``k`` eigenvalues of ``H``
            and ``G`` that counts as "the same outliers".
        outlier_stability: largest ratio ``max/min`` of each top-``k`` eigenvalue over
            the width sweep that counts as "the outliers stay put".
        dtype: floating dtype of models and data (``"float64"``: exact Hessians).
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    ks: tuple[int, ...] = (3, 5)
    data: str = "simplex"
    num_points: int = 0
    dim: int = 10
    num_per_class: int = 50
    spread: float = 0.5
    separation: float = 5.0
    widths: tuple[int, ...] = (20, 20)
    activation: str = "relu"
    init: float = 0.1
    loss: str = "ce"
    lr: float = 0.1
    momentum: float = 0.0
    steps: int = 1000
    grad_tol: float | None = None
    finisher: str = "none"
    finisher_iters: int = 2000
    minimum_tol: float = 1e-3
    outlier_search: float = 2.0
    outlier_floor: float = 1e-3
    outlier_margin: float = 1.25
    near_zero_tol: float = 1e-6
    dense_max: int = 2500
    lanczos_tol: float = 1e-6
    digits: bool = True
    digits_widths: tuple[int, ...] = (16,)
    digits_per_class: int = 40
    digits_lr: float = 0.1
    digits_steps: int = 500
    digits_top: int = 21
    width_sweep: tuple[tuple[int, ...], ...] = ((10, 10), (20, 20), (30, 30))
    width_k: int = 3
    data_sweep: tuple[tuple[float, float], ...] = ((3, 5.0), (5, 5.0), (5, 2.5))
    ggn_ks: tuple[int, ...] = (3, 5)
    line_k: int = 3
    line_separation: float = 2.5
    line_spread: float = 1.0
    line_num_per_class: int = 100
    small_batch: int = 10
    small_lr: float = 0.2
    small_epochs: int = 60
    large_lr: float = 0.1
    large_steps: int = 2000
    polish_steps: int = 0
    line_t: tuple[float, float, int] = (-0.2, 1.2, 15)
    barrier_tol: float = 0.05
    move_min: float = 1.5
    bulk_max_change: float = 0.1
    overlap_min: float = 0.9
    ggn_rel_tol: float = 0.2
    outlier_stability: float = 2.0
    dtype: str = "float64"

    @classmethod
    def smoke(cls) -> Sagun2017Config:
        """All five parts, small: k = 3 and 5 over three seeds, dense Hessians (about a
        minute on 2 cores)."""
        return cls()

    @classmethod
    def full(cls) -> Sagun2017Config:
        """The authors' setup (their public code): 2-D blobs, 100 train / 100 test points,
        ReLU MLP [10, 5], init N(0, 0.1²), full-batch GD lr 0.1 until ‖∇L‖ ≤ 1e-4, exact
        Hessians; k = 2, 5, 10 over five seeds (they ran 50 repeats). GD is capped at
        5,000 steps and continued by full-batch L-BFGS (strong Wolfe) to ‖∇L‖ ≤ 1e-4; a
        run that still stops above 1e-4 is reported as not a minimum beside its
        spectrum (with the ReLU-kink distance that explains most such stops)."""
        return cls(
            ks=(2, 5, 10),
            data="blobs",
            num_points=200,
            dim=2,
            spread=1.0,
            widths=(10, 5),
            seeds=(0, 1, 2, 3, 4),
            steps=5000,
            grad_tol=1e-4,
            finisher="lbfgs",
            minimum_tol=1e-4,
            digits_widths=(32, 32),
            digits_per_class=0,
            digits_steps=2000,
            width_sweep=((10, 5), (20, 10), (40, 20)),
            width_k=5,
            data_sweep=((3, 5.0), (5, 5.0), (10, 5.0), (5, 2.5)),
            ggn_ks=(5, 10),
            line_k=5,
            line_num_per_class=20,
            small_epochs=60,
            large_steps=5000,
            polish_steps=5000,
            line_t=(-0.2, 1.2, 15),
        )

    @classmethod
    def simplex(cls) -> Sagun2017Config:
        """The earlier full size, a variation of the authors' setup: 10-D simplex mixtures,
        widths (20, 20), a fixed budget of 2,000 GD steps (registry name
        ``sagun2017-simplex``)."""
        return cls(
            seeds=(0, 1, 2),
            ks=tuple(range(2, 11)),
            num_per_class=100,
            steps=2000,
            digits_widths=(32, 32),
            digits_per_class=0,
            digits_steps=2000,
            width_sweep=((10, 10), (20, 20), (40, 40), (60, 60)),
            width_k=5,
            data_sweep=((3, 5.0), (5, 5.0), (7, 5.0), (10, 5.0), (5, 3.0), (5, 2.0)),
            ggn_ks=(3, 5, 10),
            line_k=5,
            line_num_per_class=200,
            small_epochs=60,
            large_steps=3000,
            line_t=(-0.2, 1.2, 29),
        )


@dataclass(frozen=True)
class Sagun2017SimplexConfig(Sagun2017Config):
    """``sagun2017-simplex``: :meth:`Sagun2017Config.simplex` as its full size."""

    @classmethod
    def full(cls) -> Sagun2017SimplexConfig:
        """The simplex variation (:meth:`Sagun2017Config.simplex`)."""
        return cls(**asdict(Sagun2017Config.simplex()))


# ---------------------------------------------------------------------------------------
# helpers


def count_outliers_eigengap(
    values: Any, max_count: int, *, rel_floor: float = 1e-3, margin: float = 1.25
) -> tuple[int, float]:
    """Number of outliers by :func:`hesslab.count_outliers` (gap rule) and its gap ratio.

    The count searched in ``1..max_count``; the bulk edge is the lowest gap that cannot
    be told from the widest (``margin``). Returns ``(count, λ_count / λ_count+1)``
    (``(0, nan)`` without a gap or with fewer than two positive eigenvalues).
    """
    v = torch.as_tensor(values).detach().to("cpu", torch.float64).reshape(-1)
    if int((v > 0).sum()) < 2:
        return 0, float("nan")
    r = _count(v, max_count, rel_floor, margin)
    return r.count, (float(r.gaps[r.count - 1]) if r.count else float("nan"))


def _count(values: Any, max_count: int, rel_floor: float, margin: float) -> OutlierCount:
    v = torch.as_tensor(values).detach().to("cpu", torch.float64)
    return count_outliers(v, max_count=max_count, rel_floor=rel_floor, margin=margin)


def _outliers(cfg: Sagun2017Config, values: Any, k: int) -> OutlierCount:
    """The outlier count used everywhere in this reproduction."""
    return _count(values, _max_count(cfg, k), cfg.outlier_floor, cfg.outlier_margin)


def _is_min(cfg: Sagun2017Config, grad_norm: float) -> bool:
    return bool(grad_norm <= cfg.minimum_tol)


def _dtype(cfg: Sagun2017Config) -> torch.dtype:
    return {"float64": torch.float64, "float32": torch.float32}[cfg.dtype]


def _max_count(cfg: Sagun2017Config, k: int) -> int:
    return max(1, math.ceil(cfg.outlier_search * k))


def _mixture(
    cfg: Sagun2017Config,
    k: int,
    seed: int,
    *,
    separation: float | None = None,
    spread: float | None = None,
    num_per_class: int | None = None,
) -> Split:
    if cfg.data == "blobs":
        sep = cfg.separation if separation is None else separation
        std = (cfg.spread if spread is None else spread) * cfg.separation / sep
        n = cfg.num_points or 2 * (num_per_class or cfg.num_per_class) * k
        if num_per_class is not None:
            n = 2 * num_per_class * k
        return blobs(num_classes=k, num_train=n // 2, num_test=n - n // 2, dim=cfg.dim,
                     cluster_std=std, seed=seed, dtype=_dtype(cfg))  # fmt: skip
    if cfg.data != "simplex":
        raise ConfigurationError(f"data must be 'blobs' or 'simplex', got {cfg.data!r}")
    return gaussian_mixture(
        num_classes=k,
        dim=cfg.dim,
        num_per_class=num_per_class or cfg.num_per_class,
        spread=cfg.spread if spread is None else spread,
        separation=cfg.separation if separation is None else separation,
        seed=seed,
        dtype=_dtype(cfg),
    )


def _model(cfg: Sagun2017Config, in_dim: int, widths: Sequence[int], k: int, seed: int):
    return mlp(
        in_dim, tuple(widths), k, activation=cfg.activation, seed=seed, init=cfg.init,
        dtype=_dtype(cfg),
    )  # fmt: skip


def _train_gd(cfg: Sagun2017Config, model: nn.Module, split: Split, *, lr=None, steps=None):
    res = fit(
        model,
        split,
        loss=cfg.loss,
        optimizer="gd",
        lr=cfg.lr if lr is None else lr,
        momentum=cfg.momentum,
        steps=cfg.steps if steps is None else steps,
        grad_tol=cfg.grad_tol,
    )
    return _finish(cfg, res, split)


def _finish(cfg: Sagun2017Config, res: Any, split: Split) -> Any:
    """Continue a GD result with full-batch L-BFGS until ``‖∇L‖ ≤ grad_tol``.

    ``cfg.finisher == "lbfgs"``: :class:`torch.optim.LBFGS` (strong Wolfe line search,
    history 50) on the exact full-batch loss, restarted (fresh history) until the
    gradient norm reaches ``grad_tol`` or ``finisher_iters`` iterations are spent. The
    returned result is :func:`hesslab.train.fit`'s with zero further steps at the
    finished weights (so its ``final_*`` fields are measured there), ``steps`` the GD
    steps plus the L-BFGS iterations and ``stopped_by`` ``"lbfgs"``.
    """
    if cfg.finisher == "none" or cfg.grad_tol is None or res.converged:
        return res
    if cfg.finisher != "lbfgs":
        raise ConfigurationError(f"finisher must be 'none' or 'lbfgs', got {cfg.finisher!r}")
    net = copy.deepcopy(res.model)
    x, y = split.train.tensors
    loss_fn = resolve_loss(cfg.loss)
    spent, chunk, last = 0, max(1, min(500, cfg.finisher_iters)), math.inf
    while spent < cfg.finisher_iters:  # restarts with a fresh history while progressing
        made: list[torch.optim.LBFGS] = []
        step = fit(
            net, split.train, loss=cfg.loss, optimizer=_lbfgs(cfg, chunk, made),
            batch_size=None, steps=1, inplace=True,
        )  # fmt: skip
        if not step.history:  # the loss turned non-finite: nothing to continue
            break
        value, opt = step.history[0]["loss"], made[0]
        spent += max(1, int(opt.state[opt.param_groups[0]["params"][0]].get("n_iter", chunk)))
        if float(_grad_norm_of(net, x, y, loss_fn)) <= cfg.grad_tol or value >= last:
            break  # reached the criterion, or a restart made no progress (a kink)
        last = value
    done = fit(net, split, loss=cfg.loss, optimizer="gd", steps=0, grad_tol=cfg.grad_tol)
    return dataclasses.replace(done, steps=res.steps + spent, stopped_by="lbfgs",
                               seconds=res.seconds + done.seconds)  # fmt: skip


def _lbfgs(cfg: Sagun2017Config, chunk: int, made: list) -> Callable:
    """The finisher's L-BFGS factory for :func:`fit` (each optimizer made is appended)."""

    def make(params: list) -> torch.optim.LBFGS:
        opt = torch.optim.LBFGS(
            params,
            lr=1.0,
            max_iter=chunk,
            history_size=50,
            line_search_fn="strong_wolfe",
            tolerance_grad=cfg.grad_tol / 10,
            tolerance_change=1e-30,
        )
        made.append(opt)
        return opt

    return make


def _grad_norm_of(net: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable) -> Tensor:
    grads = torch.autograd.grad(loss_fn(net(x), y), [p for p in net.parameters()])
    return torch.sqrt(sum(g.square().sum() for g in grads))


def _kink(model: nn.Module, x: Tensor) -> float:
    """Smallest ``|pre-activation|`` of any ReLU over the points ``x``, relative to its
    layer's largest: near 0 says a ReLU kink sits on a training point, where the loss is
    not differentiable and ``‖∇L‖`` need not vanish at a minimum."""
    out: list[float] = []

    def hook(_m: nn.Module, inp: tuple[Tensor, ...], _o: Tensor) -> None:
        a = inp[0].detach().abs()
        out.append(float(a.min() / a.max().clamp_min(1e-300)))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return min(out) if out else math.nan


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _spectrum(
    cfg: Sagun2017Config,
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    *,
    which: str = "hessian",
    vectors: bool = False,
    top: int | None = None,
    seed: int = 0,
    dense: bool = False,
) -> dict[str, Any]:
    """Eigenvalues (descending) of the Hessian or GGN: dense ``eigh`` or Lanczos top-``top``.

    Dense (exact, float64) when ``P <= cfg.dense_max`` or ``dense`` (bulk statistics
    need every eigenvalue); Lanczos top-``top`` otherwise.
    """
    from hesslab.linalg.lanczos import eigenpairs

    make = hessian if which == "hessian" else ggn
    op = make(model, cfg.loss, data)
    P = op.shape[0]
    exact = dense or P <= cfg.dense_max
    k = P if exact else min(P, top or cfg.digits_top)
    res = eigenpairs(
        op, k, which="largest", tol=cfg.lanczos_tol, method="dense" if exact else "lanczos",
        generator=torch.Generator().manual_seed(seed), return_vectors=vectors,
    )  # fmt: skip
    method = "dense eigh"
    if not exact:
        method = f"lanczos top-{k} ({res.num_matvecs} matvecs, "
        method += f"{int(res.converged.sum())}/{k} converged)"
    out = {"values": res.values.to(torch.float64).cpu(), "method": method, "exact": exact}
    if not exact:
        out["converged"] = bool(res.converged.all())
    if vectors:
        out["vectors"] = res.vectors.to(torch.float64).cpu()
    out["P"] = P
    out["seconds"] = res.seconds
    return out


def _lambda_max(
    cfg: Sagun2017Config, model: nn.Module, data: tuple[Tensor, Tensor], seed: int
) -> float:
    """Largest Hessian eigenvalue by Lanczos (a few dozen products instead of ``P``)."""
    from hesslab.linalg.lanczos import eigenpairs

    res = eigenpairs(
        hessian(model, cfg.loss, data), 1, which="largest", tol=cfg.lanczos_tol,
        generator=torch.Generator().manual_seed(seed), return_vectors=False,
    )  # fmt: skip
    return float(res.values[0])


def _bulk_stats(values: Tensor, count: int, near_zero_tol: float) -> dict[str, float]:
    v = values.to(torch.float64)
    bulk = v[count:]
    return {
        "bulk_edge": float(bulk[0]) if bulk.numel() else float("nan"),
        "lambda_min": float(v[-1]),
        "bulk_width": float(bulk[0] - bulk[-1]) if bulk.numel() else float("nan"),
        "near_zero": int((v.abs() <= near_zero_tol).sum()),
        "near_zero_fraction": float((v.abs() <= near_zero_tol).double().mean()),
    }


def _fmt(values: Sequence[float]) -> str:
    return ", ".join(f"{float(x):.3g}" for x in values)


def _set_flat(model: nn.Module, flat: Tensor) -> nn.Module:
    out = copy.deepcopy(model)
    torch.nn.utils.vector_to_parameters(flat, out.parameters())
    return out.eval()


# ---------------------------------------------------------------------------------------
# parts


def _setup_text(cfg: Sagun2017Config) -> str:
    if cfg.data == "blobs":
        data = (
            f"2·{cfg.num_points // 2 or cfg.num_per_class} blobs (sklearn make_blobs, "
            f"dim {cfg.dim}, cluster_std {cfg.spread}, standardised; half for training)"
        )
    else:
        data = (
            f"Gaussian mixtures on a simplex (dim {cfg.dim}, separation "
            f"{cfg.separation}, spread {cfg.spread}, {cfg.num_per_class} points per "
            "class, half for training)"
        )
    stop = (
        f"until ‖∇L‖ ≤ {cfg.grad_tol:g} (at most {cfg.steps} steps)"
        if cfg.grad_tol
        else (f"{cfg.steps} steps (a fixed budget)")
    )
    return (
        f"Exact Hessian spectra (dense `eigh`, float64) at the end of full-batch GD on {data} "
        f"with k classes; MLP hidden widths {list(cfg.widths)}, init N(0, {cfg.init}²), loss "
        f"{cfg.loss}, lr {cfg.lr}, {stop}. A solution is a minimum when ‖∇L‖ ≤ "
        f"{cfg.minimum_tol:g} (the gradient norm is beside every spectrum). Outliers: "
        "hesslab.count_outliers (gap rule, values zero within rounding set to 0, floor "
        f"{cfg.outlier_floor:g}·λ₁, margin {cfg.outlier_margin}), count ≤ "
        f"{cfg.outlier_search}·k."
    )


def _part1_claim(cfg, run, counts, bounds, minima, digits_out):
    """ "count = k" decided by the share of (k, seed) runs whose count is k (≥ 2/3)."""
    runs = [(k, n) for k in cfg.ks for n in counts[k]]
    hits = [float(n == k) for k, n in runs]
    if cfg.grad_tol is not None:  # trained to a criterion: decide over the actual minima
        hits = [h for h, m in zip(hits, minima, strict=True) if m]
    verdict = decide(hits, rule="fraction", margin=0.5)
    in_range = sum(lo <= k <= hi for k in cfg.ks for lo, hi in bounds[k])
    eq_k1 = sum(n == k - 1 for k, n in runs)
    measured = (
        f"count = k in {int(sum(hits))}/{len(runs)} runs (k within the plausible range in "
        f"{in_range}/{len(runs)}), = k−1 in {eq_k1}/{len(runs)}; "
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


def _part1(cfg: Sagun2017Config, run: RunDir, tick: StepProgress) -> dict[str, Any]:
    run.add_text(S1, _setup_text(cfg))
    rows, spectra, counts, models = [], {}, {}, {}
    every: dict[str, tuple[nn.Module, Split, bool]] = {}
    bounds: dict[int, list[tuple[int, int]]] = {}
    minima: list[bool] = []
    for k in cfg.ks:
        counts[k], bounds[k] = [], []
        for seed in cfg.seeds:
            split = _mixture(cfg, k, seed)
            res = _train_gd(cfg, _model(cfg, cfg.dim, cfg.widths, k, seed), split)
            spec = _spectrum(cfg, res.model, split.train.tensors, seed=seed, dense=True)
            v = spec["values"]
            oc = _outliers(cfg, v, k)
            n, gap = oc.count, (float(oc.gaps[oc.count - 1]) if oc.count else math.nan)
            counts[k].append(n)
            bounds[k].append((oc.low, oc.high))
            minima.append(_is_min(cfg, res.final_grad_norm))
            bulk = _bulk_stats(v, n, cfg.near_zero_tol)
            rows.append(
                {
                    "k": k,
                    "seed": seed,
                    "P": spec["P"],
                    "N": len(split.train),
                    "outliers": n,
                    "plausible": f"{oc.low}-{oc.high}",
                    "gap ratio": round(gap, 2),
                    "= k": n == k,
                    "= k-1": n == k - 1,
                    "top eigenvalues": _fmt(v[: k + 2]),
                    "bulk edge": bulk["bulk_edge"],
                    "λ_min": bulk["lambda_min"],
                    "bulk width": bulk["bulk_width"],
                    "train loss": res.final_train_loss,
                    "‖∇L‖": res.final_grad_norm,
                    "minimum": _is_min(cfg, res.final_grad_norm),
                    "ReLU kink": _kink(res.model, split.train.x),
                    "steps": res.steps,
                    "stopped by": res.stopped_by,
                    "train acc": res.final_train_accuracy,
                    "test acc": res.final_test_accuracy,
                }
            )
            run.add_array(f"part1/k{k}/seed{seed}/eigenvalues", v)
            run.add_scalar(S1, f"outliers k={k} seed={seed}", n, gap_ratio=gap, rule="eigengap")
            every[f"{k}/{seed}"] = (res.model, split, _is_min(cfg, res.final_grad_norm))
            if seed == cfg.seeds[0]:
                spectra[k] = v
                models[k] = (res.model, split)
            tick(f"sagun2017 part 1: k={k} seed={seed}: {n} outliers")

    run.add_table(
        S1,
        "outliers per k",
        rows,
        caption="One row per (k, seed). Outliers by hesslab.count_outliers (the bulk edge "
        "at the lowest log-gap that cannot be told from the widest; 'plausible' spans the "
        "counts of every such gap); bulk edge = largest non-outlier eigenvalue; bulk width "
        f"= bulk edge − λ_min; minimum: ‖∇L‖ ≤ {cfg.minimum_tol:g}.",
    )
    top = 2 * max(cfg.ks) + 2
    run.add_figure(
        S1,
        "part1_spectra",
        plots.plot_spectra_comparison(
            {f"k={k}": spectra[k][:top] for k in cfg.ks},
            top_k=top,
            title="Top Hessian eigenvalues at the end of training, per number of classes k",
        ),
        f"Ranked top-{top} Hessian eigenvalues (symlog) for each k (seed {cfg.seeds[0]}): a "
        "few outliers, then a drop into the bulk; the drop sits at about rank k.",
    )
    kbig = max(cfg.ks)
    run.add_figure(
        S1,
        "part1_full_spectrum",
        plots.plot_eigenvalues(
            spectra[kbig], title=f"Full Hessian spectrum, k={kbig} (P={spectra[kbig].numel()})"
        ),
        f"All {spectra[kbig].numel()} eigenvalues for k = {kbig}, ranked (symlog): a bulk "
        "at and near zero (of both signs) and a handful of large outliers.",
    )

    # digits
    digits_out: dict[str, Any] | None = None
    if cfg.digits:
        seed = cfg.seeds[0]
        split = digits(seed=seed, dtype=_dtype(cfg))
        if cfg.digits_per_class > 0:
            split = Split(balanced_subset(split.train, cfg.digits_per_class, seed=seed), split.test)
        net = _model(cfg, 64, cfg.digits_widths, 10, seed)
        res = _train_gd(cfg, net, split, lr=cfg.digits_lr, steps=cfg.digits_steps)
        spec = _spectrum(cfg, res.model, split.train.tensors, top=cfg.digits_top, seed=seed)
        v = spec["values"]
        oc = _count(v, min(_max_count(cfg, 10), v.numel() - 1), cfg.outlier_floor,
                    cfg.outlier_margin)  # fmt: skip
        n, gap = oc.count, (float(oc.gaps[oc.count - 1]) if oc.count else math.nan)
        digits_out = {
            "P": spec["P"],
            "N": len(split.train),
            "outliers": n,
            "plausible": f"{oc.low}-{oc.high}",
            "gap ratio": round(gap, 2),
            "method": spec["method"],
            "top eigenvalues": _fmt(v[:12]),
            "train loss": res.final_train_loss,
            "‖∇L‖": res.final_grad_norm,
            "minimum": _is_min(cfg, res.final_grad_norm),
            "train acc": res.final_train_accuracy,
            "test acc": res.final_test_accuracy,
        }
        run.add_table(S1, "digits", [digits_out], caption="Digits (10 classes), MLP 64-"
                      + "-".join(map(str, cfg.digits_widths)) + "-10, GD.")  # fmt: skip
        run.add_array("part1/digits/eigenvalues", v)
        run.add_scalar(S1, "outliers digits", n, gap_ratio=gap, method=spec["method"])
        run.add_figure(
            S1,
            "part1_digits",
            plots.plot_eigenvalues(
                v[: min(v.numel(), 30)],
                title=f"Digits MLP: top Hessian eigenvalues (P={spec['P']})",
            ),
            f"Top eigenvalues of the digits MLP ({spec['method']}); {n} outliers by the "
            "eigengap rule (10 classes).",
        )
        tick(f"sagun2017 part 1: digits: {n} outliers")

    verdict = _part1_claim(cfg, run, counts, bounds, minima, digits_out)
    return {"counts": counts, "models": models, "every": every, "digits": digits_out, "rows": rows,
            "bounds": bounds, "verdict": verdict.as_dict(), "minima": sum(minima),
            "runs": len(minima)}  # fmt: skip


def _part2(cfg: Sagun2017Config, run: RunDir, tick: StepProgress) -> dict[str, Any]:
    k, seed = cfg.width_k, cfg.seeds[0]
    split = _mixture(cfg, k, seed)
    run.add_text(
        S2,
        f"Same data (k = {k}, seed {seed}), hidden widths {[list(w) for w in cfg.width_sweep]}, "
        "same training. Expectation: the number of (near-)zero eigenvalues grows with P, "
        "the top-k outliers barely move.",
    )
    rows, spectra, tops, Ps, zeros = [], {}, [], [], []
    for widths in cfg.width_sweep:
        res = _train_gd(cfg, _model(cfg, cfg.dim, widths, k, seed), split)
        spec = _spectrum(cfg, res.model, split.train.tensors, seed=seed, dense=True)
        v = spec["values"]
        oc = _outliers(cfg, v, k)
        n, gap = oc.count, (float(oc.gaps[oc.count - 1]) if oc.count else math.nan)
        bulk = _bulk_stats(v, k, cfg.near_zero_tol)
        label = "x".join(map(str, widths))
        spectra[f"{label} (P={spec['P']})"] = v
        tops.append(v[:k].numpy())
        Ps.append(spec["P"])
        zeros.append(bulk["near_zero"])
        rows.append(
            {
                "widths": label,
                "P": spec["P"],
                "outliers": n,
                "plausible": f"{oc.low}-{oc.high}",
                "gap ratio": round(gap, 2),
                "top-k eigenvalues": _fmt(v[:k]),
                "bulk edge λ_{k+1}": bulk["bulk_edge"],
                "λ_min": bulk["lambda_min"],
                f"#|λ|≤{cfg.near_zero_tol:g}": bulk["near_zero"],
                "near-zero fraction": round(bulk["near_zero_fraction"], 3),
                "train loss": res.final_train_loss,
                "‖∇L‖": res.final_grad_norm,
                "minimum": _is_min(cfg, res.final_grad_norm),
            }
        )
        run.add_array(f"part2/{label}/eigenvalues", v)
        tick(f"sagun2017 part 2: widths {label}: P={spec['P']}, {n} outliers")
    run.add_table(S2, "width sweep", rows)
    tops_a = np.stack(tops)  # [W, k]
    stability = float(np.max(tops_a.max(0) / np.maximum(tops_a.min(0), 1e-300)))
    top = 2 * k + 3
    run.add_figure(
        S2,
        "part2_width_spectra",
        plots.plot_spectra_comparison(
            {name: v[:top] for name, v in spectra.items()},
            top_k=top,
            title=f"Top Hessian eigenvalues across widths (k={k})",
        ),
        "Top eigenvalues per width: the first k (outliers) stay at similar values while P grows.",
    )
    run.add_figure(
        S2,
        "part2_bulk_vs_P",
        plots.plot_series(
            Ps,
            {
                f"#|λ| ≤ {cfg.near_zero_tol:g}": np.asarray(zeros, dtype=float),
                "P − #near-zero": np.asarray(Ps, dtype=float) - np.asarray(zeros, dtype=float),
                **{f"λ_{i + 1}": tops_a[:, i] for i in range(k)},
            },
            title="Bulk size and outliers vs number of parameters",
            xlabel="P",
            log_y=True,
        ),
        "Near-zero eigenvalue count (the bulk at zero) grows with P; the k outliers λ_1..λ_k "
        "stay roughly flat.",
    )
    counts = [r["outliers"] for r in rows]
    grows = all(b > a for a, b in itertools.pairwise(zeros))
    share = decide([float(c == k) for c in counts], rule="fraction", margin=0.5)
    steady = stability <= cfg.outlier_stability
    holds = False if not (grows and steady) else share.holds
    run.add_scalar(S2, "outlier stability max/min", stability)
    mins = sum(r["minimum"] for r in rows)
    record(
        run,
        S2,
        "Adding parameters with the data fixed grows the bulk and leaves the outliers "
        f"(each top-k eigenvalue within a factor {cfg.outlier_stability} across widths, "
        "near-zero count increasing with P, count = k in ≥ 2/3 of the widths).",
        f"P = {Ps}; near-zero counts {zeros} ({'increasing' if grows else 'not increasing'}); "
        f"outlier counts {counts} ({share.text}); top-k eigenvalues vary by at most a factor "
        f"{stability:.2f}; minima {mins}/{len(rows)}",
        holds,
    )
    return {"P": Ps, "near_zero": zeros, "outliers": counts, "stability": stability}


def _part3(cfg: Sagun2017Config, run: RunDir, tick: StepProgress) -> dict[str, Any]:
    seed = cfg.seeds[0]
    run.add_text(
        S3,
        f"Fixed hidden widths {list(cfg.widths)}; data varies: (k, separation) in "
        f"{[list(p) for p in cfg.data_sweep]}, spread {cfg.spread}. Only the output layer "
        "changes with k (P changes by k·(width+1)).",
    )
    rows, spectra, lam1, fracs = [], {}, [], []
    for k, sep in cfg.data_sweep:
        k = int(k)
        split = _mixture(cfg, k, seed, separation=float(sep))
        res = _train_gd(cfg, _model(cfg, cfg.dim, cfg.widths, k, seed), split)
        spec = _spectrum(cfg, res.model, split.train.tensors, seed=seed, dense=True)
        v = spec["values"]
        oc = _outliers(cfg, v, k)
        n, gap = oc.count, (float(oc.gaps[oc.count - 1]) if oc.count else math.nan)
        bulk = _bulk_stats(v, n, cfg.near_zero_tol)
        label = f"k={k}, sep={float(sep):g}"
        spectra[label] = v
        lam1.append(float(v[0]))
        fracs.append(bulk["near_zero_fraction"])
        rows.append(
            {
                "k": k,
                "separation": float(sep),
                "P": spec["P"],
                "outliers": n,
                "gap ratio": round(gap, 2),
                "λ₁": float(v[0]),
                "top eigenvalues": _fmt(v[: k + 1]),
                "bulk edge": bulk["bulk_edge"],
                "λ_min": bulk["lambda_min"],
                "near-zero fraction": round(bulk["near_zero_fraction"], 3),
                "train loss": res.final_train_loss,
                "‖∇L‖": res.final_grad_norm,
                "minimum": _is_min(cfg, res.final_grad_norm),
                "test acc": res.final_test_accuracy,
            }
        )
        run.add_array(f"part3/k{k}_sep{float(sep):g}/eigenvalues", v)
        tick(f"sagun2017 part 3: {label}: {n} outliers")
    run.add_table(S3, "data sweep", rows)
    top = 2 * max(int(k) for k, _ in cfg.data_sweep) + 2
    run.add_figure(
        S3,
        "part3_data_spectra",
        plots.plot_spectra_comparison(
            {name: v[:top] for name, v in spectra.items()},
            top_k=top,
            title="Top Hessian eigenvalues across data sets (fixed architecture)",
        ),
        "Outliers move (their number follows k, their size the separation); the tail "
        "into the bulk stays where it is.",
    )
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
    return {"lambda_1": lam1, "outliers": counts, "near_zero_fraction": fracs, "holds": verdicts}


def _part4(
    cfg: Sagun2017Config, run: RunDir, tick: StepProgress, models: dict[int, Any]
) -> dict[str, Any]:
    run.add_text(
        S4,
        "Generalized Gauss–Newton G = (1/N) Σ Jᵀ∇²ℓ J vs the Hessian H = G + residual, both "
        "dense, for the part-1 models (first seed). Overlap = ‖U_Hᵀ U_G‖²_F / k of the top-k "
        "eigenvectors (1: same subspace).",
    )
    rows, overlaps, figs = [], {}, {}
    for k in cfg.ggn_ks:
        if k in models:
            model, split = models[k]
        else:
            split = _mixture(cfg, k, cfg.seeds[0])
            model = _train_gd(cfg, _model(cfg, cfg.dim, cfg.widths, k, cfg.seeds[0]), split).model
        data = split.train.tensors
        sh = _spectrum(cfg, model, data, vectors=True, top=k)
        sg = _spectrum(cfg, model, data, which="ggn", vectors=True, top=k)
        UH, UG = sh["vectors"][:, :k], sg["vectors"][:, :k]
        ov = float((UH.T @ UG).square().sum() / k)
        overlaps[k] = ov
        vh, vg = sh["values"][:k], sg["values"][:k]
        rel = float(((vh - vg).abs() / vh.abs().clamp_min(1e-300)).max())
        resid = ""
        if sh["exact"]:
            R = hessian(model, cfg.loss, data).to_dense() - ggn(model, cfg.loss, data).to_dense()
            resid = float(torch.linalg.matrix_norm(R, ord=2))
        rows.append(
            {
                "k": k,
                "P": sh["P"],
                "top-k of H": _fmt(vh),
                "top-k of G": _fmt(vg),
                "max rel. diff": rel,
                "overlap": ov,
                "‖H − G‖₂": resid,
                "λ_k(H)": float(vh[-1]),
            }
        )
        figs[k] = (sh["values"], sg["values"])
        run.add_scalar(S4, f"overlap k={k}", ov)
        tick(f"sagun2017 part 4: k={k}: overlap {ov:.3f}")
    run.add_table(S4, "H vs G", rows)
    kbig = max(figs)
    top = 2 * kbig + 2
    run.add_figure(
        S4,
        "part4_h_vs_g",
        plots.plot_spectra_comparison(
            {"Hessian H": figs[kbig][0][:top], "Gauss–Newton G": figs[kbig][1][:top]},
            top_k=top,
            title=f"Top eigenvalues of H and G (k={kbig})",
        ),
        "The outliers of H and of its Gauss–Newton part coincide; the residual term only "
        "adds a small, indefinite perturbation in the bulk.",
    )
    rels = [r["max rel. diff"] for r in rows]
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
    return {"overlap": overlaps, "max_rel_diff": dict(zip(cfg.ggn_ks, rels, strict=False))}


def _part5(cfg: Sagun2017Config, run: RunDir, tick: StepProgress) -> dict[str, Any]:
    k, seed = cfg.line_k, cfg.seeds[0]
    split = _mixture(
        cfg, k, seed, separation=cfg.line_separation, spread=cfg.line_spread,
        num_per_class=cfg.line_num_per_class,
    )  # fmt: skip
    init = _model(cfg, cfg.dim, cfg.widths, k, seed)
    small = fit(
        init, split, loss=cfg.loss, optimizer="sgd", lr=cfg.small_lr,
        batch_size=cfg.small_batch, epochs=cfg.small_epochs, seed=seed,
    )  # fmt: skip
    large = _finish(cfg, fit(
        init, split, loss=cfg.loss, optimizer="gd", lr=cfg.large_lr, steps=cfg.large_steps,
        grad_tol=cfg.grad_tol,
    ), split)  # fmt: skip
    if cfg.polish_steps > 0:  # continue the small-batch solution to a minimum of its basin
        small = _finish(cfg, fit(
            small.model, split, loss=cfg.loss, optimizer="gd", lr=cfg.large_lr,
            steps=cfg.polish_steps, grad_tol=cfg.grad_tol,
        ), split)  # fmt: skip
    gn = {"small": small.final_grad_norm, "large": large.final_grad_norm}
    run.add_text(
        S5,
        f"Same init and data (k = {k}, separation {cfg.line_separation}, spread "
        f"{cfg.line_spread}: overlapping classes, so the loss stays finite). Small batch: "
        f"SGD B = {cfg.small_batch}, lr {cfg.small_lr}, {cfg.small_epochs} epochs; large "
        f"batch: full-batch GD, lr {cfg.large_lr}, {cfg.large_steps} steps"
        + (f" (until ‖∇L‖ ≤ {cfg.grad_tol:g})" if cfg.grad_tol else "")
        + (
            f"; the small-batch solution then polished by full-batch GD ({cfg.polish_steps} "
            "steps at most) to a minimum of its basin"
            if cfg.polish_steps
            else ""
        )
        + ". Line w(t) = (1−t)·w_small + t·w_large.",
    )
    ws = torch.nn.utils.parameters_to_vector(small.model.parameters()).detach()
    wl = torch.nn.utils.parameters_to_vector(large.model.parameters()).detach()
    t0, t1, num = cfg.line_t
    ts = np.linspace(float(t0), float(t1), int(num))
    if not np.any(np.isclose(ts, 0.0)) or not np.any(np.isclose(ts, 1.0)):
        ts = np.unique(np.concatenate([ts, [0.0, 1.0]]))
    train_l, test_l, lmax = [], [], []
    for t in ts:
        m = _set_flat(small.model, (1 - t) * ws + t * wl)
        train_l.append(evaluate(m, split.train, loss=cfg.loss)[0])
        test_l.append(evaluate(m, split.test, loss=cfg.loss)[0])
        lmax.append(_lambda_max(cfg, m, split.train.tensors, seed))
        tick(f"sagun2017 part 5: t={t:.2f}", 1.0 / len(ts) * 3)
    train_l, test_l, lmax = map(np.asarray, (train_l, test_l, lmax))
    i0, i1 = int(np.argmin(np.abs(ts))), int(np.argmin(np.abs(ts - 1)))
    inside = np.zeros(ts.shape, dtype=bool)
    inside[i0 : i1 + 1] = True
    barrier = float(train_l[inside].max() - max(train_l[i0], train_l[i1]))
    barrier_test = float(test_l[inside].max() - max(test_l[i0], test_l[i1]))
    arrays = {"t": ts, "train_loss": train_l, "test_loss": test_l, "lambda_max": lmax}
    for name, arr in arrays.items():
        run.add_array(f"part5/{name}", arr)
    run.add_figure(
        S5,
        "part5_line",
        plots.plot_line_scan(
            ts,
            {"train loss": train_l, "test loss": test_l},
            secondary={"λ_max (train Hessian)": lmax},
            secondary_label="λ_max",
            endpoint_labels=(f"small batch B={cfg.small_batch}", "large batch (GD)"),
            title="Loss and sharpness between small- and large-batch solutions",
            log_y=True,
        ),
        "Train/test loss (left axis, log scale) and the top Hessian eigenvalue (right axis, "
        "dashed) on the straight line between the two solutions.",
    )
    run.add_table(
        S5,
        "endpoints",
        [
            {"solution": "small batch", "train loss": train_l[i0], "test loss": test_l[i0],
             "λ_max": lmax[i0], "‖∇L‖": gn["small"], "minimum": _is_min(cfg, gn["small"]),
             "train acc": small.final_train_accuracy, "test acc": small.final_test_accuracy},
            {"solution": "large batch", "train loss": train_l[i1], "test loss": test_l[i1],
             "λ_max": lmax[i1], "‖∇L‖": gn["large"], "minimum": _is_min(cfg, gn["large"]),
             "train acc": large.final_train_accuracy, "test acc": large.final_test_accuracy},
        ],
    )  # fmt: skip
    run.add_scalar(S5, "barrier (train)", barrier, unit="nats")
    run.add_scalar(S5, "barrier (test)", barrier_test, unit="nats")
    run.add_scalar(S5, "distance ‖w_large − w_small‖", float((wl - ws).norm()))
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
    return {
        "barrier": barrier,
        "barrier_test": barrier_test,
        "lambda_max_small": float(lmax[i0]),
        "lambda_max_large": float(lmax[i1]),
        "grad_norm": gn,
        "both_minima": both_min,
        "t": ts.tolist(),
        "train_loss": train_l.tolist(),
    }


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


def _leading(flags: Tensor) -> int:
    """How many leading entries of a boolean vector are true."""
    bad = (~flags).nonzero()
    return int(bad[0]) if bad.numel() else int(flags.numel())


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


# ---------------------------------------------------------------------------------------
# entry point


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
