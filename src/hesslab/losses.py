"""Losses of the objective: what a batch contributes and how batches are weighted.

Every loss hesslab knows reduces to one rule: the full-data objective is

``L = (sum_b total_b) / (sum_b count_b)``

where ``total_b`` is the batch's loss summed over its *items* and ``count_b`` the batch's
number (or total weight) of items. What an item is depends on the loss:

* per-point losses (``"mse"``, criteria, custom losses returning the batch mean): an item
  is a data point; a batch's mean is weighted ``N_b / N`` (``reduction="mean"``) or its
  sum ``1 / N`` (``reduction="sum"``);
* cross-entropy (``"ce"``, ``nn.CrossEntropyLoss`` with any ``ignore_index``, class
  ``weight`` or ``label_smoothing``): an item is a non-ignored target, weighted by its
  class weight, so ``L`` is exactly what PyTorch's ``reduction="mean"`` returns on the
  whole data set at once — for images (``[B, C]``), segmentation maps
  (``[B, C, d1, ...]``) and sequences (``[B, T, V]``) alike;
* language-model losses (``"causal_lm"``: next-token cross-entropy, labels shifted by one;
  ``"masked_lm"``: cross-entropy at labelled positions): an item is a token with a label
  other than ``-100`` (and ``attention_mask == 1``);
* custom losses that return a :class:`LossValue` ``(total, count)``: items as the loss
  says.

With ``reduction="sum"`` an item-level loss becomes ``L = (1/N) sum_b total_b``: the mean
over data points of each point's summed loss.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hesslab.errors import ConfigurationError, DataError, TargetError

__all__ = ["LM_LOSSES", "BatchLoss", "LossSpec", "LossValue", "batch_loss", "resolve_loss"]

LM_LOSSES = ("causal_lm", "masked_lm")
IGNORE_INDEX = -100


class LossValue(NamedTuple):
    """A batch's loss as ``(total, count)``: summed over its items, and how many there are.

    Return it from a custom loss ``fn(model_fn, batch)`` to make the objective the mean over
    items (tokens, pixels, masked positions) across all batches,
    ``L = sum_b total_b / sum_b count_b``, instead of the mean over data points.
    ``count`` may be a float (e.g. a sum of item weights); it must not depend on the
    parameters. Example for a Hugging Face causal LM::

        def lm_loss(model_fn, batch):
            logits = model_fn(input_ids=batch["input_ids"]).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            total = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")
            return hesslab.LossValue(total, (labels != -100).sum())
    """

    total: Tensor
    count: Tensor | float


class BatchLoss:
    """Marks a custom loss ``fn(model_fn, batch)`` returning a scalar or a :class:`LossValue`.

    ``model_fn(*args, **kwargs)`` calls the model at the objective's parameters; ``batch``
    is the batch as the data yields it (tuple, dict, ...), already on the right device.
    A scalar is taken as the batch *mean* over data points (``reduction="sum"``: the
    batch sum); a :class:`LossValue` makes the objective the mean over items.
    A plain function whose first argument is named ``model_fn`` is recognised too.

    Args:
        fn: the loss.
        count: optional ``count(batch) -> number of items`` for losses returning a
            :class:`LossValue`: lets the objective weight batches without evaluating the
            model on every batch at construction (which it does otherwise, once).
    """

    def __init__(
        self,
        fn: Callable[[Callable[..., Any], Any], Tensor | LossValue],
        *,
        count: Callable[[Any], Any] | None = None,
    ) -> None:
        self.fn = fn
        self.count = count

    def __call__(self, model_fn: Callable[..., Any], batch: Any) -> Tensor | LossValue:
        """The loss of one ``batch`` under ``model_fn``: ``fn(model_fn, batch)``."""
        return self.fn(model_fn, batch)


def batch_loss(fn: Callable[[Callable[..., Any], Any], Tensor]) -> BatchLoss:
    """Decorator form of :class:`BatchLoss`."""
    return BatchLoss(fn)


@dataclass(frozen=True)
class LossSpec:
    """How the objective evaluates and weights a loss (see the module docstring).

    Attributes:
        kind: ``"ce"``, ``"mse"``, ``"criterion"``, ``"custom"``, ``"causal_lm"`` or
            ``"masked_lm"``.
        reduction: ``"mean"`` or ``"sum"`` (what the full-data objective averages over).
        fn: criterion kinds: ``fn(outputs, targets)``; custom: ``fn(model_fn, batch)``.
        per_item: the batch loss is a sum over items, weighted by item counts.
        weight: class weights of cross-entropy kinds (``None``: all ones).
        ignore_index: target value that is not an item (cross-entropy kinds).
        label_smoothing: cross-entropy label smoothing.
    """

    kind: str
    reduction: str
    fn: Callable[..., Any]
    per_item: bool = False
    weight: Tensor | None = None
    ignore_index: int = IGNORE_INDEX
    label_smoothing: float = 0.0

    @property
    def is_ce(self) -> bool:
        """Cross-entropy over class logits (``"ce"`` and the language-model losses)."""
        return self.kind in ("ce", *LM_LOSSES)

    def __repr__(self) -> str:  # used in the auto mode's memo key: no tensor contents
        w = None if self.weight is None else tuple(self.weight.shape)
        return (
            f"LossSpec({self.kind}, {self.reduction}, per_item={self.per_item}, weight={w}, "
            f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}, "
            f"fn={getattr(self.fn, '__qualname__', type(self.fn).__qualname__)})"
        )


# --------------------------------------------------------------------------- resolving
def _mse(reduction: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Mean-squared error written out.

    ``F.mse_loss``'s backward fails under forward-mode AD (PyTorch raises "ZeroTensors are
    immutable" in ``jvp(grad(...))``).
    """

    def mse(outputs: Tensor, targets: Tensor) -> Tensor:
        sq = (outputs - targets).square()
        return sq.mean() if reduction == "mean" else sq.sum()

    return mse


