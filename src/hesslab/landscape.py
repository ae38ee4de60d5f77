"""Loss landscapes: the line between two solutions and 1-D / 2-D slices.

* :func:`interpolate`: ``L`` (and accuracy, optionally ``λ_max``) along
  ``w(t) = (1 − t) w_A + t w_B`` (Goodfellow et al., 2015; Keskar et al., 2017).
* :func:`slice_1d`, :func:`slice_2d`: ``L(θ + s d)`` and ``L(θ + s d₁ + t d₂)`` along given
  directions (top Hessian eigenvectors, or random filter-normalized directions).
* :func:`filter_normalized_direction`: Li et al. (2018)'s random direction: a Gaussian
  direction whose every filter (row of a Linear weight, output channel of a Conv weight)
  is rescaled to the norm of the corresponding filter of ``θ``; 1-D parameters (biases,
  BatchNorm) are set to zero by default, as in their code. This removes the scale
  ambiguity of Dinh et al. (2017): a rescaled network gets a rescaled direction.

Everything goes through an :class:`~hesslab.Objective` (its data loop and its buffers);
models passed as endpoints only provide parameter values and are never modified.

References:
    Li, Xu, Taylor, Studer, Goldstein (2018), "Visualizing the Loss Landscape of Neural
    Nets", NeurIPS, arXiv:1712.09913.
    Goodfellow, Vinyals, Saxe (2015), "Qualitatively characterizing neural network
    optimization problems", ICLR, arXiv:1412.6544.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from hesslab.errors import ConfigurationError
from hesslab.linalg import eigenpairs
from hesslab.objective import Objective
from hesslab.operators import hessian
from hesslab.rng import resolve_generator

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "InterpolationResult",
    "Slice1D",
    "Slice2D",
    "filter_normalized_direction",
    "interpolate",
    "plot_interpolation",
    "plot_slice_1d",
    "plot_slice_2d",
    "slice_1d",
    "slice_2d",
]

#: default interpolation coefficients: -0.25 .. 1.25 in steps of 0.125
_DEFAULT_TS = tuple(float(t) for t in np.linspace(-0.25, 1.25, 13))


@dataclass(frozen=True)
class InterpolationResult:
    """Quantities along ``w(t) = (1 − t) w_A + t w_B``.

    Attributes:
        t: ``[T]`` coefficients.
        loss: ``[T]`` full-data loss.
        accuracy: ``[T]`` accuracy (``None`` unless requested and a classifier).
        lambda_max: ``[T]`` top Hessian eigenvalue (``None`` unless requested).
        distance: ``‖w_B − w_A‖₂``.
        seconds: wall time.
        info: extra diagnostics (Lanczos products).
    """

    t: tuple[float, ...]
    loss: tuple[float, ...]
    accuracy: tuple[float, ...] | None
    lambda_max: tuple[float, ...] | None
    distance: float
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Slice1D:
    """``L(θ + s d)`` for ``s`` in ``s``.

    Attributes:
        s: ``[T]`` step sizes.
        loss: ``[T]`` losses.
        direction_norm: ``‖d‖₂``.
        seconds: wall time.
    """

    s: tuple[float, ...]
    loss: tuple[float, ...]
    direction_norm: float
    seconds: float


@dataclass(frozen=True)
class Slice2D:
    """``L(θ + a d₁ + b d₂)`` on a grid.

    Attributes:
        a: ``[A]`` coefficients of ``d₁``.
        b: ``[B]`` coefficients of ``d₂``.
        loss: ``[A, B]`` losses (row ``i``: ``a[i]``), a NumPy float64 array.
        seconds: wall time.
    """

    a: tuple[float, ...]
    b: tuple[float, ...]
    loss: np.ndarray
    seconds: float


# --------------------------------------------------------------------------- helpers
def _flat(objective: Objective, w: Any, what: str) -> Tensor:
    """A flat ``[P]`` vector of ``objective``'s parameters from a model, dict or tensor."""
    space = objective.space
    if isinstance(w, nn.Module):
        named = dict(w.named_parameters())
        missing = [n for n in space.names if n not in named]
        if missing:
            raise ConfigurationError(
                f"{what} lacks the objective's parameters {missing}; pass models with the "
                "same architecture as the objective's"
            )
        w = {n: named[n] for n in space.names}
    if isinstance(w, Mapping):
        for n, s in zip(space.names, space.shapes, strict=True):
            if n not in w or tuple(w[n].shape) != tuple(s):
                raise ConfigurationError(f"{what}[{n!r}] is missing or has the wrong shape")
        vec = space.flatten({n: w[n].detach() for n in space.names})
    elif isinstance(w, Tensor):
        vec = w.detach().reshape(-1)
    else:
        raise ConfigurationError(
            f"{what} must be an nn.Module, a {{name: tensor}} dict or a flat tensor, got "
            f"{type(w).__name__}"
        )
    if vec.numel() != space.size:
        raise ConfigurationError(f"{what} has {vec.numel()} entries, expected {space.size}")
    return vec.to(dtype=space.dtype, device=space.device)


