"""Input validation at the library boundary: pure checks, each raising a specific error.

hesslab validates once, where values enter: the :class:`~hesslab.Objective` checks its
parameters, every batch of its data and the first batch's loss and gradient at
construction; criterion losses check their targets on every batch; curvature operators
check every batch's product; symmetric eigensolvers check the operator's ``symmetric``
flag. Every check raises a :class:`~hesslab.HesslabError` subclass whose message says
what is wrong, where (parameter name, batch index) and what to do.

Cost: a finiteness check is one ``torch.isfinite(t).all()`` reduction over the tensor
(one pass, no copy of the tensor kept) and one host synchronisation to read the verdict;
on CUDA that sync waits for the queued kernels, once per batch and product. The target
check is one reduction over the labels. Both are small next to a Hessian-vector product.
Checks on tensors that live inside :mod:`torch.func` transforms (``vmap``'d per-sample
targets) check shapes only: their values cannot be read there (the gradient-moment
operator therefore checks each batch's targets once, outside ``vmap``).

Decisions:
    * MSE-type targets never broadcast. The one reshape is exact and unambiguous: targets
      ``[N]`` for outputs ``[N, 1]`` (one output per point, the layout of a regression
      ``.npz``) are read as ``[N, 1]``, as :func:`hesslab.train.fit` always did.
    * A loss without a gradient path to the selected parameters (``argmax``), or whose
      outputs have an exactly zero Jacobian (``round``), is an error at construction,
      whatever the product mode. An exactly zero gradient alone is not (an interpolating
      minimum has one), and a block of a valid objective
      (:meth:`~hesslab.Objective.restrict`) may be zero (an unused head).
    * Non-finite values are errors, never skipped or zeroed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hesslab.batches import batch_tensors
from hesslab.errors import (
    ConfigurationError,
    DataError,
    HesslabError,
    MemoryLimitError,
    NonDifferentiableError,
    NonFiniteError,
    NonSymmetricError,
    ParameterSelectionError,
    SharedModuleError,
    TargetError,
)

__all__ = [
    "DENSE_MAX_BYTES",
    "check_batch_finite",
    "check_batch_loss",
    "check_dense_size",
    "check_device",
    "check_finite",
    "check_gradient_graph",
    "check_labels",
    "check_nonempty_selection",
    "check_objective",
    "check_scalar_loss",
    "check_targets",
    "check_tensors_finite",
    "check_unshared",
    "require_symmetric",
]

#: default memory limit of :meth:`LinearOperator.to_dense` (bytes): 4 GiB
DENSE_MAX_BYTES = 4 * 2**30

_WHAT_TO_CHECK = (
    "Check for NaN/inf weights (a diverged model: lower the learning rate or reload a "
    "checkpoint), NaN/inf in the data, and overflow in the model (e.g. float16: use float32)"
)


_is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", lambda t: False)


def _readable(t: Tensor) -> bool:
    """Whether ``t``'s values can be read (not a tensor wrapped by a torch.func transform)."""
    return not _is_wrapped(t)


def _where(batch_index: int | None) -> str:
    return "" if batch_index is None else f" on batch {batch_index}"


def check_finite(t: Tensor, what: str, *, batch_index: int | None = None) -> None:
    """Raise :class:`NonFiniteError` if ``t`` holds NaN or inf.

    One ``isfinite().all()`` reduction and one host sync (see the module docstring); the
    counts in the message are computed only when the check fails.

    Args:
        t: any tensor (integer tensors pass: they hold no NaN).
        what: what ``t`` is, for the message (``"the loss"``, ``"the Hessian product"``).
        batch_index: the batch it comes from, if any.
    """
    if not t.is_floating_point() and not t.is_complex():
        return
    if not _readable(t) or bool(torch.isfinite(t.detach()).all()):
        return
    d = t.detach()
    nan, inf = int(torch.isnan(d).sum()), int(torch.isinf(d).sum())
    raise NonFiniteError(
        f"{what}{_where(batch_index)} is not finite ({nan} NaN and {inf} inf of {d.numel()} "
        f"entries). {_WHAT_TO_CHECK}"
    )


