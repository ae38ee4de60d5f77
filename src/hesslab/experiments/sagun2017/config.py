"""The sagun2017 configuration.

Every knob, the smoke / full / simplex sizes, wall times and the report section titles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: Measured wall time of :meth:`Sagun2017Config.smoke` with one CPU thread (three seeds).
SMOKE_SECONDS = 60.0
#: Wall time of :meth:`Sagun2017Config.full` (the authors' setup): a full run here
#: (results/sagun2017) took 68 s CPU with one thread (107 s wall with the 2 cores shared;
#: 533 MiB peak).
FULL_SECONDS = 70.0
#: Wall time of :meth:`Sagun2017Config.simplex` (``sagun2017-simplex``): a full run here
#: (results/sagun2017-simplex) took 121 s CPU with one thread (172 s wall on the shared 2
#: cores; 882 MiB peak).
SIMPLEX_FULL_SECONDS = 120.0

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
        """All parts, small.

        k = 3 and 5 over three seeds, dense Hessians (about a minute on 2 cores).
        """
        return cls()

    @classmethod
    def full(cls) -> Sagun2017Config:
        """The authors' setup (their public code).

        2-D blobs, 100 train / 100 test points,
        ReLU MLP [10, 5], init N(0, 0.1²), full-batch GD lr 0.1 until ‖∇L‖ ≤ 1e-4, exact
        Hessians; k = 2, 5, 10 over five seeds (they ran 50 repeats). GD is capped at
        5,000 steps and continued by full-batch L-BFGS (strong Wolfe) to ‖∇L‖ ≤ 1e-4; a
        run that still stops above 1e-4 is reported as not a minimum beside its
        spectrum (with the ReLU-kink distance that explains most such stops).
        """
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
        """The earlier full size, a variation of the authors' setup.

        10-D simplex mixtures,
        widths (20, 20), a fixed budget of 2,000 GD steps (registry name
        ``sagun2017-simplex``).
        """
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