def _accuracy(objective: Objective, theta: Mapping[str, Tensor]) -> float | None:
    correct, total = 0, 0
    with torch.no_grad():
        for batch, _ in objective.batches():
            x, y = objective._split(batch)
            if y.is_floating_point():
                return None
            out = objective.forward(theta, x)
            if out.ndim != 2:
                return None
            correct += int((out.argmax(1) == y).sum())
            total += int(y.shape[0])
    return correct / total


def _vector(ts: Any, name: str) -> tuple[float, ...]:
    vals = tuple(float(t) for t in np.asarray(ts, dtype=np.float64).reshape(-1))
    if not vals:
        raise ConfigurationError(f"{name} is empty; pass at least one value")
    return vals


# --------------------------------------------------------------------------- public
def interpolate(
    objective: Objective,
    model_a: nn.Module | Mapping[str, Tensor] | Tensor,
    model_b: nn.Module | Mapping[str, Tensor] | Tensor,
    ts: Sequence[float] | Tensor | np.ndarray = _DEFAULT_TS,
    *,
    metrics: Sequence[str] = ("loss", "accuracy"),
    lambda_max: bool = False,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
) -> InterpolationResult:
    """Loss (accuracy, ``λ_max``) along ``w(t) = (1 − t) w_A + t w_B``.

    Args:
        objective: the loss and data (its buffers, e.g. BatchNorm statistics, are used for
            every ``t``).
        model_a: ``w_A`` (``t = 0``): a model with the objective's parameter names, a
            ``{name: tensor}`` dict or a flat ``[P]`` vector.
        model_b: ``w_B`` (``t = 1``).
        ts: the coefficients (values outside ``[0, 1]`` extrapolate).
        metrics: a subset of ``("loss", "accuracy")``; the loss is always computed.
            Accuracy needs integer class targets and ``[N, C]`` outputs (else ``None``).
        lambda_max: also compute the top Hessian eigenvalue at each ``t`` (Lanczos,
            warm-started from the previous ``t``).
        tol: Lanczos tolerance.
        generator: Lanczos start vector randomness.

    Returns:
        :class:`InterpolationResult`.

    References:
        Goodfellow et al. (2015), arXiv:1412.6544; Keskar et al. (2017), arXiv:1609.04836.
    """
    t0 = time.perf_counter()
    bad = [m for m in metrics if m not in ("loss", "accuracy")]
    if bad:
        raise ConfigurationError(f"unknown metrics {bad}; choose from ('loss', 'accuracy')")
    a = _flat(objective, model_a, "model_a")
    b = _flat(objective, model_b, "model_b")
    tvals = _vector(ts, "ts")
    losses, accs, lams = [], [], []
    v0, nmv = None, 0
    for t in tvals:
        w = (1.0 - t) * a + t * b
        obj = objective.at(w)
        losses.append(obj.value())
        if "accuracy" in metrics:
            accs.append(_accuracy(obj, obj.theta))
        if lambda_max:
            res = eigenpairs(hessian(obj), 1, "largest", tol=tol, v0=v0, generator=generator)
            lams.append(float(res.values[0]))
            v0, nmv = res.vectors, nmv + res.num_matvecs
    acc = tuple(accs) if accs and all(x is not None for x in accs) else None
    return InterpolationResult(
        t=tvals,
        loss=tuple(losses),
        accuracy=acc,  # type: ignore[arg-type]
        lambda_max=tuple(lams) if lambda_max else None,
        distance=float((b - a).norm()),
        seconds=time.perf_counter() - t0,
        info={"num_matvecs": nmv},
    )


