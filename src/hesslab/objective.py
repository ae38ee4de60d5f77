"""The objective: the one place that knows the model, the loss and the data.

``L(theta) = (1/N) * sum_i l(f(x_i; theta), y_i)`` over all ``N`` data points, exactly,
whatever the batch sizes. Every curvature operator and every data pass in hesslab goes
through :meth:`Objective.batches`, which owns the data loop and its weights.

Reductions:
    * ``reduction="mean"`` (the default of PyTorch criteria and assumed for custom
      losses): a batch's loss is its mean over its ``N_b`` points, and batch ``b`` gets
      weight ``N_b / N``. For element-wise criteria (``MSELoss``) the batch mean runs over
      outputs too, so ``L`` is the mean over all points and output entries.
    * ``reduction="sum"``: a batch's loss is its sum; each batch gets weight ``1 / N``.
    The full-data objective is the mean over data points in both cases.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from hesslab import validation
from hesslab.errors import ConfigurationError, DataError, NonDeterminismError
from hesslab.params import ParamSpace, select_parameters

__all__ = ["BatchLoss", "Objective", "batch_loss"]

logger = logging.getLogger(__name__)

_INPUT_KEYS = ("x", "input", "inputs", "input_ids", "pixel_values", "data", "features")
_TARGET_KEYS = ("y", "target", "targets", "labels", "label")


class BatchLoss:
    """Marks a custom loss ``fn(model_fn, batch) -> scalar`` (the batch mean by default).

    ``model_fn(*args, **kwargs)`` calls the model at the objective's parameters; ``batch``
    is the batch as the data yields it (tuple, dict, ...), already on the right device.
    Use it for anything a ``criterion(outputs, targets)`` cannot express (HF-style dict
    batches, auxiliary losses, ...). A plain function whose first argument is named
    ``model_fn`` is recognised too.
    """

    def __init__(self, fn: Callable[[Callable[..., Any], Any], Tensor]) -> None:
        self.fn = fn

    def __call__(self, model_fn: Callable[..., Any], batch: Any) -> Tensor:
        return self.fn(model_fn, batch)


def batch_loss(fn: Callable[[Callable[..., Any], Any], Tensor]) -> BatchLoss:
    """Decorator form of :class:`BatchLoss`."""
    return BatchLoss(fn)


@dataclass(frozen=True)
class _LossSpec:
    kind: str  # "ce", "mse", "criterion" or "custom"
    reduction: str  # "mean" or "sum"
    fn: Callable[..., Tensor]


def _mse(reduction: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Mean-squared error written out: ``F.mse_loss``'s backward fails under forward-mode AD
    (PyTorch raises "ZeroTensors are immutable" in ``jvp(grad(...))``)."""

    def mse(outputs: Tensor, targets: Tensor) -> Tensor:
        sq = (outputs - targets).square()
        return sq.mean() if reduction == "mean" else sq.sum()

    return mse


def _resolve_loss(loss_fn: Any, reduction: str | None) -> _LossSpec:
    if reduction not in (None, "mean", "sum"):
        raise ConfigurationError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if isinstance(loss_fn, str):
        key = loss_fn.lower().replace("-", "_")
        red = reduction or "mean"
        if key in ("ce", "cross_entropy", "crossentropy", "nll"):
            return _LossSpec("ce", red, nn.CrossEntropyLoss(reduction=red))
        if key in ("mse", "l2", "squared"):
            return _LossSpec("mse", red, _mse(red))
        raise ConfigurationError(f"unknown loss {loss_fn!r}; use 'ce', 'mse' or a callable")
    if isinstance(loss_fn, BatchLoss):
        return _LossSpec("custom", reduction or "mean", loss_fn)
    if not callable(loss_fn):
        raise ConfigurationError(f"loss_fn must be callable or 'ce'/'mse', got {loss_fn!r}")
    red = reduction or getattr(loss_fn, "reduction", "mean")
    if red not in ("mean", "sum"):
        raise ConfigurationError(
            f"the criterion's reduction is {red!r}; hesslab needs 'mean' or 'sum' "
            "(pass reduction= to override)"
        )
    if isinstance(loss_fn, nn.CrossEntropyLoss):
        plain = (
            loss_fn.weight is None
            and loss_fn.label_smoothing == 0.0
            and getattr(loss_fn, "ignore_index", -100) == -100
        )
        return _LossSpec("ce" if plain else "criterion", red, loss_fn)
    if isinstance(loss_fn, nn.MSELoss):
        return _LossSpec("mse", red, _mse(red))
    if loss_fn is F.cross_entropy:
        return _LossSpec("ce", red, lambda o, y: F.cross_entropy(o, y, reduction=red))
    if loss_fn is F.mse_loss:
        return _LossSpec("mse", red, _mse(red))
    if not isinstance(loss_fn, nn.Module):
        try:
            first = next(iter(inspect.signature(loss_fn).parameters), None)
        except (TypeError, ValueError):
            first = None
        if first == "model_fn":
            return _LossSpec("custom", reduction or "mean", loss_fn)
    return _LossSpec("criterion", red, loss_fn)


