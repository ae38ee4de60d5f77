"""Second moments of stochastic gradients as linear operators.

With per-sample gradients ``g_i = grad l_i(theta)`` and ``gbar = (1/N) sum_i g_i = grad L``:

* ``kind="second_moment"``: ``M = (1/N) sum_i g_i g_i^T`` (the uncentred second moment of a
  one-point stochastic gradient; equals the empirical Fisher for likelihood losses).
* ``kind="covariance"``: ``C = M - gbar gbar^T``, the covariance of a one-point gradient.
* ``kind="minibatch"``: the second moment of a size-``B`` minibatch gradient,
  ``M_B = gbar gbar^T + C / B`` when drawn with replacement, or
  ``gbar gbar^T + C (N - B) / (B (N - 1))`` without replacement
  (Li et al., 2019, arXiv:1907.10732, study the relation of ``M_B`` to ``H``).

Per-sample gradients come from :func:`torch.func.vmap` over :func:`torch.func.grad`. When
``N * P`` is small enough they are computed once and cached as a dense ``[P, N]`` block.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.func import grad, vmap

from hesslab.errors import ConfigurationError
from hesslab.objective import Objective
from hesslab.operators.curvature import CurvatureOperator
from hesslab.validation import check_batch_loss, check_finite

__all__ = ["GradientMomentOperator", "gradient_moment", "per_sample_gradients"]


def per_sample_gradients(
    objective: Objective, batch: Any, *, chunk_size: int | None = None
) -> Tensor:
    """Per-sample gradients ``[P, N_b]`` of a prepared batch (columns are ``g_i``)."""
    in_dims = _in_dims(batch)

    def loss_i(theta: dict, sample: Any) -> Tensor:
        return objective.sample_loss(theta, sample)

    G = vmap(grad(loss_i), in_dims=(None, in_dims), chunk_size=chunk_size)(objective.theta, batch)
    return objective.space.flatten_block(G)


def _in_dims(batch: Any) -> Any:
    if isinstance(batch, Tensor):
        return 0
    if isinstance(batch, dict):
        return {k: _in_dims(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_in_dims(v) for v in batch)
    return None


class GradientMomentOperator(CurvatureOperator):
    """Second moment (or covariance) of stochastic gradients over the full data.

    Args:
        objective: the :class:`~hesslab.Objective`.
        kind: ``"second_moment"`` (default), ``"covariance"`` or ``"minibatch"``.
        batch_size: ``B`` for ``kind="minibatch"``.
        replacement: minibatches drawn with (default) or without replacement.
        cache: keep per-sample gradients in memory: ``"auto"`` when ``N * P <= 2e7``.
        chunk_size: samples per vectorised chunk when computing per-sample gradients.
        autocast: ``"bfloat16"`` or ``"float16"`` computes the per-sample gradients under
            :func:`torch.autocast` (float32 parameters only; the gradients and every
            product are float32).
    """

    def __init__(
        self,
        objective: Objective,
        *,
        kind: str = "second_moment",
        batch_size: int | None = None,
        replacement: bool = True,
        cache: bool | str = "auto",
        chunk_size: int | None = None,
        autocast: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(
            objective,
            autocast=autocast,
            kind=kind,
            batch_size=batch_size,
            replacement=replacement,
            cache=cache,
            chunk_size=chunk_size,
        )
        if kind not in ("second_moment", "covariance", "minibatch"):
            raise ConfigurationError(
                f"kind must be 'second_moment', 'covariance' or 'minibatch', got {kind!r}"
            )
        N = objective.num_data
        if kind == "minibatch":
            if batch_size is None or not 1 <= batch_size <= N:
                raise ConfigurationError(
                    f"kind='minibatch' needs batch_size between 1 and N={N}, got {batch_size}"
                )
        self.kind, self.batch_size, self.replacement = kind, batch_size, replacement
        if cache == "auto":
            cache = N * objective.space.size <= 2e7
        self.cache, self.chunk_size = bool(cache), chunk_size
        self._G: list[Tensor] | None = None
        self._checked: set[int] = set()
        self._mean: Tensor | None = None

    def _blocks(self):
        if self._G is not None:
            yield from self._G
            return
        blocks = []
        for i, (batch, _) in enumerate(self.objective.batches()):
            if i not in self._checked:  # targets are unreadable inside vmap: check them once
                check_batch_loss(self.objective, batch, i)
                self._checked.add(i)
            with self._autocast():
                G = per_sample_gradients(self.objective, batch, chunk_size=self.chunk_size)
            check_finite(G, "the per-sample gradients", batch_index=i)
            if self.cache:
                blocks.append(G)
            yield G
        if self.cache:
            self._G = blocks

    def mean_gradient(self) -> Tensor:
        """``gbar = (1/N) sum_i g_i``, the full-data gradient."""
        if self._mean is None:
            total = torch.zeros(self.shape[0], dtype=self.dtype, device=self.device)
            for G in self._blocks():
                total += G.sum(1)
            self._mean = total / self.objective.num_data
        return self._mean

    def _matmat(self, V: Tensor) -> Tensor:
        N = self.objective.num_data
        out = torch.zeros_like(V)
        for G in self._blocks():
            out += G @ (G.T @ V)
        out /= N
        if self.kind == "second_moment":
            return out
        g = self.mean_gradient()[:, None]
        cov = out - g @ (g.T @ V)
        if self.kind == "covariance":
            return cov
        B = self.batch_size
        factor = 1.0 / B if self.replacement else (N - B) / (B * (N - 1)) if N > 1 else 0.0
        return g @ (g.T @ V) + factor * cov


def gradient_moment(
    model_or_objective: Any,
    loss_fn: Any = None,
    data: Any = None,
    params: Any = None,
    *,
    kind: str = "second_moment",
    batch_size: int | None = None,
    replacement: bool = True,
    autocast: str | torch.dtype | None = None,
    **kw: Any,
) -> GradientMomentOperator:
    """The second moment of stochastic gradients as an operator (see the module docstring).

    Same calling convention as :func:`hesslab.hessian`.
    """
    from hesslab.operators.hessian import _objective

    return GradientMomentOperator(
        _objective(model_or_objective, loss_fn, data, params, kw),
        kind=kind,
        batch_size=batch_size,
        replacement=replacement,
        autocast=autocast,
    )