def check_tensors_finite(tensors: Mapping[str, Tensor], kind: str) -> None:
    """:func:`check_finite` on each named tensor (``kind`` is e.g. ``"parameter"``)."""
    for name, t in tensors.items():
        check_finite(t, f"{kind} {name!r}")


def check_batch_finite(tensors: Iterable[Tensor], batch_index: int) -> None:
    """:func:`check_finite` on every floating tensor of one batch of data."""
    for t in tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise NonFiniteError(
                f"the data hold NaN or inf on batch {batch_index} (a tensor of shape "
                f"{tuple(t.shape)}): clean or drop those points (e.g. torch.nan_to_num, or a "
                "mask over torch.isfinite(x).all(1))"
            )


def check_scalar_loss(loss: Any) -> None:
    """The loss of a batch must be a real scalar tensor."""
    if not isinstance(loss, Tensor) or loss.numel() != 1 or not loss.is_floating_point():
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise TargetError(
            f"the loss of a batch must be a floating-point scalar, got {shape}; reduce it "
            "with .mean() or .sum() (and pass reduction= accordingly)"
        )


# ---------------------------------------------------------------------- targets
def _ce_targets(outputs: Tensor, targets: Tensor, ignore_index: int) -> None:
    cls_dim = 0 if outputs.ndim == 1 else 1
    C = int(outputs.shape[cls_dim])
    if targets.is_floating_point():
        if targets.shape != outputs.shape:
            raise TargetError(
                f"cross-entropy got floating targets of shape {tuple(targets.shape)} for "
                f"outputs {tuple(outputs.shape)}: pass class indices (integer tensor of shape "
                f"{_index_shape(outputs)}) or class probabilities of the outputs' shape"
            )
        return
    want = _index_shape(outputs)
    if tuple(targets.shape) != want:
        raise TargetError(
            f"cross-entropy targets have shape {tuple(targets.shape)} but outputs "
            f"{tuple(outputs.shape)} need class indices of shape {want}: check that the "
            "targets belong to these inputs (one label per point)"
        )
    _label_range(targets, C, ignore_index, "cross-entropy")


def _index_shape(outputs: Tensor) -> tuple[int, ...]:
    if outputs.ndim == 1:
        return ()
    return (int(outputs.shape[0]), *(int(s) for s in outputs.shape[2:]))


def _label_range(targets: Tensor, C: int, ignore_index: int | None, loss: str) -> None:
    if not _readable(targets) or targets.numel() == 0:
        return
    bad = (targets < 0) | (targets >= C)
    if ignore_index is not None:
        bad &= targets != ignore_index
    if bool(bad.any()):
        values = targets[bad]
        raise TargetError(
            f"{loss} labels must be in 0..{C - 1} (the model has {C} outputs), but "
            f"{int(values.numel())} labels are outside (min {int(values.min())}, max "
            f"{int(values.max())}): relabel the data to 0..{C - 1} or give the model as many "
            "outputs as classes"
        )


def check_labels(targets: Tensor, num_classes: int, ignore_index: int | None) -> None:
    """Integer class labels are in ``0..num_classes-1`` or equal ``ignore_index``.

    Pass the batch's targets as the data gave them: a view taken inside a ``torch.func``
    transform is wrapped and cannot be read (the check is then skipped).
    """
    if not targets.is_floating_point():
        _label_range(targets, int(num_classes), ignore_index, "cross-entropy")


def _mse_targets(outputs: Tensor, targets: Tensor) -> Tensor:
    if not targets.is_floating_point():
        if outputs.ndim != 2 or tuple(targets.shape) != (int(outputs.shape[0]),):
            raise TargetError(
                f"MSE with integer targets one-hot encodes class labels and needs outputs "
                f"[N, C] with labels [N]; got outputs {tuple(outputs.shape)} and labels "
                f"{tuple(targets.shape)}. Pass floating targets of the outputs' shape for "
                "regression"
            )
        _label_range(targets, int(outputs.shape[1]), None, "MSE (one-hot)")
        return targets
    return _same_shape(outputs, targets, "MSE")


#: element-wise regression criteria whose targets must match the outputs (PyTorch
#: broadcasts them with only a warning)
_ELEMENTWISE = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)


