"""The wei2019 configuration, section names and small shared helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: Measured wall time of the smoke size, one thread, on a loaded 2-core machine (45-54 s
#: wall, about 20 s CPU).
SMOKE_SECONDS = 50.0
#: Wall time of the full size: a full run here (results/wei2019) took 103 s CPU with one
#: thread (985 s wall with the 2 cores shared ~9 ways); the toy part alone 132 s wall.
FULL_SECONDS = 110.0

S1 = "1. Toy degenerate valley"
S2 = "2. MLP on digits (non-realizable)"
S3 = "3. Injected noise covariance"

OPTIMIZERS = ("GD", "SGD", "isotropic", "H-shaped")


@dataclass(frozen=True)
class Wei2019Config:
    """Every knob of the reproduction. Build with :meth:`smoke` or :meth:`full`.

    Attributes:
        seed: seed of everything (toy runs, data, init, noise).
        toy_depths: depths ``d`` of the product valleys ``½(Πwᵢ − 1)²``.
        toy_runs: ``R`` independent runs per process (vectorised).
        toy_steps: steps per run.
        toy_lr: ``η`` of every toy process.
        toy_label_noise: ``s``, label-noise std (SGD) and H-shaped noise scale.
        toy_iso_std: ``σ`` of the isotropic noise (``"sgd"`` convention, ``C = σ² I``);
            ``None``: ``σ² = s² Tr H(w₀) / d``, the same total power as the SGD noise at the
            start.
        toy_record_every: steps between recorded points.
        mlp: run part 2.
        mlp_per_class: digits inputs per class (each used twice).
        mlp_target_noise: ``s`` of the antithetic target perturbation.
        mlp_widths: hidden widths.
        mlp_activation: hidden activation (smooth ``tanh`` keeps the Hessian continuous).
        mlp_train_steps: Adam steps to the minimum (then ``mlp_polish_steps`` of GD).
        mlp_polish_steps: full-batch GD steps at ``mlp_lr`` after Adam.
        mlp_lr: learning rate of all continued processes.
        mlp_batch: ``B`` of SGD and of the H-shaped noise.
        mlp_steps: continued steps per process.
        mlp_measure: number of measurements over the continued steps (plus the start).
        mlp_runs: independent continuations per process (noise seeds).
        mlp_logdet_rank: ``r`` of ``Σ_{i≤r} log λᵢ``.
        dense_max: largest ``P`` for the dense Hessian of part 3's cosine(H, C_B) (the
            tracked ``Tr H`` and logdet follow ``eigenpairs(method="auto")``).
        noise_draws: draws used to measure the injected covariance.
        z_holds: a change "holds" when it exceeds this many standard errors.
        dtype: ``"float64"`` (default) or ``"float32"``.
    """

    seed: int = 0
    toy_depths: tuple[int, ...] = (2,)
    toy_runs: int = 1000
    toy_steps: int = 2000
    toy_lr: float = 0.05
    toy_label_noise: float = 0.5
    toy_iso_std: float | None = None
    toy_record_every: int = 50
    mlp: bool = True
    mlp_per_class: int = 2
    mlp_target_noise: float = 0.5
    mlp_widths: tuple[int, ...] = (8,)
    mlp_activation: str = "tanh"
    mlp_train_steps: int = 1500
    mlp_polish_steps: int = 500
    mlp_lr: float = 0.5
    mlp_batch: int = 2
    mlp_steps: int = 300
    mlp_measure: int = 3
    mlp_runs: int = 1
    mlp_logdet_rank: int = 10
    dense_max: int = 2000
    noise_draws: int = 400
    z_holds: float = 3.0
    dtype: str = "float64"

    @classmethod
    def smoke(cls) -> Wei2019Config:
        """Toy depth 2 (1,000 runs x 2,000 steps) and a short MLP part (about 20 s CPU)."""
        return cls()

    @classmethod
    def full(cls) -> Wei2019Config:
        """Depths 2 and 3, 4,000 runs x 5,000 steps; MLP 64-16-10 on 30 inputs, 4 runs."""
        return cls(
            toy_depths=(2, 3),
            toy_runs=4000,
            toy_steps=5000,
            toy_record_every=100,
            mlp_per_class=3,
            mlp_widths=(16,),
            mlp_train_steps=3000,
            mlp_polish_steps=2000,
            mlp_batch=4,
            mlp_steps=3000,
            mlp_measure=10,
            mlp_runs=4,
            noise_draws=2000,
        )


# ---------------------------------------------------------------------------------------
# helpers


def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(int(seed))


def mean_se(x: Tensor) -> tuple[float, float]:
    """Mean of ``x`` and its standard error (0 for a single value)."""
    x = x.to(torch.float64)
    return float(x.mean()), float(x.std() / math.sqrt(x.numel())) if x.numel() > 1 else 0.0