def slice_1d(
    objective: Objective,
    direction: Tensor | Mapping[str, Tensor],
    ts: Sequence[float] | Tensor | np.ndarray,
) -> Slice1D:
    """``L(θ + s d)`` for each ``s`` in ``ts`` (``θ`` the objective's parameters).

    Args:
        objective: the loss at ``θ``.
        direction: ``d``, a flat ``[P]`` vector (e.g. a Hessian eigenvector) or a dict.
        ts: the step sizes ``s``.
    """
    t0 = time.perf_counter()
    theta = objective.flat_params()
    d = _flat(objective, direction, "direction")
    svals = _vector(ts, "ts")
    losses = tuple(objective.at(theta + s * d).value() for s in svals)
    return Slice1D(
        s=svals, loss=losses, direction_norm=float(d.norm()), seconds=time.perf_counter() - t0
    )


def slice_2d(
    objective: Objective,
    d1: Tensor | Mapping[str, Tensor],
    d2: Tensor | Mapping[str, Tensor],
    grid: Sequence[float] | tuple[Sequence[float], Sequence[float]] | np.ndarray,
) -> Slice2D:
    """``L(θ + a d₁ + b d₂)`` on the grid ``a × b``.

    Args:
        objective: the loss at ``θ``.
        d1: first direction (flat ``[P]`` or dict).
        d2: second direction.
        grid: one sequence used for both axes, or a pair ``(a_values, b_values)``.
    """
    t0 = time.perf_counter()
    if isinstance(grid, tuple) and len(grid) == 2 and np.ndim(grid[0]) == 1:
        avals, bvals = _vector(grid[0], "grid[0]"), _vector(grid[1], "grid[1]")
    else:
        avals = bvals = _vector(grid, "grid")
    theta = objective.flat_params()
    u = _flat(objective, d1, "d1")
    v = _flat(objective, d2, "d2")
    out = np.empty((len(avals), len(bvals)), dtype=np.float64)
    for i, a in enumerate(avals):
        for j, b in enumerate(bvals):
            out[i, j] = objective.at(theta + a * u + b * v).value()
    return Slice2D(a=avals, b=bvals, loss=out, seconds=time.perf_counter() - t0)


