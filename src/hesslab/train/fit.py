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

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from hesslab.data.datasets import Split, TensorData
from hesslab.errors import ConfigurationError
from hesslab.train._loop import (
    SAMPLINGS,
    Callback,
    LabelNoise,
    Penalty,
    Projection,
    Run,
    Settings,
    check_options,
    check_penalty,
    full_grad_norm,
    logger,
    prepare,
    record_eval,
    run_loop,
)
from hesslab.train._passes import LossSpec, evaluate, resolve_loss

__all__ = ["SAMPLINGS", "Callback", "FitResult", "LabelNoise", "Penalty", "Projection",
           "evaluate", "fit", "resolve_loss"]  # fmt: skip

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


def _describe(spec: Any) -> Any:
    if spec is None or isinstance(spec, (str, int, float)):
        return spec
    return getattr(spec, "__name__", None) or type(spec).__name__


def _result(run: Run, config: dict[str, Any], t0: float) -> FitResult:
    """Final evaluation (eval mode), the full-batch gradient norm and the record."""
    s = run.settings
    run.net.eval()
    final = record_eval(run)
    x, y = run.train.tensors
    final_gn = full_grad_norm(run.net, run.params, x, y, s.loss_fn, s.chunk_size)
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
    check_options(
        epochs=epochs, steps=steps, batch_size=batch_size, lr=lr, grad_tol=grad_tol,
        dtype=dtype, eval_every=eval_every, sampling=sampling, label_noise=label_noise,
    )  # fmt: skip
    net, train, test = prepare(model, data, eval_data, device=device, dtype=dtype, inplace=inplace)
    params = [p for p in net.parameters() if p.requires_grad]
    opt, gd = _make_optimizer(
        optimizer, params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
    )
    settings = Settings(
        loss_fn=resolve_loss(loss), full_batch=gd or batch_size is None,
        batch_size=len(train) if batch_size is None else int(batch_size), sampling=sampling,
        epochs=epochs, steps=steps, grad_tol=grad_tol,
        milestones=tuple(sorted(int(m) for m in milestones)), gamma=gamma,
        chunk_size=chunk_size, eval_every=eval_every, penalty=penalty,
        label_noise=label_noise, project=project,
    )  # fmt: skip
    check_penalty(settings, len(train))
    run = Run(
        net=net, params=params, opt=opt, train=train, test=test,
        gen=generator if generator is not None else torch.Generator().manual_seed(seed),
        callbacks=[callbacks] if callable(callbacks) else list(callbacks), settings=settings,
    )  # fmt: skip
    run_loop(run)
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
