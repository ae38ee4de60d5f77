"""A small, deterministic trainer: SGD, Adam or full-batch gradient descent.

:func:`fit` trains a copy of a model on a :class:`~hesslab.data.TensorData` and returns a
frozen :class:`FitResult` with the trained model, a per-step history and final metrics.
It is the trainer the experiments use; the spectrum monitors plug in as ``callbacks``.

Conventions:

* ``loss="ce"``: mean cross-entropy over the data points. ``loss="mse"``: PyTorch's
  ``F.mse_loss`` with mean reduction, i.e. the mean over data points *and* outputs of
  ``(f_c(x) - t_c)^2``; for classification the target ``t`` is the one-hot label.
* Full-batch gradient descent (``optimizer="gd"``) computes the exact mean loss over the
  whole data set: the gradient is accumulated over chunks of ``chunk_size`` points,
  each weighted by its share ``n_chunk / N`` of the data (unequal chunks weigh
  correctly).
* The batch order comes from a local ``torch.Generator`` (``seed``/``generator``): two runs
  with the same arguments on the same device give bit-identical weights. Per update the
  generator is drawn in a fixed order: the batch indices (``sampling="replacement"``; a
  permutation per epoch for ``"shuffle"``), then the label noise; an optimizer given the
  same generator (e.g. :class:`~hesslab.train.optim.NoisyGD`) draws after them.
* Hooks for the experiments: ``penalty`` adds a differentiable term to each batch loss
  (the curvature regularizers of :mod:`hesslab.train.regularizers` plug in as they are),
  ``label_noise`` perturbs each batch's targets afresh, ``project`` may change the
  parameters after every update (a projection), ``callbacks`` observe every update.

The run is a short loop over small pieces: :func:`_epoch` draws the batches and calls
:func:`_update` (one parameter update: :func:`_batch`, :func:`_batch_gradient`, the
checks, :func:`_optimizer_step`, the projection, the record and the callbacks);
:func:`_end_epoch` evaluates.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hesslab.data.datasets import Split, TensorData
from hesslab.errors import ConfigurationError, DataError
from hesslab.train._norms import differentiable_batch_norm
from hesslab.validation import check_targets

__all__ = ["Callback", "FitResult", "LabelNoise", "Penalty", "Projection", "evaluate", "fit",
           "resolve_loss"]  # fmt: skip

logger = logging.getLogger(__name__)

#: ``callback(model, step, info)``; return ``True`` to stop training.
Callback = Callable[[nn.Module, int, dict[str, Any]], Any]
LossSpec = str | Callable[[Tensor, Tensor], Tensor]
OptimizerSpec = str | type[torch.optim.Optimizer] | Callable[..., torch.optim.Optimizer]
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


@dataclass(frozen=True, eq=False)
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
        model: the trained model, in eval mode (a deep copy of the input unless
            ``inplace=True``).
        history: one dict per update with ``step`` (1-based number of updates done),
            ``epoch`` (0-based epoch of the update), ``loss`` and ``accuracy`` (of the
            batch the update used, before the update; full data for ``"gd"``),
            ``grad_norm`` (norm of that batch's gradient, penalty included, weight decay
            excluded), ``lr``, and ``penalty`` (the added term) when a ``penalty`` is
            given.
        evaluations: one dict per evaluation (every ``eval_every`` epochs) with ``step``,
            ``epoch``, ``train_loss``, ``train_accuracy``, ``test_loss``,
            ``test_accuracy`` over the full sets, model in eval mode.
        final_train_loss: mean loss over the whole training set at the end (eval mode).
        final_train_accuracy: training accuracy at the end (``None`` for regression).
        final_test_loss: mean loss over ``eval_data`` (``None`` without it).
        final_test_accuracy: accuracy over ``eval_data`` (``None`` without it).
        final_grad_norm: norm of the full-batch training-loss gradient at the end.
        seconds: wall time of the whole call.
        steps: number of parameter updates made.
        epochs: number of completed passes over the data.
        stopped_by: ``"epochs"``, ``"steps"``, ``"grad_tol"``, ``"callback"`` or
            ``"diverged"`` (non-finite batch loss, checked before the update; logged as a
            warning).
        converged: whether the full-batch gradient norm reached ``grad_tol`` (``None``
            when no ``grad_tol`` was given).
        config: the arguments of the run (JSON-friendly).
    """

    model: nn.Module
    history: tuple[dict[str, float], ...]
    evaluations: tuple[dict[str, float | None], ...]
    final_train_loss: float
    final_train_accuracy: float | None
    final_test_loss: float | None
    final_test_accuracy: float | None
    final_grad_norm: float
    seconds: float
    steps: int
    epochs: int
    stopped_by: str
    converged: bool | None
    config: dict[str, Any] = field(default_factory=dict)

    def series(self, key: str) -> list[float]:
        """The values of ``key`` over :attr:`history`, e.g. ``result.series("loss")``."""
        return [h[key] for h in self.history]


