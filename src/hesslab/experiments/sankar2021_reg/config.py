"""The sankar2021-reg / wsbound-reg configurations, section names and penalty kinds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hesslab.experiments._claims import Verdict

#: Measured wall time of the smoke size, one thread: 30-45 s on a quiet 2-core machine
#: (about 100 s when 5 people share the 2 cores).
SMOKE_SECONDS = 45.0
#: Wall time of the full size (5 seeds x 4 variants, m = 10): a full run here
#: (results/sankar2021-reg, resumed once) took 282 s CPU with one thread (40 min wall with
#: the 2 cores shared ~9 ways; 159 s in issue 19).
FULL_SECONDS = 280.0
WSBOUND_SMOKE_SECONDS = 50.0
#: Wall time of the full size (5 seeds, 3 variants, m = 10): a full run here
#: (results/wsbound-reg, resumed once) took 336 s CPU with one thread (39 min wall with the
#: 2 cores shared ~9 ways; 154 s in issue 19).
WSBOUND_FULL_SECONDS = 340.0

PAPER = (
    "Sankar, Khasbage, Vigneswaran, Balasubramanian (2021), A Deeper Look at the Hessian "
    "Eigenspectrum of Deep Neural Networks and its Applications to Regularization (AAAI)"
)
S_TRACE = "1. Hessian-trace regularization"
S_WS = "1. Wolkowicz–Styan bound regularization"


@dataclass(frozen=True)
class _PenaltyTrainingConfig:
    """The knobs the two penalty experiments share (LeNet on digits, SGD with a penalty).

    Attributes:
        seeds: seeds of the model initialisation, batch order and probes.
        epochs: training epochs.
        batch_size: minibatch size.
        lr: SGD learning rate.
        momentum: SGD momentum.
        milestones: epochs at which the lr is multiplied by ``lr_decay``.
        lr_decay: the factor at each milestone.
        gamma: ``γ``, weight of the penalty.
        num_probes: ``m``, probes per penalized step.
        distribution: ``"rademacher"`` or ``"gaussian"``.
        every: penalize every this many steps (paper's ``freq``).
        start_epoch: first epoch with the penalty.
        channels: LeNet convolution channels.
        hidden: LeNet hidden widths.
        trace_matvecs: Hessian-vector products of the final trace estimate.
        lanczos_tol: relative residual tolerance of the final ``λ_max``.
        data_seed: seed of the digits train/test split.
    """

    seeds: tuple[int, ...] = (0,)
    epochs: int = 25
    batch_size: int = 64
    lr: float = 0.02
    momentum: float = 0.9
    milestones: tuple[int, ...] = (12,)
    lr_decay: float = 0.1
    gamma: float = 3e-3
    num_probes: int = 4
    distribution: str = "rademacher"
    every: int = 2
    start_epoch: int = 12
    channels: tuple[int, int] = (6, 16)
    hidden: tuple[int, int] = (120, 84)
    trace_matvecs: int = 30
    lanczos_tol: float = 1e-3
    data_seed: int = 0


@dataclass(frozen=True)
class Sankar2021RegConfig(_PenaltyTrainingConfig):
    """Every knob of ``sankar2021-reg``. Build with :meth:`smoke` or :meth:`full`.

    Attributes:
        variants: ``"none"`` (no penalty), ``"full"`` (all parameters), ``"middle"``
            (paper's tensor rule), ``"middle-layers"`` (layer rule; on LeNet both rules
            pick conv2, fc1, fc2, so the two runs coincide: it is kept in the full size
            as a check of that).
        acc_tol: largest drop of the mean test accuracy (absolute) that counts as "does
            not hurt".
        the others: as in :class:`_PenaltyTrainingConfig` (seeds, epochs, batch_size, lr,
            momentum, milestones, lr_decay, gamma, num_probes, distribution, every,
            start_epoch, channels, hidden, trace_matvecs, lanczos_tol, data_seed).
    """

    variants: tuple[str, ...] = ("none", "full", "middle")
    acc_tol: float = 0.01

    @classmethod
    def smoke(cls) -> Sankar2021RegConfig:
        """One seed, three variants, ``m = 4`` probes (under a minute)."""
        return cls()

    @classmethod
    def full(cls) -> Sankar2021RegConfig:
        """Five seeds, four variants, ``m = 10`` probes, more products per measurement."""
        return cls(
            seeds=(0, 1, 2, 3, 4),
            variants=("none", "full", "middle", "middle-layers"),
            num_probes=10,
            trace_matvecs=60,
            lanczos_tol=1e-4,
        )


@dataclass(frozen=True)
class WSBoundRegConfig(_PenaltyTrainingConfig):
    """Every knob of ``wsbound-reg`` (same training as :class:`Sankar2021RegConfig`).

    Attributes:
        variants: ``"none"`` and ``"ws"`` (all parameters) and/or ``"ws-middle"``.
        gamma: ``γ`` of the bound penalty.
        eps: ``ε`` inside the square root of the bound.
        min_matvecs: most products for ``λ_min`` (Lanczos from the smallest end).
        the others: as in :class:`_PenaltyTrainingConfig`.
    """

    variants: tuple[str, ...] = ("none", "ws")
    eps: float = 1e-12
    min_matvecs: int = 150

    @classmethod
    def smoke(cls) -> WSBoundRegConfig:
        """One seed, with and without the bound penalty."""
        return cls()

    @classmethod
    def full(cls) -> WSBoundRegConfig:
        """Five seeds, the bound penalty on all parameters and on the middle tensors."""
        return cls(
            seeds=(0, 1, 2, 3, 4),
            variants=("none", "ws", "ws-middle"),
            num_probes=10,
            trace_matvecs=60,
            lanczos_tol=1e-4,
            min_matvecs=300,
        )


@dataclass(frozen=True)
class PenaltyKind:
    """What differs between the two penalty experiments (everything else is shared).

    Attributes:
        section: the report section.
        ws: measure ``λ_min`` and the WS bound too.
        keys: the summarised quantities, in table order.
        bars: bar-chart label -> quantity.
        bars_title: title of the bar chart.
        bars_caption: its caption.
        setup: ``setup(cfg) -> str``, the setup text.
        claims: ``claims(cfg, run_dir, rows, summary) -> {variant: {name: Verdict}}``.
        headline: ``headline(verdicts) -> dict``, the kind's own result entries.
        scalar_note: the ``note`` of every summary scalar (``""``: none).
        penalty_column: the summary table shows the seconds per penalty call.
    """

    section: str
    ws: bool
    keys: tuple[str, ...]
    bars: dict[str, str]
    bars_title: str
    bars_caption: str
    setup: Callable[[Any], str]
    claims: Callable[..., dict[str, dict[str, Verdict]]]
    headline: Callable[[dict[str, dict[str, Verdict]]], dict[str, Any]]
    scalar_note: str = ""
    penalty_column: bool = False
