"""The pieces of :func:`hesslab.train.fit`: options, the run state and one update.

:func:`run_loop` is the loop: callbacks at step 0, then :func:`_epoch` (the batches of one
pass, each one :func:`_update`: :func:`_batch`, :func:`_batch_gradient`, the checks,
:func:`_optimizer_step`, the projection, the record, the callbacks) and
:func:`_end_epoch` (periodic evaluation, the minibatch ``grad_tol`` check) until a bound.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from hesslab.data.datasets import Split, TensorData
from hesslab.errors import ConfigurationError, DataError
from hesslab.train._passes import (
    Pass,
    evaluate,
    full_grad_norm,
    full_pass,
    grad_norm,
    set_mode,
)

logger = logging.getLogger("hesslab.train.fit")


#: ``callback(model, step, info)``; return ``True`` to stop training.
Callback = Callable[[nn.Module, int, dict[str, Any]], Any]
#: ``penalty(model, (x, y), loss_fn, step, loss=loss) -> Tensor``: a differentiable scalar
#: added to the batch loss before ``backward`` (the signature of
#: :class:`~hesslab.train.regularizers.HessianTracePenalty`).
Penalty = Callable[..., Tensor]
#: ``project(model, step)``: called without autograd after every update; may change the
#: parameters in place (a projection or constraint).
Projection = Callable[[nn.Module, int], Any]
#: Standard deviation of Gaussian noise added to floating targets at every update, or
#: ``label_noise(targets, generator) -> noisy targets``.
LabelNoise = float | Callable[[Tensor, torch.Generator], Tensor]

#: How minibatches are drawn: a fresh permutation per epoch, or indices with replacement.
SAMPLINGS = ("shuffle", "replacement")


def _resolve_data(data: Any, name: str) -> TensorData:
    if isinstance(data, TensorData):
        return data
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
    ):
        y = data[1]
        k = None if y.is_floating_point() else int(y.max()) + 1
        return TensorData(data[0], y, name=name, num_classes=k)
    raise DataError(
        f"{name} must be a TensorData, a Split or a tuple (x, y) of tensors, got "
        f"{type(data).__name__}."
    )


def check_options(
    *,
    epochs: int | None,
    steps: int | None,
    batch_size: int | None,
    lr: float,
    grad_tol: float | None,
    dtype: torch.dtype | None,
    eval_every: int | None,
    sampling: str,
    label_noise: LabelNoise | None,
) -> None:
    if epochs is None and steps is None:
        raise ConfigurationError("pass epochs= or steps= (or both) to bound the training.")
    for name, v in (("epochs", epochs), ("steps", steps)):
        if v is not None and v < 0:
            raise ConfigurationError(f"{name} must be non-negative, got {v}.")
    if batch_size is not None and batch_size < 1:
        raise ConfigurationError(
            f"batch_size must be positive (or None for full batch), got {batch_size}."
        )
    if lr < 0 or not math.isfinite(lr):
        raise ConfigurationError(f"lr must be a finite non-negative number, got {lr}.")
    if grad_tol is not None and grad_tol < 0:
        raise ConfigurationError(f"grad_tol must be non-negative, got {grad_tol}.")
    if dtype is not None and not dtype.is_floating_point:
        raise ConfigurationError(f"dtype must be a floating dtype, got {dtype}.")
    if eval_every is not None and eval_every < 1:
        raise ConfigurationError(
            f"eval_every must be a positive number of epochs, got {eval_every}."
        )
    _check_sampling(sampling, label_noise)


def _check_sampling(sampling: str, label_noise: LabelNoise | None) -> None:
    if sampling not in SAMPLINGS:
        raise ConfigurationError(
            f"unknown sampling {sampling!r}; use 'shuffle' (a permutation per epoch) or "
            "'replacement' (indices drawn with replacement)."
        )
    if isinstance(label_noise, (int, float)) and not (
        label_noise >= 0 and math.isfinite(label_noise)
    ):
        raise ConfigurationError(
            f"label_noise must be a finite non-negative std, got {label_noise}."
        )


def prepare(
    model: nn.Module,
    data: Any,
    eval_data: Any,
    *,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    inplace: bool,
) -> tuple[nn.Module, TensorData, TensorData | None]:
    """The model to train (a copy unless ``inplace``) and the data on its device/dtype."""
    if isinstance(data, Split):
        if eval_data is None:
            eval_data = data.test
        data = data.train
    train = _resolve_data(data, "data")
    test = None if eval_data is None else _resolve_data(eval_data, "eval_data")
    if len(train) == 0:
        raise DataError("the training data are empty.")
    net = model if inplace else copy.deepcopy(model)
    p0 = next(iter(net.parameters()), None)
    if p0 is None:
        raise ConfigurationError("the model has no parameters to train.")
    if device is not None or dtype is not None:
        net = net.to(device=device, dtype=dtype)
        p0 = next(iter(net.parameters()))
    train = train.to(p0.device, p0.dtype)
    test = None if test is None else test.to(p0.device, p0.dtype)
    return net, train, test


@dataclass(frozen=True)
class Settings:
    """The validated knobs of one run (what does not change while it trains)."""

    loss_fn: Callable[[Tensor, Tensor], Tensor]
    full_batch: bool
    batch_size: int
    sampling: str
    epochs: int | None
    steps: int | None
    grad_tol: float | None
    milestones: tuple[int, ...]
    gamma: float
    chunk_size: int | None
    eval_every: int | None
    penalty: Penalty | None
    label_noise: LabelNoise | None
    project: Projection | None


@dataclass(eq=False)
class Run:
    """The state of one training run: model, optimizer, generator, counters, records."""

    net: nn.Module
    params: list[nn.Parameter]
    opt: torch.optim.Optimizer
    train: TensorData
    test: TensorData | None
    gen: torch.Generator
    callbacks: list[Callback]
    settings: Settings
    base_lrs: list[float] = field(default_factory=list)
    step: int = 0
    epoch: int = 0
    stopped_by: str | None = None
    converged: bool | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    evaluations: list[dict[str, float | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base_lrs = [g["lr"] for g in self.opt.param_groups]
        self.converged = None if self.settings.grad_tol is None else False

    def out_of_steps(self) -> bool:
        return self.settings.steps is not None and self.step >= self.settings.steps


def check_penalty(s: Settings, n: int) -> None:
    if s.penalty is not None and s.full_batch and s.chunk_size is not None and s.chunk_size < n:
        raise ConfigurationError(
            "a penalty needs the whole batch in one forward pass; pass chunk_size=None "
            f"(or >= {n}) for full-batch training with a penalty."
        )


def _run_callbacks(run: Run, step: int, info: dict[str, Any]) -> bool:
    """Call every callback (model in eval mode, restored after); ``True``: stop."""
    if not run.callbacks:
        return False
    old = set_mode(run.net, False)
    try:
        stop = False
        for cb in run.callbacks:
            stop = bool(cb(run.net, step, info)) or stop
    finally:
        set_mode(run.net, old)
    return stop


def record_eval(run: Run) -> dict[str, float | None]:
    s = run.settings
    tl, ta = evaluate(run.net, run.train, loss=s.loss_fn, batch_size=s.chunk_size)
    el, ea = (
        (None, None)
        if run.test is None
        else evaluate(run.net, run.test, loss=s.loss_fn, batch_size=s.chunk_size)
    )
    return {
        "step": run.step,
        "epoch": run.epoch,
        "train_loss": tl,
        "train_accuracy": ta,
        "test_loss": el,
        "test_accuracy": ea,
    }


def _set_lr(run: Run) -> float:
    """Scale every group's base learning rate by ``gamma`` per milestone passed."""
    s = run.settings
    factor = s.gamma ** sum(m <= run.epoch for m in s.milestones)
    for group, base in zip(run.opt.param_groups, run.base_lrs, strict=True):
        group["lr"] = base * factor
    return float(run.opt.param_groups[0]["lr"])