def _ce_spec(kind: str, red: str, crit: nn.CrossEntropyLoss | None = None) -> LossSpec:
    weight = None if crit is None else crit.weight
    ignore = IGNORE_INDEX if crit is None else int(crit.ignore_index)
    smoothing = 0.0 if crit is None else float(crit.label_smoothing)
    return LossSpec(kind, red, ce_sum, True, weight, ignore, smoothing)


def _named(loss_fn: str, red: str) -> LossSpec:
    key = loss_fn.lower().replace("-", "_")
    if key in ("ce", "cross_entropy", "crossentropy", "nll"):
        return _ce_spec("ce", red)
    if key in ("causal_lm", "lm", "clm", "next_token"):
        return _ce_spec("causal_lm", red)
    if key in ("masked_lm", "mlm"):
        return _ce_spec("masked_lm", red)
    if key in ("mse", "l2", "squared"):
        return LossSpec("mse", red, _mse(red))
    raise ConfigurationError(
        f"unknown loss {loss_fn!r}; use 'ce', 'mse', 'causal_lm', 'masked_lm' or a callable"
    )


def resolve_loss(loss_fn: Any, reduction: str | None) -> LossSpec:
    """The :class:`LossSpec` of a loss given by name, criterion or custom function."""
    if reduction not in (None, "mean", "sum"):
        raise ConfigurationError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if isinstance(loss_fn, str):
        return _named(loss_fn, reduction or "mean")
    if isinstance(loss_fn, BatchLoss):
        return LossSpec("custom", reduction or "mean", loss_fn)
    if not callable(loss_fn):
        raise ConfigurationError(
            f"loss_fn must be callable or 'ce'/'mse'/'causal_lm'/'masked_lm', got {loss_fn!r}"
        )
    red = reduction or getattr(loss_fn, "reduction", "mean")
    if red not in ("mean", "sum"):
        raise ConfigurationError(
            f"the criterion's reduction is {red!r}; hesslab needs 'mean' or 'sum' "
            "(pass reduction= to override)"
        )
    if isinstance(loss_fn, nn.CrossEntropyLoss):
        return _ce_spec("ce", red, loss_fn)
    if loss_fn is F.cross_entropy:
        return _ce_spec("ce", red)
    if isinstance(loss_fn, nn.MSELoss) or loss_fn is F.mse_loss:
        return LossSpec("mse", red, _mse(red))
    if not isinstance(loss_fn, nn.Module):
        try:
            first = next(iter(inspect.signature(loss_fn).parameters), None)
        except (TypeError, ValueError):
            first = None
        if first == "model_fn":
            return LossSpec("custom", reduction or "mean", loss_fn)
    return LossSpec("criterion", red, loss_fn)