def filter_normalized_direction(
    model_or_objective: nn.Module | Objective,
    generator: torch.Generator,
    *,
    ignore_1d: bool = True,
) -> Tensor:
    """A random filter-normalized direction (Li et al., 2018).

    ``d ~ N(0, I)``, then for every filter ``i`` of every weight with ``ndim ≥ 2`` (rows of
    a Linear weight, output channels of a Conv weight): ``d_i ← d_i ‖θ_i‖ / ‖d_i‖``.
    Parameters with ``ndim ≤ 1`` (biases, BatchNorm) get 0 (``ignore_1d=True``, as in
    the authors' code) or are normalized as a whole.

    Args:
        model_or_objective: an :class:`~hesslab.Objective` (its selected parameters) or a
            model (all parameters with ``requires_grad``).
        generator: source of randomness (a CPU generator; the result is moved to the
            parameters' device).
        ignore_1d: zero the 1-D parameters instead of normalizing them.

    Returns:
        The flat ``[P]`` direction, in the parameters' dtype and device.

    References:
        Li et al. (2018), arXiv:1712.09913, §4.
    """
    if isinstance(model_or_objective, Objective):
        names = model_or_objective.space.names
        params = [model_or_objective.theta[n] for n in names]
    elif isinstance(model_or_objective, nn.Module):
        params = [p for p in model_or_objective.parameters() if p.requires_grad]
    else:
        raise ConfigurationError(
            f"pass a model or an Objective, got {type(model_or_objective).__name__}"
        )
    generator = resolve_generator(generator, required=True)
    parts = []
    for p in params:
        p = p.detach()
        d = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        ref = p.to(device="cpu", dtype=torch.float64)
        if p.ndim <= 1:
            d = torch.zeros_like(d) if ignore_1d else d * (ref.norm() / d.norm().clamp_min(1e-300))
        else:
            dn = d.reshape(d.shape[0], -1).norm(dim=1).clamp_min(1e-300)
            rn = ref.reshape(ref.shape[0], -1).norm(dim=1)
            d = d * (rn / dn).reshape(-1, *([1] * (d.ndim - 1)))
        parts.append(d.reshape(-1))
    first = params[0]
    return torch.cat(parts).to(dtype=first.dtype, device=first.device)


# --------------------------------------------------------------------------- plots
def plot_interpolation(result: InterpolationResult, *, title: str | None = None) -> Figure:
    """Loss (and accuracy / ``λ_max`` on the right axis) along the line."""
    from hesslab.report.plots import plot_line_scan

    secondary: dict[str, Any] = {}
    if result.accuracy is not None:
        secondary["accuracy"] = result.accuracy
    if result.lambda_max is not None:
        secondary["λ_max"] = result.lambda_max
    return plot_line_scan(
        result.t,
        {"loss": result.loss},
        secondary=secondary or None,
        secondary_label=" / ".join(secondary) or None,
        title=title or "Linear interpolation",
    )


def plot_slice_1d(
    slices: Mapping[str, Slice1D], *, title: str | None = "1-D slices", log_y: bool = False
) -> Figure:
    """Losses of several 1-D slices that share their step sizes."""
    from hesslab.report.plots import plot_line_scan

    if not slices:
        raise ConfigurationError("slices is empty")
    first = next(iter(slices.values()))
    return plot_line_scan(
        first.s,
        {k: v.loss for k, v in slices.items()},
        endpoint_labels=None,
        title=title,
        xlabel="s  (θ + s·d)",
        log_y=log_y,
    )


def plot_slice_2d(
    result: Slice2D, *, title: str | None = "2-D slice", levels: int = 20, log: bool = False
) -> Figure:
    """Filled contours of a 2-D slice (``d₁`` horizontal, ``d₂`` vertical)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from hesslab.report.plots import log_axis_values

    fig = Figure(figsize=(5.6, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    # log: a loss that is 0 within rounding is a blank cell, not log10(1e-300) = -300
    z = np.log10(log_axis_values(result.loss)) if log else result.loss
    A, B = np.meshgrid(np.asarray(result.a), np.asarray(result.b), indexing="ij")
    cs = ax.contourf(A, B, z, levels=levels, cmap="viridis")
    ax.contour(A, B, z, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
    cbar = fig.colorbar(cs, ax=ax)
    cbar.set_label("log10 loss" if log else "loss")
    ax.plot([0.0], [0.0], marker="*", color="w", markersize=10, markeredgecolor="k")
    ax.set_xlabel("a  (θ + a·d₁ + b·d₂)")
    ax.set_ylabel("b")
    if title:
        ax.set_title(title)
    return fig


# Short notebook-friendly reprs (key numbers, not the arrays): see hesslab.display.
from hesslab import display as _display  # noqa: E402

_display.attach(InterpolationResult, _display.interpolation_summary)
_display.attach(Slice1D, _display.slice_summary)
_display.attach(Slice2D, _display.slice_summary)