def _batches(run: Run) -> Iterator[Tensor | None]:
    """The index batches of one epoch (``None``: the whole data set), drawn lazily."""
    s, n, device = run.settings, len(run.train), run.train.x.device
    if s.full_batch:
        yield None
    elif s.sampling == "shuffle":
        yield from torch.randperm(n, generator=run.gen).to(device).split(s.batch_size)
    else:
        for _ in range(math.ceil(n / s.batch_size)):
            yield torch.randint(0, n, (s.batch_size,), generator=run.gen).to(device)


def _noisy(run: Run, y: Tensor) -> Tensor:
    """The targets of one update, with fresh label noise if asked."""
    noise = run.settings.label_noise
    if noise is None:
        return y
    if callable(noise):
        return noise(y, run.gen)
    if not y.is_floating_point():
        raise ConfigurationError(
            "Gaussian label_noise needs floating targets; for class labels pass a "
            "callable(targets, generator) -> targets, or flip labels once with "
            "hesslab.data.with_label_noise."
        )
    z = torch.randn(y.shape, generator=run.gen, dtype=y.dtype).to(y.device)
    return y + noise * z


def _batch(run: Run, idx: Tensor | None) -> tuple[Tensor, Tensor]:
    """The inputs and targets of one update (``None``: all data), label noise drawn."""
    x, y = run.train.x, run.train.y
    xb, yb = (x, y) if idx is None else (x[idx], y[idx])
    return xb, _noisy(run, yb)