def _is_tensor_batch(data: Any) -> bool:
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, Tensor) for t in data):
        return True
    return isinstance(data, Mapping) and data and all(isinstance(t, Tensor) for t in data.values())


def _tensors(batch: Any) -> list[Tensor]:
    if isinstance(batch, Tensor):
        return [batch]
    if isinstance(batch, Mapping):
        return [t for v in batch.values() for t in _tensors(v)]
    if isinstance(batch, (tuple, list)):
        return [t for v in batch for t in _tensors(v)]
    return []


def _map_tensors(batch: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(batch, Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        return type(batch)({k: _map_tensors(v, fn) for k, v in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(_map_tensors(v, fn) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(_map_tensors(v, fn) for v in batch)
    return batch


def _fingerprint(batch: Any) -> tuple:
    """Cheap content signature of a batch: shapes plus two position-weighted sums."""
    out = []
    for t in _tensors(batch):
        t = t.detach()
        flat = (t.flatten(1) if t.ndim > 1 else t.reshape(-1, 1)).to(torch.float64)
        w = torch.arange(1, flat.shape[0] + 1, dtype=torch.float64, device=flat.device)
        out.append((tuple(t.shape), float(flat.sum()), float((flat.sum(1) * w).sum())))
    return tuple(out)


class Objective:
    """A model, a loss and a data set: the full-data loss as a function of parameters.

    The caller's model is never mutated: the objective snapshots the selected parameters
    (and freezes the others and the buffers) at construction and evaluates the model with
    :func:`torch.func.functional_call`. ``.grad``, ``requires_grad`` and the ``training``
    flag of the caller's model stay as they were.

    Args:
        model: a ``torch.nn.Module`` (in the mode it should be evaluated in: normally
            ``model.eval()``; train-mode BatchNorm and dropout are refused, see below).
        loss_fn: ``"ce"``, ``"mse"``, a criterion ``loss_fn(outputs, targets)`` (e.g.
            ``nn.CrossEntropyLoss()``), or a custom ``loss_fn(model_fn, batch)``
            (:class:`BatchLoss` or a function whose first argument is named ``model_fn``).
            With ``"mse"``, integer class targets are one-hot encoded; floating targets
            must have the outputs' shape (``[N]`` for outputs ``[N, 1]`` is read as
            ``[N, 1]``; nothing is ever broadcast, see :func:`hesslab.validation.check_targets`).
        data: a ``DataLoader``, any re-iterable of batches (a list), or a single batch:
            a tuple ``(x, y)`` of tensors or a dict of tensors. Batches may be tuples or
            dicts; dict batches with a criterion use ``input_key``/``target_key``.
        params: which parameters the objective is a function of: ``None`` (all trainable
            parameters), names, glob patterns (``"layers.2.*"``), submodules, or a list.
        reduction: ``"mean"`` or ``"sum"``; ``None`` reads the criterion's ``reduction``
            (custom losses are assumed to return the batch mean).
        check_determinism: run the determinism check (train-mode BatchNorm, active
            dropout, nondeterministic forward, data that changes between passes).
        input_key, target_key: keys of dict batches for criterion losses (default: the
            first of ``x``/``input``/``inputs``/``input_ids``... and ``y``/``target``/
            ``labels``...).
        device: where batches are moved (default: the parameters' device).

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
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigurationError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.loss = _resolve_loss(loss_fn, reduction)
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
        self.theta: dict[str, Tensor] = {n: named[n].detach().clone() for n in names}
        self.frozen: dict[str, Tensor] = {
            n: p.detach().clone() for n, p in named.items() if n not in self.theta
        }
        self.frozen.update({n: b.detach().clone() for n, b in model.named_buffers()})
        self._data = self._normalize_data(data)
        self.check_determinism = check_determinism
        if check_determinism:
            self._check_model_modes()
        self._scan(check_determinism)
        validation.check_objective(self)
        if check_determinism:
            self._check_forward_determinism()

    # ------------------------------------------------------------------ data
    @staticmethod
    def _normalize_data(data: Any) -> Any:
        if _is_tensor_batch(data):
            return [data]
        if isinstance(data, Tensor):
            raise DataError("data is a single tensor; pass (inputs, targets) or a DataLoader")
        if not isinstance(data, Iterable):
            raise DataError(
                f"data must be a DataLoader, a list of batches or a batch (x, y); got "
                f"{type(data).__name__}"
            )
        if iter(data) is data:
            raise DataError(
                "data is a single-use iterator (e.g. a generator); hesslab passes over the "
                "data many times: pass a DataLoader or a list of batches"
            )
        return data

    def _prepare(self, batch: Any) -> Any:
        dtype = self.space.dtype

        def move(t: Tensor) -> Tensor:
            t = t.to(self.device, non_blocking=True)
            return t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t

        return _map_tensors(batch, move)

    def _batch_size(self, batch: Any) -> int:
        if isinstance(batch, Mapping):
            key = self._input_key(batch)
            ts = _tensors(batch[key])
        else:
            ts = _tensors(batch)
        if not ts or ts[0].ndim == 0:
            raise DataError(
                "cannot read the batch size: batches must hold tensors with a leading "
                f"batch dimension, got {type(batch).__name__}"
            )
        return int(ts[0].shape[0])

    def _scan(self, check: bool) -> None:
        sizes, prints = [], []
        for batch in self._data:
            validation.check_batch_finite(_tensors(batch), len(sizes))
            sizes.append(self._batch_size(batch))
            if check:
                prints.append(_fingerprint(batch))
        if not sizes or sum(sizes) == 0:
            raise DataError("the data yields no data points")
        if check and len(sizes) > 0 and not isinstance(self._data, list):
            second = [_fingerprint(b) for b in self._data]
            if second != prints:
                raise NonDeterminismError(
                    "the data changed between two passes (a shuffled DataLoader, random "
                    "augmentation or a sampler with state). Curvature operators need the same "
                    "data on every pass: use DataLoader(..., shuffle=False) without random "
                    "transforms, or pass check_determinism=False if this is intended"
                )
        self._sizes = tuple(sizes)
        self._prints = tuple(prints) if check else None
        self.num_data = int(sum(sizes))

    def batches(self) -> Iterator[tuple[Any, float]]:
        """Yield ``(batch, weight)`` so that ``L = sum_b weight_b * loss_b``.

        Batches are moved to the objective's device, floating tensors cast to its dtype.
        The weight is ``N_b / N`` for mean reduction and ``1 / N`` for sum reduction.
        Each pass checks that batch sizes match the first pass.
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
            if n == 0:
                continue
            w = n / self.num_data if self.loss.reduction == "mean" else 1.0 / self.num_data
            yield self._prepare(batch), w
        if count != len(self._sizes):
            raise NonDeterminismError(
                f"the data yielded {count} batches on this pass and {len(self._sizes)} on the "
                "first; it must be identical on every pass"
            )

    @property
    def num_batches(self) -> int:
        """Number of batches per pass."""
        return len(self._sizes)

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """Number of data points of each batch."""
        return self._sizes

    # --------------------------------------------------------------- checks
    def _check_model_modes(self) -> None:
        for name, m in self.model.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
                raise NonDeterminismError(
                    f"BatchNorm layer {name!r} is in train mode: its output depends on the "
                    "batch and it updates running statistics. Call model.eval() before "
                    "building the objective (or pass check_determinism=False to use batch "
                    "statistics anyway)"
                )
            if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
                raise NonDeterminismError(
                    f"dropout layer {name!r} is active (train mode, p={m.p}): the loss is "
                    "random. Call model.eval() before building the objective (or pass "
                    "check_determinism=False)"
                )

    def _check_forward_determinism(self) -> None:
        batch, _ = next(self.batches())
        with torch.no_grad():
            a = self.batch_loss(self.theta, batch)
            b = self.batch_loss(self.theta, batch)
        if not torch.equal(a, b):
            raise NonDeterminismError(
                f"two evaluations of the loss on the same batch at the same parameters differ "
                f"({float(a)!r} vs {float(b)!r}): the model is random (functional dropout, "
                "noise layers). Make the forward pass deterministic, or pass "
                "check_determinism=False"
            )

    # ------------------------------------------------------------ evaluation
    def _input_key(self, batch: Mapping) -> str:
        if self.input_key is not None:
            return self.input_key
        for k in _INPUT_KEYS:
            if k in batch:
                return k
        return next(iter(batch))

    def _split(self, batch: Any) -> tuple[Any, Any]:
        """Split a batch into model input and target (criterion losses only)."""
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
        """Model outputs at parameters ``theta`` (functional; the model is not touched)."""
        return functional_call(self.model, self.full_params(theta), (inputs,))

    def criterion(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The criterion on one batch (criterion losses only), with MSE one-hot targets."""
        targets = validation.check_targets(self.loss.kind, outputs, targets, self.loss.fn)
        if self.loss.kind == "mse" and not targets.is_floating_point() and outputs.ndim == 2:
            targets = F.one_hot(targets.long(), outputs.shape[1]).to(outputs.dtype)
        return self.loss.fn(outputs, targets)

    def batch_loss(self, theta: Mapping[str, Tensor], batch: Any) -> Tensor:
        """The loss of one prepared batch at ``theta``, with the loss's own reduction."""
        if self.loss.kind == "custom":
            full = self.full_params(theta)

            def model_fn(*args: Any, **kwargs: Any) -> Any:
                return functional_call(self.model, full, args, kwargs)

            return self.loss.fn(model_fn, batch)
        x, y = self._split(batch)
        return self.criterion(self.forward(theta, x), y)

    def sample_loss(self, theta: Mapping[str, Tensor], sample: Any) -> Tensor:
        """Loss of a single data point (a batch entry without its batch dimension).

        Used with :func:`torch.func.vmap` for per-sample gradients; ``L`` is the mean of
        these over the data for both reductions.
        """
        batch = _map_tensors(sample, lambda t: t.unsqueeze(0))
        return self.batch_loss(theta, batch)

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