# ---------------------------------------------------------------------------------------
# losses and evaluation


def resolve_loss(loss: LossSpec) -> Callable[[Tensor, Tensor], Tensor]:
    """The mean-reduced loss function ``f(outputs, targets) -> scalar`` for ``loss``.

    ``"ce"`` (alias ``"cross_entropy"``), ``"mse"``, or a callable returning the mean loss
    over its batch.
    """
    if callable(loss) and not isinstance(loss, str):
        return loss
    if loss in ("ce", "cross_entropy"):
        return _cross_entropy
    if loss == "mse":
        return _mse
    raise ConfigurationError(
        f"unknown loss {loss!r}; use 'ce', 'mse' or a callable(outputs, targets) -> mean loss."
    )


def _cross_entropy(out: Tensor, y: Tensor) -> Tensor:
    if y.is_floating_point():
        raise DataError(
            "loss='ce' needs integer class labels, the targets are floating point; use "
            "loss='mse' for regression."
        )
    check_targets("ce", out, y)
    return F.cross_entropy(out, y)


def _mse(out: Tensor, y: Tensor) -> Tensor:
    y = check_targets("mse", out, y)  # [N] targets for [N, 1] outputs; never a broadcast
    if not y.is_floating_point():
        target = F.one_hot(y, num_classes=out.shape[-1]).to(out.dtype)
    else:
        target = y
    return F.mse_loss(out, target)


def _chunks(n: int, chunk_size: int | None) -> list[tuple[int, int]]:
    size = n if chunk_size is None else max(1, int(chunk_size))
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def _set_mode(model: nn.Module, modes: dict[nn.Module, bool] | bool) -> dict[nn.Module, bool]:
    old = {m: m.training for m in model.modules()}
    for m in model.modules():
        m.training = modes if isinstance(modes, bool) else modes[m]
    return old


class _Pass(NamedTuple):
    loss: Tensor  # the mean loss (float64 when summed over several chunks), no penalty
    accuracy: Tensor | None
    penalty: Tensor | None  # the term added before backward, if any


def _full_pass(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    chunk_size: int | None,
    *,
    backward: bool,
    extra: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
) -> _Pass:
    """Exact mean loss (and accuracy) over ``x``; accumulates ``.grad`` if asked.

    With several chunks, each chunk's mean loss is weighted by ``n_chunk / N`` (so the
    gradient is exactly that of the mean over all points) and the loss is summed in
    float64. ``extra(x, y, loss) -> term`` (one chunk only) is added to the loss before
    ``backward``; the forward pass then runs under :func:`differentiable_batch_norm`, so
    the term may differentiate the loss's graph to third order.
    """
    n = x.shape[0]
    chunks = _chunks(n, chunk_size)
    total: Tensor | None = None
    correct: Tensor | None = None
    term: Tensor | None = None
    classify = not y.is_floating_point()
    for a, b in chunks:
        xc, yc = (x, y) if len(chunks) == 1 else (x[a:b], y[a:b])
        with torch.set_grad_enabled(backward):
            with differentiable_batch_norm() if extra is not None else nullcontext():
                out = model(xc)
                loss = loss_fn(out, yc)
            if len(chunks) > 1:
                loss = loss * ((b - a) / n)
        if backward:
            if extra is not None:
                term = extra(xc, yc, loss)
                (loss + term).backward()
            else:
                loss.backward()
        value = loss.detach()
        if len(chunks) > 1:
            value = value.to(torch.float64)
        total = value if total is None else total + value
        if classify and out.ndim == 2 and out.shape[1] > 1:
            c = (out.detach().argmax(dim=1) == yc).sum()
            correct = c if correct is None else correct + c
        else:
            classify = False
    assert total is not None
    acc = correct / n if classify and correct is not None else None
    return _Pass(total, acc, None if term is None else term.detach())


