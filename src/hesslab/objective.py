"""The objective: the one place that knows the model, the loss and the data.

``L(theta) = sum_b total_b(theta) / sum_b count_b`` over all batches, exactly, whatever
the batch sizes (:mod:`hesslab.losses`): the mean over data points for per-point losses
(``(1/N) * sum_i l(f(x_i; theta), y_i)``), and the mean over *items* (non-ignored
targets, tokens) for cross-entropy, the language-model losses and custom losses that
return a :class:`~hesslab.LossValue`. Every curvature operator and every data pass in
hesslab goes through :meth:`Objective.batches`, which owns the data loop and its weights.

Reductions:
    * ``reduction="mean"`` (the default of PyTorch criteria and assumed for custom
      losses): per-point losses: a batch's loss is its mean over its ``N_b`` points, and
      batch ``b`` gets weight ``N_b / N``. For element-wise criteria (``MSELoss``) the batch
      mean runs over outputs too, so ``L`` is the mean over all points and output entries.
      Item-level losses: a batch's loss is its sum over items and gets weight
      ``1 / N_items``.
    * ``reduction="sum"``: a batch's loss is its sum; each batch gets weight ``1 / N``:
      the mean over data points of each point's summed loss.

Attention: every derivative pass (anything evaluated with autograd enabled or inside a
``torch.func`` transform) runs under :func:`derivative_context`, which selects PyTorch's
math kernel for ``F.scaled_dot_product_attention`` and turns off the fused fast paths of
``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer``: the fused CPU and CUDA kernels
have neither forward-mode AD nor double backward. Plain loss evaluations keep the fused
kernels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from hesslab import validation
from hesslab.batches import (
    batch_rows,
    batch_tensors,
    map_tensors,
    pin_batches,
)
from hesslab.errors import ConfigurationError, DataError, NonDeterminismError
from hesslab.losses import (
    BatchLoss,
    LossValue,
    batch_loss,
    ce_layout,
    ce_sum,
    lm_split,
    output_tensor,
    resolve_loss,
)
from hesslab.objective_checks import (
    batch_weights,
    check_forward_determinism,
    check_model_modes,
    normalize_data,
    scan_sizes,
)
from hesslab.params import ParamSpace, select_parameters

__all__ = ["BatchLoss", "LossValue", "Objective", "batch_loss", "derivative_context"]

logger = logging.getLogger(__name__)

_INPUT_KEYS = ("x", "input", "inputs", "input_ids", "pixel_values", "data", "features")
_TARGET_KEYS = ("y", "target", "targets", "labels", "label")


@contextlib.contextmanager
def derivative_context() -> Iterator[None]:
    """Run attention through kernels that support every derivative hesslab takes.

    Selects the math backend of ``F.scaled_dot_product_attention`` (the flash and
    memory-efficient kernels have no double backward, the fused CPU kernel no
    forward-mode AD either) and disables the fused fast paths of
    ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` (which have no
    derivatives at all). Both settings are restored on exit. The math kernel
    materialises the ``T x T`` attention scores of every head: memory
    ``O(batch * heads * T^2)`` per layer, which micro-batches bound.
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _differentiating() -> bool:
    """Autograd is recording, or a ``torch.func`` transform (grad, jvp, vmap) is active."""
    return torch.is_grad_enabled() or torch._C._functorch.peek_interpreter_stack() is not None


class Objective:
    """A model, a loss and a data set: the full-data loss as a function of parameters.

    The caller's model is never mutated: the objective snapshots the selected parameters
    (and freezes the others and the buffers) at construction and evaluates the model with
    :func:`torch.func.functional_call`. ``.grad``, ``requires_grad`` and the ``training``
    flag of the caller's model stay as they were.

    Args:
        model: a ``torch.nn.Module`` (in the mode it should be evaluated in: normally
            ``model.eval()``; train-mode BatchNorm and dropout are refused, see below).
        loss_fn: ``"ce"``, ``"mse"``, ``"causal_lm"``, ``"masked_lm"``, a criterion
            ``loss_fn(outputs, targets)`` (e.g. ``nn.CrossEntropyLoss(ignore_index=0)``), or
            a custom ``loss_fn(model_fn, batch)`` (:class:`BatchLoss` or a function whose
            first argument is named ``model_fn``) returning the batch mean or a
            :class:`LossValue` ``(total, count)``. With ``"mse"``, integer class targets are
            one-hot encoded; floating targets must have the outputs' shape (``[N]`` for
            outputs ``[N, 1]`` is read as ``[N, 1]``; nothing is ever broadcast, see
            :func:`hesslab.validation.check_targets`). Cross-entropy and the LM losses
            average over items (see :mod:`hesslab.losses`). Models may return Hugging Face
            outputs (``.logits``).
        data: a ``DataLoader``, any re-iterable of batches (a list), or a single batch:
            a tuple ``(x, y)`` of tensors or a dict of tensors. Batches may be tuples or
            dicts; dict batches with a criterion use ``input_key``/``target_key``.
        params: which parameters the objective is a function of: ``None`` (all trainable
            parameters), names, glob patterns (``"layers.2.*"``), submodules, or a list.
        reduction: ``"mean"`` or ``"sum"``; ``None`` reads the criterion's ``reduction``
            (custom losses are assumed to return the batch mean).
        check_determinism: run the determinism check (train-mode BatchNorm, active
            dropout, nondeterministic forward, data that changes between passes).
        input_key: key of the inputs in dict batches for criterion losses (default: the
            first of ``x``/``input``/``inputs``/``input_ids``...).
        target_key: key of the targets in dict batches for criterion losses (default: the
            first of ``y``/``target``/``labels``...).
        device: where batches are moved (default: the parameters' device).
        max_batch_size: split every batch into micro-batches of at most this many data
            points for every pass (products, gradients, losses), with exact weights, so
            that a product over a batch too large for memory (e.g. the ``T x T``
            attention scores of the math kernel) fits. ``None``: batches as given.
        pin_memory: copy in-memory batches once into pinned host memory so that their
            transfers to a CUDA ``device`` are asynchronous (``non_blocking``; see
            :func:`hesslab.batches.pin_batches`). ``None`` (default): pin lists of
            batches when ``device`` is CUDA; ``False``: never; ``True``: pin or raise.
            A ``DataLoader`` pins with ``DataLoader(..., pin_memory=True)``.

    Raises:
        NonDeterminismError: the determinism check failed (the message says how to fix).
        DataError: the data is empty, single-use or malformed, or the model fails on it.
        NonFiniteError: a parameter, buffer or data batch holds NaN/inf, or the first
            batch's loss or gradient does (later batches: at the first product or pass).
        TargetError: labels out of range or targets of the wrong shape for ``"ce"``/``"mse"``.
        NonDifferentiableError: the loss does not depend differentiably on the selected
            parameters (an ``argmax`` in the forward pass, ...).
        ParameterSelectionError: ``params`` is empty or matches nothing.

    The checks are described in :mod:`hesslab.validation`; they cost one pass over the
    parameters and the data and one forward and backward pass on the first batch.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Any,
        data: Any,
        params: Any = None,
        *,
        reduction: str | None = None,
        check_determinism: bool = True,
        input_key: str | None = None,
        target_key: str | None = None,
        device: torch.device | str | None = None,
        max_batch_size: int | None = None,
        pin_memory: bool | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigurationError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.loss = resolve_loss(loss_fn, reduction)
        self.input_key, self.target_key = input_key, target_key
        names = select_parameters(model, params)
        named = dict(model.named_parameters())
        first = named[names[0]]
        for n in names:
            p = named[n]
            if p.dtype != first.dtype or p.device != first.device:
                raise ConfigurationError(
                    f"selected parameters mix dtypes/devices ({names[0]}: {first.dtype} on "
                    f"{first.device}, {n}: {p.dtype} on {p.device}); convert the model with "
                    "model.to(dtype, device) first"
                )
            if not p.dtype.is_floating_point:
                raise ConfigurationError(f"parameter {n} is not floating point ({p.dtype})")
        self.space = ParamSpace(
            tuple(names), tuple(named[n].shape for n in names), first.dtype, first.device
        )
        self.device = validation.check_device(device) if device is not None else first.device
        if max_batch_size is not None and int(max_batch_size) < 1:
            raise ConfigurationError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.max_batch_size = None if max_batch_size is None else int(max_batch_size)
        self.theta: dict[str, Tensor] = {n: named[n].detach().clone() for n in names}
        self.frozen: dict[str, Tensor] = {
            n: p.detach().clone() for n, p in named.items() if n not in self.theta
        }
        self.frozen.update({n: b.detach().clone() for n, b in model.named_buffers()})
        self._data = pin_batches(normalize_data(data), self.device, pin_memory)
        self.check_determinism = check_determinism
        if check_determinism:
            check_model_modes(model)
        self._scan(check_determinism)
        validation.check_objective(self)
        if check_determinism:
            check_forward_determinism(self)

    # ------------------------------------------------------------------ data
    def _prepare(self, batch: Any) -> Any:
        dtype = self.space.dtype

        def move(t: Tensor) -> Tensor:
            t = t.to(self.device, non_blocking=True)
            return t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t

        return map_tensors(batch, move)

    def _batch_size(self, batch: Any) -> int:
        if isinstance(batch, Mapping):
            key = self._input_key(batch)
            ts = batch_tensors(batch[key])
        else:
            ts = batch_tensors(batch)
        if not ts or ts[0].ndim == 0:
            raise DataError(
                "cannot read the batch size: batches must hold tensors with a leading "
                f"batch dimension, got {type(batch).__name__}"
            )
        return int(ts[0].shape[0])

    def _scan(self, check: bool) -> None:
        """Batch sizes, item counts, batch weights and the data half of the determinism check.

        See :func:`hesslab.objective_checks.scan_sizes` (which reads the data at most once)
        and :func:`~hesslab.objective_checks.batch_weights`.
        """
        sizes, counts = scan_sizes(self._data, self.loss, self._batch_size, self._targets, check)
        self._sizes = tuple(sizes)
        self.num_data = int(sum(sizes))
        if self.loss.kind == "custom":
            counts = self._custom_counts()
        self.num_items, self._weights, self._items = batch_weights(self.loss, self._sizes, counts)

    def _targets(self, batch: Any) -> Any:
        return self._split(batch)[1]

    def _custom_counts(self) -> list[float]:
        """Item counts of a custom loss that returns a :class:`LossValue` (else ``[]``)."""
        count_fn = getattr(self.loss.fn, "count", None)
        it = iter(self._data)
        first = self._prepare(next(it))
        with torch.no_grad():
            value = self._call_custom(self.theta, first)
        if not isinstance(value, LossValue):
            return []
        self.loss = dataclasses.replace(self.loss, per_item=True)
        if count_fn is not None:
            return [float(count_fn(self._prepare(b))) for b in self._data]
        counts = [float(value.count)]
        with torch.no_grad():
            counts += [float(self._call_custom(self.theta, self._prepare(b)).count) for b in it]
        return counts

    def batches(self) -> Iterator[tuple[Any, float]]:
        """Yield ``(batch, weight)`` so that ``L = sum_b weight_b * loss_b``.

        Batches are moved to the objective's device, floating tensors cast to its dtype.
        The weight is ``N_b / N`` for per-point losses with mean reduction, ``1 / N_items``
        for item-level losses (cross-entropy, LM losses, :class:`LossValue`) and ``1 / N``
        for sum reduction. Each pass checks that batch sizes match the first pass.
        """
        count = 0
        for i, batch in enumerate(self._data):
            n = self._batch_size(batch)
            if i >= len(self._sizes) or n != self._sizes[i]:
                raise NonDeterminismError(
                    f"batch {i} has {n} points on this pass but differed on the first pass; "
                    "the data must be identical on every pass (no shuffling, no drop_last "
                    "with a changing sampler)"
                )
            count += 1
            if n == 0 or self._items[i] == 0:
                continue
            if self.max_batch_size is None or n <= self.max_batch_size:
                yield self._prepare(batch), self._weights[i]
                continue
            for a in range(0, n, self.max_batch_size):
                b = min(n, a + self.max_batch_size)
                part = map_tensors(batch, lambda t, a=a, b=b, n=n: batch_rows(t, a, b, n))
                yield self._prepare(part), self._micro_weight(i, b - a, n)
        if count != len(self._sizes):
            raise NonDeterminismError(
                f"the data yielded {count} batches on this pass and {len(self._sizes)} on the "
                "first; it must be identical on every pass"
            )

    def _micro_weight(self, i: int, rows: int, n: int) -> float:
        """Weight of ``rows`` of batch ``i``'s ``n`` points: batch means are scaled, sums not."""
        per_point_mean = not self.loss.per_item and self.loss.reduction == "mean"
        return self._weights[i] * rows / n if per_point_mean else self._weights[i]

    @property
    def num_batches(self) -> int:
        """Number of batches per pass."""
        return len(self._sizes)

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """Number of data points of each batch."""
        return self._sizes

    # ------------------------------------------------------------ evaluation
    def _input_key(self, batch: Mapping) -> str:
        if self.input_key is not None:
            return self.input_key
        for k in _INPUT_KEYS:
            if k in batch:
                return k
        return next(iter(batch))

    def _split(self, batch: Any) -> tuple[Any, Any]:
        """Split a batch into model input and target (criterion and LM losses only)."""
        if self.loss.kind in ("causal_lm", "masked_lm"):
            return lm_split(self.loss, batch)
        if isinstance(batch, Mapping):
            tkey = self.target_key or next((k for k in _TARGET_KEYS if k in batch), None)
            if tkey is None:
                raise DataError(
                    f"dict batch with keys {list(batch)} has no target key; pass target_key= "
                    "or use a custom loss loss_fn(model_fn, batch)"
                )
            return batch[self._input_key(batch)], batch[tkey]
        if isinstance(batch, (tuple, list)) and len(batch) >= 2:
            return batch[0], batch[1]
        raise DataError(
            f"a criterion loss needs batches (inputs, targets); got {type(batch).__name__}. "
            "Use a custom loss loss_fn(model_fn, batch) for other formats"
        )

    def full_params(self, theta: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The selected parameters ``theta`` merged with the frozen ones and the buffers."""
        return {**self.frozen, **theta}

    def forward(self, theta: Mapping[str, Tensor], inputs: Any) -> Tensor:
        """Model outputs at parameters ``theta`` (functional; the model is not touched).

        Dict inputs (language-model batches) are passed as keyword arguments; a Hugging
        Face output object gives its ``logits``.
        """
        with derivative_context() if _differentiating() else contextlib.nullcontext():
            if isinstance(inputs, Mapping):
                out = functional_call(self.model, self.full_params(theta), (), dict(inputs))
            else:
                out = functional_call(self.model, self.full_params(theta), (inputs,))
        return output_tensor(out)

    def criterion(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The loss of one batch from its outputs (criterion and LM losses).

        Cross-entropy kinds return the batch's *sum* over items (the batch weights
        normalise); others the criterion's own reduction. MSE one-hot encodes integer
        targets.
        """
        if self.loss.is_ce:
            logits, _ = ce_layout(self.loss, outputs, targets)  # checks the shapes
            validation.check_labels(targets, logits.shape[-1], self.loss.ignore_index)
            return ce_sum(self.loss, outputs, targets)
        targets = validation.check_targets(self.loss.kind, outputs, targets, self.loss.fn)
        if self.loss.kind == "mse" and not targets.is_floating_point() and outputs.ndim == 2:
            classes = torch.arange(outputs.shape[1], device=targets.device)
            targets = (targets.long()[:, None] == classes).to(outputs.dtype)  # vmap-safe one-hot
        return self.loss.fn(outputs, targets)

    def _call_custom(self, theta: Mapping[str, Tensor], batch: Any) -> Any:
        full = self.full_params(theta)

        def model_fn(*args: Any, **kwargs: Any) -> Any:
            return functional_call(self.model, full, args, kwargs)

        with derivative_context() if _differentiating() else contextlib.nullcontext():
            return self.loss.fn(model_fn, batch)

    def batch_loss(self, theta: Mapping[str, Tensor], batch: Any) -> Tensor:
        """A prepared batch's loss at ``theta``: ``L = sum_b w_b * batch_loss_b``.

        The batch mean for per-point losses with mean reduction, the sum over its items
        (points, or tokens) otherwise; ``w_b`` from :meth:`batches`.
        """
        if self.loss.kind == "custom":
            value = self._call_custom(theta, batch)
            return value.total if isinstance(value, LossValue) else value
        x, y = self._split(batch)
        return self.criterion(self.forward(theta, x), y)

    def sample_loss(self, theta: Mapping[str, Tensor], sample: Any) -> Tensor:
        """Loss ``l_i`` of a single data point (a batch entry without its batch dimension).

        Used with :func:`torch.func.vmap` for per-sample gradients; ``L`` is the mean of
        these over the data points for every loss: for item-level losses
        ``l_i = (N / N_items) * total_i``, the point's summed item losses relative to the
        mean number of items per point (for a language model a sample is a sequence).
        """
        batch = map_tensors(sample, lambda t: t.unsqueeze(0))
        loss = self.batch_loss(theta, batch)
        if self.loss.per_item and self.loss.reduction == "mean":
            return loss * (self.num_data / self.num_items)
        return loss

    def value(self, theta: Mapping[str, Tensor] | None = None) -> float:
        """The full-data loss ``L(theta)`` (default: at the objective's parameters)."""
        theta = self.theta if theta is None else theta
        total = 0.0
        with torch.no_grad():
            for i, (batch, w) in enumerate(self.batches()):
                loss = self.batch_loss(theta, batch)
                validation.check_finite(loss, "the loss", batch_index=i)
                total += w * float(loss)
        return total

    def gradient(self, theta: Mapping[str, Tensor] | None = None) -> Tensor:
        """The full-data gradient ``grad L(theta)`` as a flat ``[P]`` vector."""
        theta = self.theta if theta is None else theta
        g = torch.zeros(self.space.size, dtype=self.space.dtype, device=self.space.device)
        for i, (batch, w) in enumerate(self.batches()):
            leaves = {n: t.detach().requires_grad_(True) for n, t in theta.items()}
            loss = self.batch_loss(leaves, batch)
            grads = torch.autograd.grad(loss, [leaves[n] for n in self.space.names])
            g += w * self.space.flatten(grads)
            validation.check_finite(g, "the gradient (summed up to this batch)", batch_index=i)
        return g

    # ------------------------------------------------------------- variants
    def _derive(self, theta: dict[str, Tensor], space: ParamSpace, frozen: dict) -> Objective:
        new = object.__new__(Objective)
        new.__dict__.update(self.__dict__)
        new.theta, new.space, new.frozen = theta, space, frozen
        return new

    def at(self, theta: Tensor | Mapping[str, Tensor]) -> Objective:
        """The same objective at other values of the selected parameters.

        Args:
            theta: a flat ``[P]`` vector or a ``{name: tensor}`` dict.
        """
        if isinstance(theta, Tensor):
            if theta.shape != (self.space.size,):
                raise ConfigurationError(
                    f"expected a flat parameter vector of length {self.space.size}, got "
                    f"{tuple(theta.shape)}"
                )
            new = {n: t.detach().clone() for n, t in self.space.unflatten(theta).items()}
        else:
            missing = set(self.space.names) - set(theta)
            if missing:
                raise ConfigurationError(f"theta lacks parameters {sorted(missing)}")
            new = {n: theta[n].detach().clone() for n in self.space.names}
        return self._derive(new, self.space, self.frozen)

    def restrict(self, params: Any) -> Objective:
        """The objective as a function of a subset of the selected parameters only.

        The others are frozen at their current values, so curvature operators of the
        restricted objective are the diagonal blocks ``H[block, block]`` of the full ones.
        """
        names = select_parameters(self.model, params)
        outside = [n for n in names if n not in self.theta]
        if outside:
            raise ConfigurationError(
                f"{outside} are not among this objective's parameters {list(self.space.names)}"
            )
        idx = {n: i for i, n in enumerate(self.space.names)}
        space = ParamSpace(
            tuple(names),
            tuple(self.space.shapes[idx[n]] for n in names),
            self.space.dtype,
            self.space.device,
        )
        theta = {n: self.theta[n] for n in names}
        frozen = {**self.frozen, **{n: t for n, t in self.theta.items() if n not in theta}}
        return self._derive(theta, space, frozen)

    def flat_params(self) -> Tensor:
        """The selected parameters as a flat ``[P]`` vector."""
        return self.space.flatten(self.theta)

    def __repr__(self) -> str:
        return (
            f"Objective(P={self.space.size}, N={self.num_data}, batches={self.num_batches}, "
            f"loss={self.loss.kind}/{self.loss.reduction}, dtype={self.space.dtype})"
        )
