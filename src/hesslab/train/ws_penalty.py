"""The Wolkowicz–Styan bound penalty ("HSR"; see :mod:`hesslab.train.regularizers`)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from hesslab.errors import ConfigurationError
from hesslab.train.penalty_selection import Selection
from hesslab.train.probe_penalty import ProbePenalty

__all__ = ["WSBoundPenalty"]


class WSBoundPenalty(ProbePenalty):
    r"""``γ · U``: the Wolkowicz–Styan upper bound on ``λ_max(H_B)``, differentiated.

    With ``P`` selected parameters, ``t₁ = (1/K) Σ vᵢᵀ H vᵢ ≈ tr H`` and
    ``t₂ = (1/K) Σ ‖H vᵢ‖² ≈ tr H²`` from the same probes,

        ``μ = t₁ / P``,  ``s² = t₂ / P − μ²``,  ``U = μ + √(max(s², 0) + ε) · √(P − 1)``,

    and ``λ_max(H) ≤ U`` for the exact traces (Wolkowicz & Styan, 1980). ``ε``
    (``eps``) keeps the square root differentiable at ``s² = 0``. Descending ``U``
    (θ ← θ − η(∇L + γ∇U), the "HSR" regularization, docs/PAPERS.md §4) lowers both the mean
    and the spread of the spectrum, hence ``λ_max`` and ``λ_max − λ_min``. ``t₁`` and
    ``t₂`` are unbiased; ``U`` is a nonlinear function of them and is consistent (exact
    as ``K → ∞``, or with the probes ``√P · I``).

    Args:
        params: as for :class:`HessianTracePenalty`.
        num_probes: as for :class:`HessianTracePenalty`.
        eps: ``ε`` inside the square root.
        **kwargs: ``gamma``, ``distribution``, ``every``, ``start_step``, ``selection``,
            ``probes``, ``seed``, ``generator``, ``keep_history``: as for
            :class:`HessianTracePenalty`.

    Attributes:
        last_value: last bound ``U`` (unscaled); see also :attr:`history` (with ``t₁``,
            ``t₂``).

    References:
        Wolkowicz, Styan (1980), "Bounds for eigenvalues using traces", Linear Algebra
        Appl. 29. docs/PAPERS.md §4 (HSR regularization).
    """

    _needs_sq = True

    def __init__(
        self, params: Selection = None, num_probes: int = 10, *, eps: float = 1e-12, **kwargs: Any
    ) -> None:
        super().__init__(params, num_probes, **kwargs)
        if not (eps >= 0 and math.isfinite(eps)):
            raise ConfigurationError(f"eps must be a finite non-negative number, got {eps}.")
        self.eps = float(eps)

    def _combine(self, tr: Tensor, tr_sq: Tensor | None, P: int) -> Tensor:
        assert tr_sq is not None
        mu = tr / P
        s2 = tr_sq / P - mu * mu
        return mu + torch.sqrt(s2.clamp_min(0) + self.eps) * math.sqrt(max(P - 1, 0))