def _same_shape(outputs: Tensor, targets: Tensor, loss: str) -> Tensor:
    if targets.shape == outputs.shape:
        return targets
    if outputs.shape == (*targets.shape, 1):  # one output per point: [N] -> [N, 1], exact
        return targets.unsqueeze(-1)
    if targets.shape == (*outputs.shape, 1):
        return targets.squeeze(-1)
    raise TargetError(
        f"{loss} targets of shape {tuple(targets.shape)} do not match outputs "
        f"{tuple(outputs.shape)}: PyTorch would broadcast them to "
        f"{_broadcast(outputs, targets)} and compare outputs with other points' targets. "
        "Reshape the targets to the outputs' shape (one target per output)"
    )


def _broadcast(a: Tensor, b: Tensor) -> str:
    try:
        return str(tuple(torch.broadcast_shapes(a.shape, b.shape)))
    except RuntimeError:
        return "nothing (the shapes are incompatible)"


def check_targets(
    kind: str,
    outputs: Tensor,
    targets: Tensor,
    criterion: Any = None,
    *,
    ignore_index: int | None = None,
) -> Any:
    """Check the targets of a built-in loss against the model outputs; return the targets.

    * cross-entropy (``kind="ce"``, an ``nn.CrossEntropyLoss`` or ``nn.NLLLoss``): integer
      labels of shape ``[N, *extra]`` for outputs ``[N, C, *extra]`` with values in
      ``0..C-1`` or equal to the criterion's ``ignore_index``; or probabilities of the
      outputs' shape.
    * MSE: floating targets of the outputs' shape, or integer labels ``[N]`` in
      ``0..C-1`` for outputs ``[N, C]`` (one-hot encoded by the caller). Shapes that
      differ by one trailing singleton dimension only (targets ``[N]`` for outputs
      ``[N, 1]``, the usual regression layout, or ``[N, 1]`` for ``[N]``) are exact:
      the targets are returned reshaped to the outputs' shape. Any other mismatch is an
      error, never a broadcast (outputs ``[N, 1]`` against targets ``[N]`` broadcast to
      ``[N, N]`` in PyTorch and compare every output with every target).
    * ``nn.L1Loss``, ``nn.SmoothL1Loss``, ``nn.HuberLoss`` with floating targets: the
      same shape rule as MSE.
    * other criteria: not checked (their own code decides).

    Args:
        kind: the loss kind (``"ce"``, ``"mse"``, ``"criterion"``, ``"custom"``).
        outputs: the model outputs of the batch.
        targets: the batch's targets.
        criterion: the loss function (its ``ignore_index`` is read for cross-entropy).
        ignore_index: the label cross-entropy skips (default: the criterion's, else -100).

    Returns:
        ``targets``, reshaped as described for MSE, otherwise unchanged.

    Raises:
        TargetError: the message gives the shapes or the offending label range.
    """
    if not isinstance(outputs, Tensor) or not isinstance(targets, Tensor):
        return targets
    if kind == "mse":
        return _mse_targets(outputs, targets)
    if kind == "ce" or isinstance(criterion, (nn.CrossEntropyLoss, nn.NLLLoss)):
        if ignore_index is None:
            ignore_index = int(getattr(criterion, "ignore_index", -100))
        _ce_targets(outputs, targets, ignore_index)
    elif isinstance(criterion, _ELEMENTWISE) and targets.is_floating_point():
        return _same_shape(outputs, targets, type(criterion).__name__)
    return targets


# ---------------------------------------------------------------- the objective
def check_gradient_graph(loss: Tensor, grads: Iterable[Tensor | None], names: Any) -> None:
    """Raise :class:`NonDifferentiableError` if the loss does not depend on the parameters.

    ``grads`` are ``torch.autograd.grad(loss, params, allow_unused=True)``: all ``None``
    (or a loss without ``grad_fn``) means the graph from the parameters to the loss is cut,
    and every derivative (forward-over-reverse included) would silently be zero.
    """
    if loss.requires_grad and any(g is not None for g in grads):
        return
    raise NonDifferentiableError(
        f"the loss is not a differentiable function of the selected parameters "
        f"{list(names)[:4]}{'...' if len(list(names)) > 4 else ''}: the gradient graph is "
        "disconnected (an argmax, round, .detach(), .item() or integer outputs in the "
        "forward pass), so every gradient and curvature would be zero. Make the forward "
        "pass differentiable, or select parameters the loss depends on (params=)"
    )