def _grad_norm(params: Sequence[Tensor]) -> Tensor:
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads, norm_type=2.0)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TensorData,
    *,
    loss: LossSpec = "ce",
    batch_size: int | None = 4096,
) -> tuple[float, float | None]:
    """Mean loss and accuracy of ``model`` over all of ``data``, in eval mode.

    The model's train/eval flags are restored afterwards. Data are moved to the model's
    device and dtype.

    Returns:
        ``(loss, accuracy)``; accuracy is ``None`` for regression targets.
    """
    p = next(iter(model.parameters()), None)
    data = data.to(p.device if p is not None else None, p.dtype if p is not None else None)
    old = _set_mode(model, False)
    try:
        total, acc, _ = _full_pass(
            model, data.x, data.y, resolve_loss(loss), batch_size, backward=False
        )
    finally:
        _set_mode(model, old)
    return float(total), None if acc is None else float(acc)


def _full_grad_norm(
    model: nn.Module,
    params: Sequence[Tensor],
    x: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    chunk_size: int | None,
) -> float:
    old = _set_mode(model, False)
    try:
        for p in params:
            p.grad = None
        _full_pass(model, x, y, loss_fn, chunk_size, backward=True)
        norm = float(_grad_norm(params))
        for p in params:
            p.grad = None
    finally:
        _set_mode(model, old)
    return norm


# ---------------------------------------------------------------------------------------
# optimizers


def _make_optimizer(
    spec: OptimizerSpec,
    params: list[nn.Parameter],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    nesterov: bool,
) -> tuple[torch.optim.Optimizer, bool]:
    """The optimizer and whether it runs full batch."""
    if isinstance(spec, str):
        name = spec.lower()
        if name in ("sgd", "gd"):
            opt: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
            )
            return opt, name == "gd"
        if name == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay), False
        if name == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay), False
        raise ConfigurationError(
            f"unknown optimizer {spec!r}; use 'sgd', 'gd' (full batch), 'adam', 'adamw', a "
            "torch.optim.Optimizer class, or a factory params -> optimizer."
        )
    if isinstance(spec, type) and issubclass(spec, torch.optim.Optimizer):
        return spec(params, lr=lr), False
    if callable(spec):
        opt = spec(params)
        if not isinstance(opt, torch.optim.Optimizer):
            raise ConfigurationError(
                f"the optimizer factory returned {type(opt).__name__}, not a torch.optim.Optimizer."
            )
        return opt, False
    raise ConfigurationError(f"cannot make an optimizer from {spec!r}.")


# ---------------------------------------------------------------------------------------
# fit: the pieces


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


