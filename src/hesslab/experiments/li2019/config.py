"""Li et al. (2019): the config, section names and small shared helpers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Measured wall time of the smoke size, one thread: 20 s on a lightly loaded 2-core
#: machine (45-59 s when shared with other jobs).
SMOKE_SECONDS = 20.0
#: Wall time of the full size: a full run here (results/li2019) took 307 s CPU with one
#: thread (755 s wall with the 2 cores shared; 918 MiB peak).
FULL_SECONDS = 310.0

S1 = "1. Overlap of the top subspaces of H and M_B"
S2 = "2. Predicted vs actual one-step loss change"
S3 = "3. Many small nets (vmap over seeds)"
S4 = "4. Scale-invariant trace under rescaling"


@dataclass(frozen=True)
class Li2019Config:
    """Every knob of the reproduction. Build with :meth:`smoke` or :meth:`full`.

    Attributes:
        seed: seed of data, initialisation, minibatches and probes.
        classes: classes of the Gaussian mixture.
        dim: input dimension.
        per_class: points per class before the 50% train/test split.
        separation: distance between class means (spread 1).
        widths: hidden widths of the ReLU MLP of parts 1, 2 and 4.
        noise_fractions: random-label fractions.
        batch_sizes: SGD batch sizes ``B`` (training and ``M_B``).
        lr: SGD learning rate.
        steps: SGD steps per run.
        measure_every: steps between overlap measurements.
        top_k: ``k`` of the top subspaces.
        eig_tol: Lanczos tolerance of :func:`hesslab.eigenpairs`.
        pred_lr_factors: ``c`` of the step sizes ``η = c / λ_max(H)`` of part 2.
        pred_samples: sampled minibatches ``K`` per step size.
        pred_probes: Hutchinson probes for the stochastic ``Tr(H M_B)``.
        adam_eps: ``ε`` of the Adam-like preconditioner.
        pred_rel_tol: relative tolerance of the "prediction matches" claim at the
            smallest ``c``.
        repeats: ``R`` tiny nets per label-noise fraction in part 3.
        repeat_dim: input dimension of the tiny nets' mixture.
        repeat_classes: classes of the tiny nets' mixture.
        repeat_per_class: points per class (before the split).
        repeat_width: hidden width of the tiny nets.
        repeat_noise_fractions: label-noise fractions of part 3 (one band each).
        repeat_batch: SGD batch size of part 3 (and its ``M_B``).
        repeat_lr: SGD learning rate of part 3.
        repeat_steps: SGD steps of part 3.
        repeat_measure: number of measurements in part 3 (plus the start).
        rescale_factors: ``a`` of the rescalings ``(a, 1/a, 1, ...)`` of part 4.
        overlap_factor: "overlap ≫ random" holds when the end overlap exceeds this multiple
            of ``k/P`` (and 0.5) in ≥ 2/3 of the runs (part 1) or nets (part 3).
        invariance_runs: part-1 models (own init and SGD seed each, at least 3) rescaled in part 4.
        dtype: ``"float64"`` (default) or ``"float32"``.
    """

    seed: int = 0
    classes: int = 4
    dim: int = 10
    per_class: int = 100
    separation: float = 3.0
    widths: tuple[int, ...] = (16,)
    noise_fractions: tuple[float, ...] = (0.0, 0.5)
    batch_sizes: tuple[int, ...] = (4, 32)
    lr: float = 0.1
    steps: int = 300
    measure_every: int = 50
    top_k: int = 4
    eig_tol: float = 1e-6
    pred_lr_factors: tuple[float, ...] = (0.01, 0.1, 0.5, 1.0)
    pred_samples: int = 4000
    pred_probes: int = 60
    adam_eps: float = 1e-8
    pred_rel_tol: float = 0.05
    repeats: int = 24
    repeat_dim: int = 5
    repeat_classes: int = 3
    repeat_per_class: int = 50
    repeat_width: int = 8
    repeat_noise_fractions: tuple[float, ...] = (0.0, 0.5)
    repeat_batch: int = 8
    repeat_lr: float = 0.1
    repeat_steps: int = 300
    repeat_measure: int = 6
    rescale_factors: tuple[float, ...] = (10.0, 0.1, 3.0)
    overlap_factor: float = 5.0
    invariance_runs: int = 3
    dtype: str = "float64"

    @classmethod
    def smoke(cls) -> Li2019Config:
        """2 noise fractions x 2 batch sizes, 300 steps; 2 x 24 tiny nets."""
        return cls()

    @classmethod
    def full(cls) -> Li2019Config:
        """3 noise fractions x 4 batch sizes, 2,000 steps, deeper MLP; 2 x 100 tiny nets."""
        return cls(
            per_class=200,
            widths=(32, 32),
            noise_fractions=(0.0, 0.2, 0.5),
            batch_sizes=(2, 8, 32, 128),
            steps=2000,
            measure_every=200,
            top_k=4,
            pred_samples=20000,
            pred_probes=200,
            repeats=100,
            repeat_steps=1500,
            repeat_measure=10,
        )


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))