def check_objective(objective: Any) -> None:
    """Construction-time checks of an :class:`~hesslab.Objective`.

    Its parameters and buffers are finite; on the first batch, the loss is a finite
    scalar, its gradient graph reaches the selected parameters and the gradient is
    finite. (Every batch's data were checked by the scan; later batches' losses are
    checked by the products.) Costs one forward and one backward pass on one batch.
    """
    check_tensors_finite(objective.theta, "parameter")
    check_tensors_finite(objective.frozen, "frozen parameter or buffer")
    batch, _ = next(objective.batches())
    names = objective.space.names
    leaves = {n: t.detach().requires_grad_(True) for n, t in objective.theta.items()}
    with torch.enable_grad():
        loss = _first_loss(objective, leaves, batch)
        check_scalar_loss(loss)
        check_finite(loss, "the loss", batch_index=0)
        if loss.requires_grad:
            grads = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True)
        else:
            grads = ()
    check_gradient_graph(loss, grads, names)
    for n, g in zip(names, grads, strict=True):
        if g is not None:
            check_finite(g, f"the gradient of {n!r}", batch_index=0)
    if objective.loss.kind != "custom" and not any(g is not None and bool(g.any()) for g in grads):
        _check_outputs_move(objective, batch)  # only when the gradient is exactly zero


def _first_loss(objective: Any, leaves: Mapping[str, Tensor], batch: Any) -> Tensor:
    """The first batch's loss.

    A failing forward pass (data that do not fit the model) is reported as a
    :class:`DataError` naming the batch's shapes, the cause chained.
    """
    try:
        return objective.batch_loss(leaves, batch)
    except HesslabError:
        raise
    except (RuntimeError, IndexError) as e:
        shapes = [tuple(t.shape) for t in batch_tensors(batch)]
        raise DataError(
            f"evaluating the loss on the first batch (tensors of shapes {shapes}) failed: "
            f"{type(e).__name__}: {str(e).splitlines()[0][:300]}. Check that the data fit the "
            "model (input size, number of classes, dtype) and that the loss suits the targets"
        ) from e


def check_batch_loss(objective: Any, batch: Any, batch_index: int) -> None:
    """One forward pass without gradients on a prepared batch: targets readable, loss finite.

    Its targets pass :func:`check_targets` with readable values and its loss is finite (for
    operators whose products run inside ``vmap``, where values cannot be read).
    """
    if objective.loss.kind == "custom":
        return
    with torch.no_grad():
        check_finite(
            objective.batch_loss(objective.theta, batch), "the loss", batch_index=batch_index
        )


def _check_outputs_move(objective: Any, batch: Any) -> None:
    """Raise if ``J^T u = 0`` for the outputs' Jacobian ``J`` and a fixed cotangent ``u``.

    Run only when the first batch's gradient is exactly zero: that is legitimate at an
    interpolating minimum (targets equal to the outputs), where ``J`` is not zero, but
    a sign of a step function (round, sign, floor) when ``J`` is.
    """
    names = objective.space.names
    x, _ = objective._split(batch)
    leaves = {n: t.detach().requires_grad_(True) for n, t in objective.theta.items()}
    with torch.enable_grad():
        out = objective.forward(leaves, x)
        if isinstance(out, Tensor) and out.requires_grad:
            ramp = torch.arange(out.numel(), dtype=out.dtype, device=out.device)
            u = (1 + ramp / max(out.numel(), 1)).reshape(out.shape)  # no symmetry to cancel
            gs = torch.autograd.grad(out, [leaves[n] for n in names], u, allow_unused=True)
            if any(g is not None and bool(g.any()) for g in gs):
                return
    raise NonDifferentiableError(
        f"the model outputs do not change with the selected parameters {list(names)[:4]}: "
        "their derivative is exactly zero (a step function such as round, sign or floor in "
        "the forward pass, or units that are all dead), so every gradient and curvature "
        "is zero. Make the forward pass differentiable, or select other parameters (params=)"
    )


