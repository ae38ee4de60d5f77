"""The machinery every probe-based curvature penalty shares (:class:`ProbePenalty`).

Selection, probes, the double-backprop Hessian-vector products and the records of
:class:`~hesslab.train.HessianTracePenalty` and :class:`~hesslab.train.WSBoundPenalty`;
a penalty family only says how it combines ``tr H_B`` and ``tr H_B²`` (``_combine``).
See :mod:`hesslab.train.regularizers` for the maths and the BatchNorm caveat.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from hesslab.errors import ConfigurationError, DataError, ParameterSelectionError
from hesslab.objective import derivative_context
from hesslab.train._norms import differentiable_batch_norm, fused_norm_nodes
from hesslab.train.fit import resolve_loss
from hesslab.train.penalty_selection import Selection, resolve_names

__all__ = ["LossFn", "PenaltyRecord", "ProbePenalty"]

LossFn = str | Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class PenaltyRecord:
    """One active call of a penalty.

    Attributes:
        step: the training step passed to the call.
        value: the unscaled estimate: ``tr H_B`` (trace penalty) or the bound ``U``
            (WS penalty), for the selected block.
        penalty: ``gamma * value``, the number added to the loss.
        stderr: standard error of the trace estimate over the probes (``0`` for one probe).
        trace: the estimate of ``tr H_B`` (mean of ``vᵢᵀ H_B vᵢ``).
        trace_sq: the estimate of ``tr H_B²`` (mean of ``‖H_B vᵢ‖²``; ``nan`` for the
            trace penalty, which does not form it).
        num_probes: ``K``.
        dimension: ``P``, the number of selected parameters.
        seconds: wall time of the call (forward, gradient and ``K`` Hessian products;
            the later ``backward()`` of the caller is not included).
    """

    step: int
    value: float
    penalty: float
    stderr: float
    trace: float
    trace_sq: float
    num_probes: int
    dimension: int
    seconds: float


def _draw(K: int, P: int, distribution: str, generator: torch.Generator, like: Tensor) -> Tensor:
    gdev = generator.device
    if distribution == "rademacher":
        V = torch.randint(0, 2, (K, P), generator=generator, device=gdev).to(like.dtype)
        V = V.mul_(2).sub_(1)
    else:
        V = torch.randn(K, P, generator=generator, device=gdev, dtype=like.dtype)
    return V.to(like.device)


class ProbePenalty:
    """Shared machinery: selection, probes, the double-backprop products, records."""

    #: whether ``‖Hv‖²`` is needed (the WS bound); the trace penalty skips it.
    _needs_sq = False

    def __init__(
        self,
        params: Selection = None,
        num_probes: int = 10,
        *,
        gamma: float = 1e-3,
        distribution: str = "rademacher",
        every: int = 1,
        start_step: int = 0,
        selection: Any = "all",
        probes: Tensor | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
        keep_history: bool = True,
    ) -> None:
        if int(num_probes) < 1:
            raise ConfigurationError(f"num_probes must be at least 1, got {num_probes}.")
        if distribution not in ("rademacher", "gaussian"):
            raise ConfigurationError(
                f"distribution must be 'rademacher' or 'gaussian', got {distribution!r}."
            )
        if int(every) < 1:
            raise ConfigurationError(f"every must be a positive number of steps, got {every}.")
        if int(start_step) < 0:
            raise ConfigurationError(f"start_step must be non-negative, got {start_step}.")
        if not math.isfinite(float(gamma)):
            raise ConfigurationError(f"gamma must be a finite number, got {gamma}.")
        if probes is not None and (not isinstance(probes, Tensor) or probes.ndim != 2):
            raise ConfigurationError(
                "probes must be a [K, P] tensor (one flat probe per row over the selected "
                "parameters, in model order) or None to draw fresh probes each call."
            )
        self.params = params
        self.num_probes = int(num_probes) if probes is None else int(probes.shape[0])
        self.gamma = float(gamma)
        self.distribution = distribution
        self.every = int(every)
        self.start_step = int(start_step)
        self.selection = selection
        self.probes = probes
        self.generator = generator if generator is not None else torch.Generator()
        if generator is None:
            self.generator.manual_seed(int(seed))
        self.keep_history = keep_history
        self.history: list[PenaltyRecord] = []
        self.last_value: float | None = None
        self.last_penalty: float | None = None
        self.last_seconds: float | None = None

    # ------------------------------------------------------------------ public API

    def active(self, step: int) -> bool:
        """Whether the penalty is on at ``step``.

        It is when ``step ≥ start_step`` and ``(step − start_step)`` is a multiple of ``every``.
        """
        return step >= self.start_step and (step - self.start_step) % self.every == 0

    def names(self, model: nn.Module) -> list[str]:
        """The names of the parameters the probes live on, in model order."""
        return resolve_names(model, self.params, self.selection)

    def __call__(
        self,
        model: nn.Module,
        batch: Sequence[Any],
        loss_fn: LossFn = "ce",
        step: int = 0,
        *,
        loss: Tensor | None = None,
    ) -> Tensor:
        """The penalty on this minibatch: a differentiable scalar to add to the loss.

        Args:
            model: the network being trained (its own parameters are used; the
                gradient of the result w.r.t. them is exact).
            batch: ``(inputs, targets)``.
            loss_fn: ``"ce"``, ``"mse"`` or ``loss_fn(outputs, targets) -> mean loss``.
            step: the training step (for ``every``/``start_step``).
            loss: the minibatch loss already computed by the loop with a graph
                (``loss_fn(model(x), y)``); reused instead of a second forward pass.

        Returns:
            ``gamma * estimate`` (a 0-dim tensor with a graph), or a zero tensor without a
            graph when the penalty is off at ``step``.
        """
        ref = next(iter(model.parameters()), None)
        if ref is None:
            raise ConfigurationError("the model has no parameters.")
        if not self.active(step):
            return torch.zeros((), device=ref.device, dtype=ref.dtype)
        t0 = time.perf_counter()
        names = self.names(model)
        named = dict(model.named_parameters())
        tensors = [named[n] for n in names]
        if loss is None:
            loss = self._own_forward(model, batch, loss_fn)
            est = self._estimate(loss, tensors, step)
        else:
            _check_third_derivative(loss)
            try:
                est = self._estimate(loss, tensors, step)
            except (RuntimeError, NotImplementedError) as e:
                if "not implemented" not in str(e) and "not support" not in str(e):
                    raise
                # the loop's loss went through a fused kernel without double backward
                # (scaled_dot_product_attention): one more forward under the math kernel
                loss = self._own_forward(model, batch, loss_fn)
                est = self._estimate(loss, tensors, step)
        return self._finish(est, step, t0)

    def evaluate_at(
        self,
        model: nn.Module,
        batch: Sequence[Any],
        loss_fn: LossFn,
        values: Mapping[str, Tensor],
        step: int = 0,
    ) -> Tensor:
        """The penalty as a function of parameter values (``torch.func.functional_call``).

        ``values`` maps parameter names to tensors (missing ones: the model's own); the
        result is differentiable w.r.t. them (used for ``torch.autograd.gradcheck``).
        The penalty is always evaluated (``every``/``start_step`` ignored) and nothing is
        recorded.
        """
        names = self.names(model)
        missing = [n for n in names if n not in values]
        if missing:
            raise ParameterSelectionError(
                f"values lack the selected parameters {missing}; pass a tensor for each."
            )
        loss = self._own_forward(model, batch, loss_fn, values)
        est = self._estimate(loss, [values[n] for n in names], step, record=False)
        return self.gamma * est["value"]

    # ------------------------------------------------------------------ internals

    def _own_forward(
        self,
        model: nn.Module,
        batch: Sequence[Any],
        loss_fn: LossFn,
        values: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        x, y = _unpack(batch)
        # copies of the buffers absorb any in-place update (BatchNorm running statistics)
        state = {n: b.detach().clone() for n, b in model.named_buffers()}
        state.update(values or {})
        # attention through a kernel with double backward, BatchNorm with a third derivative
        with derivative_context(), differentiable_batch_norm():
            out = functional_call(model, state, (x,)) if state else model(x)
        return resolve_loss(loss_fn)(out, y)

    def _probes(self, P: int, like: Tensor) -> Tensor:
        if self.probes is not None:
            if self.probes.shape[1] != P:
                raise ConfigurationError(
                    f"probes have {self.probes.shape[1]} columns but the selection has "
                    f"P = {P} parameters; pass a [K, {P}] tensor."
                )
            return self.probes.to(device=like.device, dtype=like.dtype)
        return _draw(self.num_probes, P, self.distribution, self.generator, like)

    def _estimate(
        self, loss: Tensor, tensors: list[Tensor], step: int, record: bool = True
    ) -> dict[str, Any]:
        if loss.ndim != 0:
            raise DataError(
                f"the loss must be a scalar (mean over the batch), got shape {tuple(loss.shape)}."
            )
        if not loss.requires_grad:
            raise ConfigurationError(
                "the loss has no graph: compute it with gradients enabled from the model's "
                "parameters (not under torch.no_grad())."
            )
        sizes = [t.numel() for t in tensors]
        P = sum(sizes)
        grads = torch.autograd.grad(loss, tensors, create_graph=True, allow_unused=True)
        grads = [
            torch.zeros_like(t) if g is None else g for g, t in zip(grads, tensors, strict=True)
        ]
        V = self._probes(P, tensors[0])
        quad, sq = [], []
        for v in V:
            parts = [p.view_as(t) for p, t in zip(v.split(sizes), tensors, strict=True)]
            gv = sum((g * p).sum() for g, p in zip(grads, parts, strict=True))
            if not gv.requires_grad:  # the loss is linear in the selection: H = 0
                hv = [torch.zeros_like(t) for t in tensors]
            else:
                hv = torch.autograd.grad(gv, tensors, create_graph=True, allow_unused=True)
                hv = [
                    torch.zeros_like(t) if h is None else h
                    for h, t in zip(hv, tensors, strict=True)
                ]
            quad.append(sum((h * p).sum() for h, p in zip(hv, parts, strict=True)))
            if self._needs_sq:
                sq.append(sum(h.square().sum() for h in hv))
        q = torch.stack([torch.as_tensor(a, device=V.device, dtype=V.dtype) for a in quad])
        tr = q.mean()
        tr_sq = torch.stack(sq).mean() if sq else None
        K = q.shape[0]
        stderr = float(q.detach().std() / math.sqrt(K)) if K > 1 else 0.0
        return {
            "value": self._combine(tr, tr_sq, P),
            "trace": tr,
            "trace_sq": tr_sq,
            "stderr": stderr,
            "P": P,
            "K": K,
        }

    def _combine(self, tr: Tensor, tr_sq: Tensor | None, P: int) -> Tensor:
        raise NotImplementedError

    def _finish(self, est: dict[str, Any], step: int, t0: float) -> Tensor:
        value = est["value"]
        out = self.gamma * value
        seconds = time.perf_counter() - t0
        rec = PenaltyRecord(
            step=int(step),
            value=float(value.detach()),
            penalty=float(out.detach()),
            stderr=est["stderr"],
            trace=float(est["trace"].detach()),
            trace_sq=float("nan") if est["trace_sq"] is None else float(est["trace_sq"].detach()),
            num_probes=est["K"],
            dimension=est["P"],
            seconds=seconds,
        )
        self.last_value, self.last_penalty, self.last_seconds = rec.value, rec.penalty, seconds
        if self.keep_history:
            self.history.append(rec)
        return out

    def series(self, key: str = "value") -> list[float]:
        """``key`` of every recorded call, e.g. ``penalty.series("seconds")``."""
        return [getattr(r, key) for r in self.history]


def _check_third_derivative(loss: Tensor) -> None:
    """Refuse a caller's loss whose graph holds a fused training-mode BatchNorm."""
    nodes = fused_norm_nodes(loss)
    if nodes:
        raise ConfigurationError(
            f"the loss passed as loss= went through torch's fused training-mode batch_norm "
            f"({nodes[0]}), whose third derivative (needed by the penalty's backward()) is "
            "wrong on torch 2.13 and missing on 2.14. Compute the loop's forward inside "
            "`with hesslab.train.differentiable_batch_norm():`, or call the penalty "
            "without loss= (it then runs its own forward that way)."
        )


def _unpack(batch: Sequence[Any]) -> tuple[Any, Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise DataError(
            "batch must be a pair (inputs, targets); pass loss= with your own loss for other "
            "batch formats."
        )
    return batch[0], batch[1]


# Short notebook-friendly reprs (key numbers, not the tensors): see hesslab.display.
from hesslab import display as _display  # noqa: E402

_display.attach(PenaltyRecord, _display.penalty_summary)