def _check_options(
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


def _prepare(
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
class _Settings:
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
class _Run:
    """The state of one training run: model, optimizer, generator, counters, records."""

    net: nn.Module
    params: list[nn.Parameter]
    opt: torch.optim.Optimizer
    train: TensorData
    test: TensorData | None
    gen: torch.Generator
    callbacks: list[Callback]
    settings: _Settings
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


def _check_penalty(s: _Settings, n: int) -> None:
    if s.penalty is not None and s.full_batch and s.chunk_size is not None and s.chunk_size < n:
        raise ConfigurationError(
            "a penalty needs the whole batch in one forward pass; pass chunk_size=None "
            f"(or >= {n}) for full-batch training with a penalty."
        )


def _run_callbacks(run: _Run, step: int, info: dict[str, Any]) -> bool:
    """Call every callback (model in eval mode, restored after); ``True``: stop."""
    if not run.callbacks:
        return False
    old = _set_mode(run.net, False)
    try:
        stop = False
        for cb in run.callbacks:
            stop = bool(cb(run.net, step, info)) or stop
    finally:
        _set_mode(run.net, old)
    return stop


def _record_eval(run: _Run) -> dict[str, float | None]:
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


def _set_lr(run: _Run) -> float:
    """Scale every group's base learning rate by ``gamma`` per milestone passed."""
    s = run.settings
    factor = s.gamma ** sum(m <= run.epoch for m in s.milestones)
    for group, base in zip(run.opt.param_groups, run.base_lrs, strict=True):
        group["lr"] = base * factor
    return float(run.opt.param_groups[0]["lr"])


def _batches(run: _Run) -> Iterator[Tensor | None]:
    """The index batches of one epoch (``None``: the whole data set), drawn lazily."""
    s, n, device = run.settings, len(run.train), run.train.x.device
    if s.full_batch:
        yield None
    elif s.sampling == "shuffle":
        yield from torch.randperm(n, generator=run.gen).to(device).split(s.batch_size)
    else:
        for _ in range(math.ceil(n / s.batch_size)):
            yield torch.randint(0, n, (s.batch_size,), generator=run.gen).to(device)


def _noisy(run: _Run, y: Tensor) -> Tensor:
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


def _batch(run: _Run, idx: Tensor | None) -> tuple[Tensor, Tensor]:
    """The inputs and targets of one update (``None``: all data), label noise drawn."""
    x, y = run.train.x, run.train.y
    xb, yb = (x, y) if idx is None else (x[idx], y[idx])
    return xb, _noisy(run, yb)


def _batch_gradient(run: _Run, xb: Tensor, yb: Tensor, full: bool) -> _Pass:
    """Loss (+ penalty) of one batch with its gradient in ``.grad`` (cleared first)."""
    s = run.settings
    extra = None
    if s.penalty is not None:
        penalty, step = s.penalty, run.step

        def extra(xc: Tensor, yc: Tensor, loss: Tensor) -> Tensor:
            return penalty(run.net, (xc, yc), s.loss_fn, step, loss=loss)

    run.opt.zero_grad(set_to_none=True)
    chunk = s.chunk_size if full else None
    return _full_pass(run.net, xb, yb, s.loss_fn, chunk, backward=True, extra=extra)


def _optimizer_step(run: _Run, xb: Tensor, yb: Tensor, full: bool) -> None:
    """``opt.step()``; optimizers that re-evaluate (L-BFGS) get a closure on the batch."""
    if not isinstance(run.opt, torch.optim.LBFGS):
        run.opt.step()
        return

    def closure() -> Tensor:
        res = _batch_gradient(run, xb, yb, full)
        return res.loss if res.penalty is None else res.loss + res.penalty

    run.opt.step(closure)


def _update(run: _Run, idx: Tensor | None, lr: float) -> None:
    """One parameter update on the batch ``idx``; sets ``run.stopped_by`` to stop."""
    s = run.settings
    xb, yb = _batch(run, idx)
    res = _batch_gradient(run, xb, yb, idx is None)
    gnorm = float(_grad_norm(run.params))
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


def _epoch(run: _Run) -> None:
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


def _end_epoch(run: _Run) -> None:
    """Periodic evaluation; the minibatch ``grad_tol`` check (one extra full pass)."""
    s = run.settings
    if s.eval_every is not None and run.epoch % s.eval_every == 0:
        run.evaluations.append(_record_eval(run))
        logger.info("epoch %d: %s", run.epoch, run.evaluations[-1])
    if s.grad_tol is not None and not s.full_batch:
        if _full_grad_norm(run.net, run.params, *run.train.tensors, s.loss_fn, s.chunk_size) <= (
            s.grad_tol
        ):
            run.converged, run.stopped_by = True, "grad_tol"


def _train(run: _Run) -> None:
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


def _describe(spec: Any) -> Any:
    if spec is None or isinstance(spec, (str, int, float)):
        return spec
    return getattr(spec, "__name__", None) or type(spec).__name__


def _result(run: _Run, config: dict[str, Any], t0: float) -> FitResult:
    """Final evaluation (eval mode), the full-batch gradient norm and the record."""
    s = run.settings
    run.net.eval()
    final = _record_eval(run)
    x, y = run.train.tensors
    final_gn = _full_grad_norm(run.net, run.params, x, y, s.loss_fn, s.chunk_size)
    if s.grad_tol is not None and final_gn <= s.grad_tol:
        run.converged = True
    config.update(
        batch_size=len(run.train) if s.full_batch else s.batch_size,
        num_train=len(run.train),
        num_test=None if run.test is None else len(run.test),
        device=str(x.device),
        dtype=str(x.dtype),
    )
    seconds = time.perf_counter() - t0
    logger.info(
        "fit: %d steps, %d epochs, stopped by %s, train loss %.4g, %.2fs",
        run.step, run.epoch, run.stopped_by, final["train_loss"], seconds,
    )  # fmt: skip
    return FitResult(
        model=run.net,
        history=tuple(run.history),
        evaluations=tuple(run.evaluations),
        final_train_loss=float(final["train_loss"]),  # type: ignore[arg-type]
        final_train_accuracy=final["train_accuracy"],
        final_test_loss=final["test_loss"],
        final_test_accuracy=final["test_accuracy"],
        final_grad_norm=final_gn,
        seconds=seconds,
        steps=run.step,
        epochs=run.epoch,
        stopped_by=run.stopped_by or "epochs",
        converged=run.converged,
        config=config,
    )


# ---------------------------------------------------------------------------------------
# fit


def fit(
    model: nn.Module,
    data: TensorData | Split | tuple[Tensor, Tensor],
    *,
    loss: LossSpec = "ce",
    optimizer: OptimizerSpec = "sgd",
    lr: float = 0.1,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    batch_size: int | None = 64,
    sampling: str = "shuffle",
    epochs: int | None = None,
    steps: int | None = None,
    grad_tol: float | None = None,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    seed: int = 0,
    generator: torch.Generator | None = None,
    penalty: Penalty | None = None,
    label_noise: LabelNoise | None = None,
    project: Projection | None = None,
    callbacks: Callback | Iterable[Callback] = (),
    eval_data: TensorData | tuple[Tensor, Tensor] | None = None,
    eval_every: int | None = None,
    chunk_size: int | None = 4096,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    inplace: bool = False,
) -> FitResult:
    r"""Train ``model`` on ``data`` by minibatch SGD/Adam or full-batch gradient descent.

    Each update minimises the batch objective

    .. math:: L_B(\theta) + \rho(\theta), \qquad
              L_B = \frac{1}{|B|} \sum_{i \in B} \ell(f_\theta(x_i), \tilde y_i),

    with ``B`` the minibatch (all data for full batch), ``ỹ`` the targets plus fresh label
    noise (``label_noise``) and ``ρ`` the ``penalty``; then ``project`` may change
    ``θ``.

    Args:
        model: the network; trained as a deep copy unless ``inplace=True``, so the
            caller's model (parameters, buffers, train/eval mode) is left untouched.
        data: training data; for a :class:`~hesslab.data.Split` the ``test`` part becomes
            the default ``eval_data``.
        loss: ``"ce"``, ``"mse"`` (one-hot targets for classification) or a callable
            ``(outputs, targets) -> loss`` (reduced over its batch as you like; the
            toy valley of Wei & Schwab, 2019 uses a sum).
        optimizer: ``"sgd"``, ``"adam"``, ``"adamw"``, ``"gd"`` (full-batch gradient
            descent: SGD with momentum/weight decay on the exact full-data gradient),
            a ``torch.optim.Optimizer`` class (called with ``(params, lr=lr)``), or a
            factory ``params -> optimizer`` (then ``lr``, ``momentum``, ``weight_decay``
            are not used, except that ``milestones`` scale the factory's ``lr``). A
            :class:`torch.optim.LBFGS` gets a closure re-evaluating the update's batch
            (same targets); one L-BFGS ``step`` (up to its ``max_iter`` iterations) is one
            update.
        lr: learning rate.
        momentum: SGD/GD heavy-ball momentum.
        weight_decay: L2 coefficient passed to the optimizer.
        nesterov: Nesterov momentum for SGD/GD.
        batch_size: points per minibatch; ``None``: full batch (the exact mean over all
            data every update, for any optimizer; ``"gd"`` implies it).
        sampling: ``"shuffle"`` (a fresh permutation per epoch, every point once) or
            ``"replacement"`` (each update draws ``batch_size`` indices uniformly with
            replacement, Li et al., 2019's SGD; an epoch is ``ceil(N / batch_size)``
            updates).
        epochs: number of passes over the data (for full batch one pass is one step).
        steps: maximum number of updates. At least one of ``epochs``/``steps`` is
            required; training stops at whichever comes first.
        grad_tol: stop when the full-batch gradient norm ``\|\nabla L\| \le`` ``grad_tol``
            (Sagun et al., 2017 train with GD until ``\|\nabla L\| \le 10^{-4}``). For
            full batch it is checked before every step at no extra cost; otherwise after
            every epoch, with one extra full pass (model in eval mode).
        milestones: epochs at which the learning rate is multiplied by ``gamma``
            (like ``MultiStepLR``; Sankar et al., 2021 use 10 and 20 for LeNet/MNIST).
        gamma: learning-rate factor at each milestone.
        seed: seed of the batch order (ignored if ``generator`` is given).
        generator: CPU ``torch.Generator`` for the batch order and the label noise.
        penalty: ``penalty(model, (x, y), loss_fn, step, loss=loss) -> Tensor`` added to
            each batch loss before ``backward`` (``step``: updates done so far; ``loss``:
            the batch loss with its graph). The batch's forward pass runs under
            :func:`~hesslab.train.differentiable_batch_norm`, so
            :class:`~hesslab.train.regularizers.HessianTracePenalty` and
            :class:`~hesslab.train.regularizers.WSBoundPenalty` plug in as they are
            (Sankar et al., 2021). Full batch needs ``chunk_size=None`` with it.
        label_noise: fresh noise on each update's targets: a std ``s`` (floating
            targets ``y + s·z``, ``z ~ N(0, I)`` from the generator; Blanc et al., 2020
            label-noise SGD) or ``label_noise(targets, generator) -> targets``.
        project: ``project(model, step)`` after every update, without autograd; it may
            change the parameters in place (projected gradient descent, or parking
            diverged runs). Unlike a callback it is part of the optimizer.
        callbacks: ``callback(model, step, info)`` called once before training
            (``step=0``, ``info`` with ``step``, ``epoch``, ``lr``) and after every update
            with that update's :attr:`FitResult.history` record. The model is in eval mode
            and has no ``.grad`` during the call; a callback must not change the
            parameters. Returning ``True`` stops training.
        eval_data: held-out data for the final (and periodic) evaluation.
        eval_every: evaluate on the full training and eval sets every this many epochs
            (records in :attr:`FitResult.evaluations`); ``None``: only at the end.
        chunk_size: points per forward pass in full-data passes (full-batch gradients,
            evaluations); only memory depends on it, the result is the exact mean.
        device: train on this device (default: where the model's parameters are).
        dtype: cast the model copy and the inputs to this floating dtype.
        inplace: train ``model`` itself instead of a copy.

    Returns:
        A :class:`FitResult`. No parameter of the returned (or, with ``inplace``, the
        caller's) model keeps a ``.grad``.

    Raises:
        ConfigurationError: on invalid options.
        DataError: on unusable data (empty, labels not matching the loss).

    Example:
        >>> from hesslab.data import digits
        >>> from hesslab.models import mlp
        >>> split = digits()
        >>> res = fit(mlp(64, (32, 32), 10, seed=0), split, lr=0.1, momentum=0.9, epochs=30)
        >>> res.final_test_accuracy > 0.95
        True
    """
    t0 = time.perf_counter()
    _check_options(
        epochs=epochs, steps=steps, batch_size=batch_size, lr=lr, grad_tol=grad_tol,
        dtype=dtype, eval_every=eval_every, sampling=sampling, label_noise=label_noise,
    )  # fmt: skip
    net, train, test = _prepare(model, data, eval_data, device=device, dtype=dtype, inplace=inplace)
    params = [p for p in net.parameters() if p.requires_grad]
    opt, gd = _make_optimizer(
        optimizer, params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
    )
    settings = _Settings(
        loss_fn=resolve_loss(loss), full_batch=gd or batch_size is None,
        batch_size=len(train) if batch_size is None else int(batch_size), sampling=sampling,
        epochs=epochs, steps=steps, grad_tol=grad_tol,
        milestones=tuple(sorted(int(m) for m in milestones)), gamma=gamma,
        chunk_size=chunk_size, eval_every=eval_every, penalty=penalty,
        label_noise=label_noise, project=project,
    )  # fmt: skip
    _check_penalty(settings, len(train))
    run = _Run(
        net=net, params=params, opt=opt, train=train, test=test,
        gen=generator if generator is not None else torch.Generator().manual_seed(seed),
        callbacks=[callbacks] if callable(callbacks) else list(callbacks), settings=settings,
    )  # fmt: skip
    _train(run)
    config = {
        "loss": _describe(loss), "optimizer": optimizer if isinstance(optimizer, str)
        else repr(optimizer), "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
        "nesterov": nesterov, "sampling": sampling, "epochs": epochs, "steps": steps,
        "grad_tol": grad_tol, "milestones": list(settings.milestones), "gamma": gamma,
        "seed": seed if generator is None else None, "penalty": _describe(penalty),
        "label_noise": _describe(label_noise), "project": _describe(project),
    }  # fmt: skip
    return _result(run, config, t0)


# Short notebook-friendly reprs (key numbers, not the tensors): see hesslab.display.
from hesslab import display as _display  # noqa: E402

_display.attach(FitResult, _display.fit_summary)