def _batch_gradient(run: Run, xb: Tensor, yb: Tensor, full: bool) -> Pass:
    """Loss (+ penalty) of one batch with its gradient in ``.grad`` (cleared first)."""
    s = run.settings
    extra = None
    if s.penalty is not None:
        penalty, step = s.penalty, run.step

        def extra(xc: Tensor, yc: Tensor, loss: Tensor) -> Tensor:
            return penalty(run.net, (xc, yc), s.loss_fn, step, loss=loss)

    run.opt.zero_grad(set_to_none=True)
    chunk = s.chunk_size if full else None
    return full_pass(run.net, xb, yb, s.loss_fn, chunk, backward=True, extra=extra)


def _optimizer_step(run: Run, xb: Tensor, yb: Tensor, full: bool) -> None:
    """``opt.step()``; optimizers that re-evaluate (L-BFGS) get a closure on the batch."""
    if not isinstance(run.opt, torch.optim.LBFGS):
        run.opt.step()
        return

    def closure() -> Tensor:
        res = _batch_gradient(run, xb, yb, full)
        return res.loss if res.penalty is None else res.loss + res.penalty

    run.opt.step(closure)


def _update(run: Run, idx: Tensor | None, lr: float) -> None:
    """One parameter update on the batch ``idx``; sets ``run.stopped_by`` to stop."""
    s = run.settings
    xb, yb = _batch(run, idx)
    res = _batch_gradient(run, xb, yb, idx is None)
    gnorm = float(grad_norm(run.params))
    loss_value = float(res.loss)
    if not math.isfinite(loss_value):
        logger.warning("loss became %s at step %d; stopping", loss_value, run.step)
        run.stopped_by = "diverged"
        return
    if s.full_batch and s.grad_tol is not None and gnorm <= s.grad_tol:
        run.converged, run.stopped_by = True, "grad_tol"
        return
    _optimizer_step(run, xb, yb, idx is None)
    if run.callbacks or s.project is not None:
        run.opt.zero_grad(set_to_none=True)  # callbacks see no stale .grad
    run.step += 1
    if s.project is not None:
        with torch.no_grad():
            s.project(run.net, run.step)
    rec = {
        "step": run.step,
        "epoch": run.epoch,
        "loss": loss_value,
        "accuracy": float("nan") if res.accuracy is None else float(res.accuracy),
        "grad_norm": gnorm,
        "lr": lr,
    }
    if res.penalty is not None:
        rec["penalty"] = float(res.penalty)
    run.history.append(rec)
    if _run_callbacks(run, run.step, dict(rec)):
        run.stopped_by = "callback"


def _epoch(run: Run) -> None:
    """One pass over the data (one update for full batch), at the epoch's learning rate."""
    lr = _set_lr(run)
    for idx in _batches(run):
        if run.out_of_steps():
            run.stopped_by = "steps"
            return
        _update(run, idx, lr)
        if run.stopped_by is not None:
            return
    run.epoch += 1


def _end_epoch(run: Run) -> None:
    """Periodic evaluation; the minibatch ``grad_tol`` check (one extra full pass)."""
    s = run.settings
    if s.eval_every is not None and run.epoch % s.eval_every == 0:
        run.evaluations.append(record_eval(run))
        logger.info("epoch %d: %s", run.epoch, run.evaluations[-1])
    if s.grad_tol is not None and not s.full_batch:
        if full_grad_norm(run.net, run.params, *run.train.tensors, s.loss_fn, s.chunk_size) <= (
            s.grad_tol
        ):
            run.converged, run.stopped_by = True, "grad_tol"


def run_loop(run: Run) -> None:
    """The loop: callbacks at step 0, then epochs until a bound, a stop or convergence."""
    s = run.settings
    run.net.train()
    if _run_callbacks(run, 0, {"step": 0, "epoch": 0, "lr": run.base_lrs[0]}):
        run.stopped_by = "callback"
    while run.stopped_by is None:
        if s.epochs is not None and run.epoch >= s.epochs:
            run.stopped_by = "epochs"
        elif run.out_of_steps():
            run.stopped_by = "steps"
        else:
            _epoch(run)
            if run.stopped_by is None:
                _end_epoch(run)
