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
  with the same arguments on the same device give bit-identical weights.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hesslab.data.datasets import Split, TensorData
from hesslab.errors import ConfigurationError, DataError
from hesslab.validation import check_targets

__all__ = ["Callback", "FitResult", "evaluate", "fit", "resolve_loss"]

logger = logging.getLogger(__name__)

#: ``callback(model, step, info)``; return ``True`` to stop training.
Callback = Callable[[nn.Module, int, dict[str, Any]], Any]
LossSpec = str | Callable[[Tensor, Tensor], Tensor]
OptimizerSpec = str | type[torch.optim.Optimizer] | Callable[..., torch.optim.Optimizer]


@dataclass(frozen=True, eq=False)
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
        model: the trained model, in eval mode (a deep copy of the input unless
            ``inplace=True``).
        history: one dict per update with ``step`` (1-based number of updates done),
            ``epoch`` (0-based epoch of the update), ``loss`` and ``accuracy`` (of the
            batch the update used, before the update; full data for ``"gd"``),
            ``grad_norm`` (norm of that batch's loss gradient, weight decay excluded) and
            ``lr``.
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
            ``"diverged"`` (non-finite loss; logged as a warning).
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


def _full_pass(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    chunk_size: int | None,
    *,
    backward: bool,
) -> tuple[Tensor, Tensor | None]:
    """Exact mean loss (and accuracy) over ``x``; accumulates ``.grad`` if asked.

    With several chunks, each chunk's mean loss is weighted by ``n_chunk / N`` (so the
    gradient is exactly that of the mean over all points) and the loss is summed in
    float64.
    """
    n = x.shape[0]
    chunks = _chunks(n, chunk_size)
    total: Tensor | None = None
    correct: Tensor | None = None
    classify = not y.is_floating_point()
    for a, b in chunks:
        xc, yc = (x, y) if len(chunks) == 1 else (x[a:b], y[a:b])
        with torch.set_grad_enabled(backward):
            out = model(xc)
            loss = loss_fn(out, yc)
            if len(chunks) > 1:
                loss = loss * ((b - a) / n)
        if backward:
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
    return total, acc


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
        total, acc = _full_pass(
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
# fit


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
    batch_size: int = 64,
    epochs: int | None = None,
    steps: int | None = None,
    grad_tol: float | None = None,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    seed: int = 0,
    generator: torch.Generator | None = None,
    callbacks: Callback | Iterable[Callback] = (),
    eval_data: TensorData | tuple[Tensor, Tensor] | None = None,
    eval_every: int | None = None,
    chunk_size: int | None = 4096,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    inplace: bool = False,
) -> FitResult:
    r"""Train ``model`` on ``data`` by minibatch SGD/Adam or full-batch gradient descent.

    Args:
        model: the network; trained as a deep copy unless ``inplace=True``, so the
            caller's model (parameters, buffers, train/eval mode) is left untouched.
        data: training data; for a :class:`~hesslab.data.Split` the ``test`` part becomes
            the default ``eval_data``.
        loss: ``"ce"``, ``"mse"`` (one-hot targets for classification) or a callable
            ``(outputs, targets) -> mean loss``.
        optimizer: ``"sgd"``, ``"adam"``, ``"adamw"``, ``"gd"`` (full-batch gradient
            descent: SGD with momentum/weight decay on the exact full-data gradient),
            a ``torch.optim.Optimizer`` class (called with ``(params, lr=lr)``), or a
            factory ``params -> optimizer`` (then ``lr``, ``momentum``, ``weight_decay``
            are not used, except that ``milestones`` scale the factory's ``lr``).
        lr: learning rate.
        momentum: SGD/GD heavy-ball momentum.
        weight_decay: L2 coefficient passed to the optimizer.
        nesterov: Nesterov momentum for SGD/GD.
        batch_size: points per minibatch (ignored for ``"gd"``).
        epochs: number of passes over the data (for ``"gd"`` one pass is one step).
        steps: maximum number of updates. At least one of ``epochs``/``steps`` is
            required; training stops at whichever comes first.
        grad_tol: stop when the full-batch gradient norm ``\|\nabla L\| \le`` ``grad_tol``
            (Sagun et al., 2017 train with GD until ``\|\nabla L\| \le 10^{-4}``). For
            ``"gd"`` it is checked before every step at no extra cost; otherwise after every
            epoch, with one extra full pass (model in eval mode).
        milestones: epochs at which the learning rate is multiplied by ``gamma``
            (like ``MultiStepLR``; Sankar et al., 2021 use 10 and 20 for LeNet/MNIST).
        gamma: learning-rate factor at each milestone.
        seed: seed of the batch order (ignored if ``generator`` is given).
        generator: CPU ``torch.Generator`` for the batch order.
        callbacks: ``callback(model, step, info)`` called once before training
            (``step=0``, ``info`` with ``step``, ``epoch``, ``lr``) and after every update
            with that update's :attr:`FitResult.history` record. The model is in eval mode
            and has no ``.grad`` during the call; a callback must not change the
            parameters. Returning ``True`` stops training.
        eval_data: held-out data for the final (and periodic) evaluation.
        eval_every: evaluate on the full training and eval sets every this many epochs
            (records in :attr:`FitResult.evaluations`); ``None``: only at the end.
        chunk_size: points per forward pass in full-data passes (``"gd"`` gradients,
            evaluations); only memory depends on it, the result is the exact mean.
        device: train on this device (default: where the model's parameters are).
        dtype: cast the model copy and the inputs to this floating dtype.
        inplace: train ``model`` itself instead of a copy.

    Returns:
        A :class:`FitResult`.

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
    if epochs is None and steps is None:
        raise ConfigurationError("pass epochs= or steps= (or both) to bound the training.")
    for name, v in (("epochs", epochs), ("steps", steps)):
        if v is not None and v < 0:
            raise ConfigurationError(f"{name} must be non-negative, got {v}.")
    if batch_size < 1:
        raise ConfigurationError(f"batch_size must be positive, got {batch_size}.")
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
    x, y = train.x, train.y
    n = x.shape[0]
    params = [p for p in net.parameters() if p.requires_grad]
    loss_fn = resolve_loss(loss)
    opt, full_batch = _make_optimizer(
        optimizer, params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
    )
    base_lrs = [g["lr"] for g in opt.param_groups]
    milestones = sorted(int(m) for m in milestones)
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    cbs: list[Callback] = [callbacks] if callable(callbacks) else list(callbacks)

    def run_callbacks(step: int, info: dict[str, Any]) -> bool:
        if not cbs:
            return False
        old = _set_mode(net, False)
        try:
            stop = False
            for cb in cbs:
                stop = bool(cb(net, step, info)) or stop
        finally:
            _set_mode(net, old)
        return stop

    def record_eval(step: int, epoch: int) -> dict[str, float | None]:
        tl, ta = evaluate(net, train, loss=loss_fn, batch_size=chunk_size)
        el, ea = (
            (None, None)
            if test is None
            else evaluate(net, test, loss=loss_fn, batch_size=chunk_size)
        )
        return {
            "step": step,
            "epoch": epoch,
            "train_loss": tl,
            "train_accuracy": ta,
            "test_loss": el,
            "test_accuracy": ea,
        }

    history: list[dict[str, float]] = []
    evaluations: list[dict[str, float | None]] = []
    step, epoch = 0, 0
    stopped_by: str | None = None
    converged: bool | None = None if grad_tol is None else False

    net.train()
    if run_callbacks(0, {"step": 0, "epoch": 0, "lr": base_lrs[0]}):
        stopped_by = "callback"

    while stopped_by is None:
        if epochs is not None and epoch >= epochs:
            stopped_by = "epochs"
            break
        if steps is not None and step >= steps:
            stopped_by = "steps"
            break
        factor = gamma ** sum(m <= epoch for m in milestones)
        for group, base in zip(opt.param_groups, base_lrs, strict=True):
            group["lr"] = base * factor
        cur_lr = float(opt.param_groups[0]["lr"])

        if full_batch:
            batches: list[Tensor | None] = [None]
        else:
            perm = torch.randperm(n, generator=gen).to(x.device)
            batches = list(perm.split(batch_size))
        for idx in batches:
            if steps is not None and step >= steps:
                stopped_by = "steps"
                break
            opt.zero_grad(set_to_none=True)
            if idx is None:
                total, acc = _full_pass(net, x, y, loss_fn, chunk_size, backward=True)
            else:
                total, acc = _full_pass(net, x[idx], y[idx], loss_fn, None, backward=True)
            gnorm = float(_grad_norm(params))
            loss_value = float(total)
            if not math.isfinite(loss_value):
                logger.warning("loss became %s at step %d; stopping", loss_value, step)
                stopped_by = "diverged"
                break
            if full_batch and grad_tol is not None and gnorm <= grad_tol:
                converged = True
                stopped_by = "grad_tol"
                break
            opt.step()
            if cbs:
                opt.zero_grad(set_to_none=True)  # callbacks see no stale .grad
            step += 1
            rec = {
                "step": step,
                "epoch": epoch,
                "loss": loss_value,
                "accuracy": float("nan") if acc is None else float(acc),
                "grad_norm": gnorm,
                "lr": cur_lr,
            }
            history.append(rec)
            if run_callbacks(step, dict(rec)):
                stopped_by = "callback"
                break
        if stopped_by is not None:
            break
        epoch += 1
        if eval_every is not None and epoch % eval_every == 0:
            evaluations.append(record_eval(step, epoch))
            logger.info("epoch %d: %s", epoch, evaluations[-1])
        if grad_tol is not None and not full_batch:
            if _full_grad_norm(net, params, x, y, loss_fn, chunk_size) <= grad_tol:
                converged = True
                stopped_by = "grad_tol"

    net.eval()
    final = record_eval(step, epoch)
    final_gn = _full_grad_norm(net, params, x, y, loss_fn, chunk_size)
    if grad_tol is not None and final_gn <= grad_tol:
        converged = True
    config = {
        "loss": loss if isinstance(loss, str) else getattr(loss, "__name__", repr(loss)),
        "optimizer": optimizer if isinstance(optimizer, str) else repr(optimizer),
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "nesterov": nesterov,
        "batch_size": n if full_batch else batch_size,
        "epochs": epochs,
        "steps": steps,
        "grad_tol": grad_tol,
        "milestones": list(milestones),
        "gamma": gamma,
        "seed": seed if generator is None else None,
        "num_train": n,
        "num_test": None if test is None else len(test),
        "device": str(x.device),
        "dtype": str(x.dtype),
    }
    seconds = time.perf_counter() - t0
    logger.info(
        "fit: %d steps, %d epochs, stopped by %s, train loss %.4g, %.2fs",
        step,
        epoch,
        stopped_by,
        final["train_loss"],
        seconds,
    )
    return FitResult(
        model=net,
        history=tuple(history),
        evaluations=tuple(evaluations),
        final_train_loss=float(final["train_loss"]),  # type: ignore[arg-type]
        final_train_accuracy=final["train_accuracy"],
        final_test_loss=final["test_loss"],
        final_test_accuracy=final["test_accuracy"],
        final_grad_norm=final_gn,
        seconds=seconds,
        steps=step,
        epochs=epoch,
        stopped_by=stopped_by or "epochs",
        converged=converged,
        config=config,
    )


# Short notebook-friendly reprs (key numbers, not the tensors): see hesslab.display.
from hesslab import display as _display  # noqa: E402

_display.attach(FitResult, _display.fit_summary)