def check_nonempty_selection(params: Any) -> None:
    """An explicitly empty parameter selection (``[]``, ``()``) is an error."""
    if isinstance(params, (list, tuple, set, frozenset)) and len(params) == 0:
        raise ParameterSelectionError(
            "params is empty: it selects no parameter. Pass None for all trainable "
            "parameters, or names, glob patterns or submodules"
        )


# -------------------------------------------------------------------- operators
def require_symmetric(op: Any, method: str) -> None:
    """Refuse an operator whose ``symmetric`` flag is ``False`` in a symmetric-only method."""
    if getattr(op, "symmetric", True):
        return
    raise NonSymmetricError(
        f"{method} assumes a symmetric operator, but {op!r} has symmetric=False: its "
        "results would be meaningless. Symmetrize it ((A + A.T) / 2), pass symmetric=True "
        "to DenseOperator if the asymmetry is rounding error, or use torch.linalg.eigvals "
        "for a general matrix"
    )


def check_k_tol(P: int, k: Any, tol: Any) -> int:
    """``k`` as an int in ``[1, P]``, with ``tol`` a finite number ``>= 0`` (eigensolvers).

    Raises:
        ConfigurationError: naming the bad argument and its allowed range.
    """
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= P:
        raise ConfigurationError(f"k must be an integer in [1, P={P}], got {k!r}")
    if not (isinstance(tol, (int, float)) and tol >= 0 and math.isfinite(tol)):
        raise ConfigurationError(f"tol must be a finite number >= 0, got {tol!r}")
    return int(k)


def check_dense_size(P: int, dtype: torch.dtype, max_bytes: int | None) -> None:
    """Refuse to materialise a ``[P, P]`` matrix above ``max_bytes`` (``None``: no limit)."""
    if max_bytes is None:
        return
    need = P * P * torch.empty((), dtype=dtype).element_size()
    if need > max_bytes:
        raise MemoryLimitError(
            f"to_dense would allocate a [{P}, {P}] {dtype} matrix: {need} bytes "
            f"({_human(need)}), above the limit of {max_bytes} bytes ({_human(max_bytes)}). "
            "Use the matrix-free methods (eigenpairs, trace, "
            "spectral_density, diagonal) or a block (op.restrict(params)), or pass "
            "to_dense(max_bytes=None) to allocate anyway"
        )


def _human(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def check_device(device: Any) -> torch.device:
    """Parse a device and check that it exists here (``"cuda:3"`` on a 2-GPU machine, ...)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigurationError(
            f"{device!r} is not a device ({e}); use e.g. 'cpu', 'cuda' or 'cuda:0'"
        ) from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index is not None and dev.index >= count):
            fix = "use 'cpu'" if count == 0 else f"use 'cpu' or cuda:0..cuda:{count - 1}"
            raise ConfigurationError(
                f"device {str(dev)!r} is not available here ({count} CUDA devices visible); {fix}"
            )
    return dev


# ----------------------------------------------------------------------- models
def check_unshared(model: nn.Module, what: str) -> None:
    """Refuse a model that reuses a module or a parameter at several places.

    ``named_modules()`` and ``named_parameters()`` list a shared object once, so code that
    walks them (e.g. :func:`hesslab.reparam.rescale`) would transform it once although the
    forward pass applies it several times.
    """
    seen: dict[int, str] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if id(m) in seen and next(m.parameters(recurse=False), None) is not None:
            raise SharedModuleError(
                f"module {seen[id(m)]!r} ({type(m).__name__}) is used again as {name!r}: "
                f"{what} cannot handle a module applied several times (each use sees a "
                "differently scaled input). Use separate modules (copy.deepcopy)"
            )
        seen.setdefault(id(m), name)
    params: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in params:
            raise SharedModuleError(
                f"parameter {params[id(p)]!r} is shared with {name!r} (tied weights): "
                f"{what} cannot handle tied parameters. Untie them first"
            )
        params[id(p)] = name