# ----------------------------------------------------------------------- cross-entropy
def ce_layout(spec: LossSpec, outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Logits with the class dimension last, and the targets aligned with them.

    ``[B, C]`` with ``[B]`` (or soft targets ``[B, C]``); ``[..., V]`` with ``[...]``
    (sequences, Hugging Face's layout); ``[B, C, d1, ...]`` with ``[B, d1, ...]``
    (PyTorch's layout, e.g. segmentation). When both of the last two fit (``[B, T, T]``
    with ``[B, T]``), the class dimension is taken to be the last. For ``"causal_lm"``
    the logits of position ``t`` are paired with the label of position ``t + 1``.
    """
    if spec.kind == "causal_lm":
        if outputs.ndim != 3 or targets.shape != outputs.shape[:2]:
            raise TargetError(
                f"'causal_lm' needs logits [B, T, V] and labels [B, T]; got "
                f"{tuple(outputs.shape)} and {tuple(targets.shape)}"
            )
        return outputs[:, :-1], targets[:, 1:]
    if targets.is_floating_point():
        if targets.shape == outputs.shape and outputs.ndim == 2:
            return outputs, targets  # class probabilities
        raise TargetError(
            f"cross-entropy got floating targets of shape {tuple(targets.shape)} for outputs "
            f"{tuple(outputs.shape)}: pass class indices (an integer tensor of shape "
            f"{tuple(outputs.shape[:-1])}) or class probabilities of the outputs' shape"
        )
    if outputs.ndim == targets.ndim + 1 and outputs.shape[:-1] == targets.shape:
        return outputs, targets
    if (
        outputs.ndim == targets.ndim + 1
        and outputs.ndim >= 3
        and outputs.shape[0] == targets.shape[0]
        and outputs.shape[2:] == targets.shape[1:]
    ):
        return outputs.movedim(1, -1), targets
    want = (tuple(outputs.shape[:1]) + tuple(outputs.shape[2:])) if outputs.ndim > 2 else None
    alt = f" or {want}" if want is not None else ""
    raise TargetError(
        f"cross-entropy targets have shape {tuple(targets.shape)} but outputs "
        f"{tuple(outputs.shape)} need class indices of shape {tuple(outputs.shape[:-1])}{alt}: "
        "check that the targets belong to these inputs (one label per point, or per token)"
    )


def ce_item_weights(spec: LossSpec, labels: Tensor, dtype: torch.dtype) -> Tensor:
    """Each aligned target's weight: its class weight, ``0`` where ignored.

    Soft (probability) targets ``[B, C]`` count one item per row.
    """
    if labels.is_floating_point():
        return torch.ones(labels.shape[:-1], dtype=dtype, device=labels.device)
    keep = labels != spec.ignore_index
    if spec.weight is None:
        return keep.to(dtype)
    safe = torch.where(keep, labels, torch.zeros_like(labels))
    return spec.weight.to(dtype=dtype, device=labels.device)[safe] * keep.to(dtype)


def ce_sum(spec: LossSpec, outputs: Tensor, targets: Tensor) -> Tensor:
    """A batch's cross-entropy summed over its items (class-weighted, ignored excluded)."""
    logits, labels = ce_layout(spec, outputs, targets)
    weight = None if spec.weight is None else spec.weight.to(logits.dtype)
    soft = labels.is_floating_point()
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        labels.to(logits.dtype) if soft else labels.reshape(-1).long(),
        weight=weight,
        ignore_index=spec.ignore_index,
        reduction="sum",
        label_smoothing=spec.label_smoothing,
    )


def ce_count(spec: LossSpec, targets: Tensor) -> float:
    """Items of a batch's targets (class-weighted, ignored ones excluded)."""
    labels = targets[:, 1:] if spec.kind == "causal_lm" else targets
    if labels.is_floating_point() and labels.ndim == 2:  # class probabilities
        return float(labels.shape[0])
    return float(ce_item_weights(spec, labels, torch.float64).sum())


def lm_split(spec: LossSpec, batch: Any) -> tuple[Any, Tensor]:
    """Model inputs and labels of a language-model batch.

    Dict batches (Hugging Face style): the model gets every key but ``labels`` as keyword
    arguments; the labels are ``batch["labels"]``, or for ``"causal_lm"`` the
    ``input_ids`` with padding (``attention_mask == 0``) set to ``-100``. Tuple batches:
    ``(input_ids,)`` (causal only) or ``(input_ids, labels)``.
    """
    if isinstance(batch, Mapping):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if "labels" in batch:
            return inputs, batch["labels"]
        if spec.kind == "masked_lm" or "input_ids" not in batch:
            raise DataError(
                f"a {spec.kind!r} dict batch needs 'labels' (keys: {list(batch)}); set the "
                "positions that are not predicted to -100"
            )
        labels = batch["input_ids"]
        if "attention_mask" in batch:
            labels = labels.masked_fill(batch["attention_mask"] == 0, spec.ignore_index)
        return inputs, labels
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    if isinstance(batch, (tuple, list)) and len(batch) == 1 and spec.kind == "causal_lm":
        return batch[0], batch[0]
    if isinstance(batch, Tensor) and spec.kind == "causal_lm":
        return batch, batch
    raise DataError(
        f"a {spec.kind!r} batch must be a dict with 'input_ids' (and 'labels' / "
        "'attention_mask'), (input_ids,) or (input_ids, labels); got "
        f"{type(batch).__name__}"
    )


def output_tensor(out: Any) -> Tensor:
    """The model's prediction tensor: itself, or the ``logits`` of a Hugging Face output."""
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, Mapping):
        logits = out.get("logits")
    if logits is None and isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        logits = out[0]
    if not isinstance(logits, Tensor):
        raise DataError(
            f"the model returned {type(out).__name__}, not a tensor or an output with "
            "'logits'; use a custom loss loss_fn(model_fn, batch) to say what to use"
        )
    return logits
