"""Sharpness measures: Keskar's ε-sharpness and scale-invariant curvature measures.

ε-sharpness (Keskar et al., 2017) of the loss ``L`` at ``θ``::

    S_ε(θ) = max_{θ' ∈ C_ε(θ)} (L(θ') − L(θ)) / (1 + L(θ)),

with ``C_ε`` the L2 ball ``‖θ' − θ‖ ≤ ε`` (default) or Keskar's box
``|θ'_j − θ_j| ≤ ε (|θ_j| + 1)``. It is estimated from below by projected gradient ascent
(the best point seen is kept). Keskar et al. report ``100 · S_ε``; hesslab returns ``S_ε``.

Scale (in)variance (Dinh et al., 2017). A function-preserving rescaling
(:func:`hesslab.reparam.rescale`) acts as ``θ ↦ Dθ`` with ``D`` diagonal, constant
``d_p`` on each parameter tensor ``p``, and ``∇²L(Dθ) = D⁻¹∇²L(θ)D⁻¹`` (exactly, at any
``θ``, for this linear map). Hence

* ``λ_max(H)``, ``tr(H)`` and ``S_ε`` are **not** invariant: blocks scale by ``d_p⁻²``.
* ``Σ_j θ_j² H_jj = tr(ΘHΘ)``, ``Θ = diag(θ)``, **is** invariant, and so is the whole
  operator ``ΘHΘ`` (diagonal matrices commute: ``(DΘ)(D⁻¹HD⁻¹)(DΘ) = ΘHΘ``), hence also
  ``λ_max(ΘHΘ)`` (Li et al., 2019 use ``Σ_j θ_j² H_jj`` as a building block).
* Per tensor ``p``: ``H_pp → d_p⁻² H_pp`` and ``‖θ_p‖² → d_p² ‖θ_p‖²``, so
  ``λ_max(H_pp)·‖θ_p‖²`` and ``tr(H_pp)·‖θ_p‖²/P_p`` are invariant. (Whole-layer blocks
  mixing a weight and its bias are invariant only when the two have the same factor.)

Because the transformation of each invariant quantity is an exact scalar factor (or a
similarity that cancels), stochastic estimates computed with the same generator seed are
invariant up to rounding, not just in expectation.

References:
    Keskar, Mudigere, Nocedal, Smelyanskiy, Tang (2017), "On Large-Batch Training for Deep
    Learning: Generalization Gap and Sharp Minima", ICLR, arXiv:1609.04836.
    Dinh, Pascanu, Bengio, Bengio (2017), "Sharp Minima Can Generalize For Deep Nets",
    ICML, arXiv:1703.04933.
    Li, Wang, Yu (2019), scale-invariant flatness via ``Σ θ_j² H_jj``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from hesslab.errors import ConfigurationError
from hesslab.linalg import diagonal, eigenpairs, trace
from hesslab.objective import Objective
from hesslab.operators import ggn as _ggn
from hesslab.operators import hessian as _hessian
from hesslab.operators.base import FunctionOperator, LinearOperator
from hesslab.rng import resolve_generator

__all__ = [
    "InvariantEstimate",
    "LayerSharpness",
    "SharpnessResult",
    "epsilon_sharpness",
    "layer_normalized_sharpness",
    "scale_invariant_operator",
    "scale_invariant_trace",
]

Curvature = Literal["hessian", "ggn"]


@dataclass(frozen=True)
class SharpnessResult:
    """Keskar's ε-sharpness estimated by projected gradient ascent.

    Attributes:
        value: ``(max L(θ') − L(θ)) / (1 + L(θ))`` over the iterates (a lower bound on the
            true maximum over the set).
        loss: ``L(θ)``.
        max_loss: the largest ``L(θ')`` seen.
        eps: the radius ``ε``.
        box: Keskar's box ``|θ'_j − θ_j| ≤ ε(|θ_j| + 1)`` if true, else the L2 ball.
        num_steps: ascent steps taken.
        distance: ``‖θ' − θ‖₂`` of the maximizing point.
        losses: ``L`` at the start point and after every step.
        num_gradients: full-data gradient evaluations (each also gives the loss).
        seconds: wall time.
        info: extra diagnostics (``lr``, ``random_start``, ``stopped``).
    """

    value: float
    loss: float
    max_loss: float
    eps: float
    box: bool
    num_steps: int
    distance: float
    losses: tuple[float, ...]
    num_gradients: int
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InvariantEstimate:
    """A scale-invariant curvature measure with its standard error.

    Attributes:
        value: the estimate.
        stderr: its standard error (0 for exact methods).
        num_matvecs: curvature products used.
        seconds: wall time.
        method: how it was computed (``"exact"``, ``"krylov"``, ...).
        info: extra diagnostics.
    """

    value: float
    stderr: float
    num_matvecs: int
    seconds: float
    method: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerSharpness:
    """Per-parameter-tensor curvature, raw and normalized by the tensor's squared norm.

    Attributes:
        name: the parameter tensor.
        size: its number of entries ``P_p``.
        norm_sq: ``‖θ_p‖²``.
        lambda_max: ``λ_max(H_pp)`` (not invariant).
        trace: ``tr(H_pp)`` (not invariant).
        trace_stderr: standard error of ``trace``.
        normalized_lambda_max: ``λ_max(H_pp)·‖θ_p‖²`` (invariant under rescaling).
        normalized_trace: ``tr(H_pp)·‖θ_p‖²/P_p`` (invariant under rescaling).
        num_matvecs: products used for this tensor.
    """

    name: str
    size: int
    norm_sq: float
    lambda_max: float
    trace: float
    trace_stderr: float
    normalized_lambda_max: float
    normalized_trace: float
    num_matvecs: int


# --------------------------------------------------------------------------- helpers
def _value_and_grad(obj: Objective, theta: Tensor) -> tuple[float, Tensor]:
    """``L(θ)`` and ``∇L(θ)`` (flat) in one pass over the objective's data."""
    space = obj.space
    params = space.unflatten(theta)
    g = torch.zeros(space.size, dtype=space.dtype, device=space.device)
    total = 0.0
    for batch, w in obj.batches():
        leaves = {n: t.detach().requires_grad_(True) for n, t in params.items()}
        loss = obj.batch_loss(leaves, batch)
        grads = torch.autograd.grad(loss, [leaves[n] for n in space.names])
        g += w * space.flatten(grads)
        total += w * float(loss.detach())
    return total, g


def _check_generator(generator: torch.Generator | None) -> torch.Generator:
    return resolve_generator(generator, required=True)


def _curvature(objective: Objective, curvature: str) -> LinearOperator:
    if curvature == "hessian":
        return _hessian(objective)
    if curvature == "ggn":
        return _ggn(objective)
    raise ConfigurationError(f"curvature must be 'hessian' or 'ggn', got {curvature!r}")


# --------------------------------------------------------------------------- ε-sharpness
def epsilon_sharpness(
    objective: Objective,
    eps: float,
    *,
    steps: int = 20,
    lr: float | None = None,
    generator: torch.Generator | None = None,
    box: bool = False,
    random_start: bool = True,
    callback: Callable[[int, float], None] | None = None,
) -> SharpnessResult:
    r"""Keskar et al.'s ε-sharpness by projected gradient ascent.

    ``S_ε(θ) = max_{θ'∈C_ε} (L(θ') − L(θ)) / (1 + L(θ))``. Ascent on ``δ = θ' − θ``:

    * L2 ball: ``δ ← Π_ε(δ + lr·ε·g/‖g‖)``, ``Π_ε`` the projection onto ``‖δ‖ ≤ ε``.
      Normalized steps make ``lr`` dimensionless; near a quadratic maximum
      (``L = ½θᵀAθ``) the iteration is a damped power iteration and
      ``S_ε → ½ε²λ_max(A)/(1 + L)``.
    * Box: ``δ ← clip(δ + lr·r⊙sign(g), −r, r)`` with ``r_j = ε(|θ_j| + 1)`` (signed,
      L∞-style steps, as in PGD).

    At a critical point the gradient vanishes, so by default the ascent starts from a
    random point of the set (uniform direction on the sphere of radius ``ε/2``, or a
    uniform point of the half box). The best point over the iterates is returned.

    Args:
        objective: the loss (only ``.theta``, ``.space``, ``.batches()``, ``.batch_loss()``
            are used; the model is never touched).
        eps: the radius ``ε > 0``.
        steps: ascent steps (each one full-data gradient).
        lr: step size as a fraction of the radius (default 1.0 for the ball, 0.25 for the
            box).
        generator: source of the random start (required when ``random_start``).
        box: use Keskar's box instead of the L2 ball.
        random_start: start from a random point of the set instead of ``θ``.
        callback: ``callback(step, loss)`` after every step.

    Returns:
        :class:`SharpnessResult`.

    Raises:
        ConfigurationError: non-positive ``eps``/``lr``, negative ``steps``, or no
            ``generator`` with ``random_start``.

    References:
        Keskar et al. (2017), arXiv:1609.04836, Metric 2.1.
    """
    t0 = time.perf_counter()
    eps, lr = _check_ascent(eps, steps, lr, box)
    theta = objective.flat_params().detach()
    radius = eps * (theta.abs() + 1.0) if box else None
    base, grad = _value_and_grad(objective, theta)
    delta = torch.zeros_like(theta)
    seen = _Ascent(base, delta)
    if random_start:
        delta = _random_start(theta, eps, radius, _check_generator(generator))
        cur, grad = _value_and_grad(objective, theta + delta)
        seen.add(cur, delta)
    stopped, taken = "steps", 0
    for step in range(int(steps)):
        delta, why = _ascent_step(delta, grad, eps, lr, radius)
        if why is not None:
            stopped = why
            break
        cur, grad = _value_and_grad(objective, theta + delta)
        seen.add(cur, delta)
        taken += 1
        if callback is not None:
            callback(step + 1, cur)
    return SharpnessResult(
        value=(seen.best - base) / (1.0 + base),
        loss=base,
        max_loss=seen.best,
        eps=eps,
        box=bool(box),
        num_steps=taken,
        distance=float(seen.best_delta.norm()),
        losses=tuple(seen.losses),
        num_gradients=len(seen.losses),
        seconds=time.perf_counter() - t0,
        info={"lr": lr, "random_start": bool(random_start), "stopped": stopped},
    )


class _Ascent:
    """The losses of an ascent (one per gradient) and the best point ``δ`` seen so far."""

    def __init__(self, loss: float, delta: Tensor) -> None:
        self.losses, self.best, self.best_delta = [loss], loss, delta

    def add(self, loss: float, delta: Tensor) -> None:
        """Record the loss at ``θ + δ``; keep ``δ`` if it is the largest so far."""
        self.losses.append(loss)
        if loss > self.best:
            self.best, self.best_delta = loss, delta


def _check_ascent(eps: float, steps: int, lr: float | None, box: bool) -> tuple[float, float]:
    """Validated ``(eps, lr)`` of :func:`epsilon_sharpness` (``lr``'s default per set)."""
    eps = float(eps)
    if not (math.isfinite(eps) and eps > 0):
        raise ConfigurationError(f"eps must be a positive number, got {eps!r}")
    if int(steps) < 0:
        raise ConfigurationError(f"steps must be non-negative, got {steps}")
    lr = (0.25 if box else 1.0) if lr is None else float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigurationError(f"lr must be a positive number, got {lr!r}")
    return eps, lr


def _random_start(theta: Tensor, eps: float, radius: Tensor | None, gen: torch.Generator) -> Tensor:
    """A uniform point of the half box (``radius`` given), else of the sphere ``‖δ‖ = ε/2``."""
    if radius is not None:
        u = torch.rand(theta.shape, generator=gen, dtype=torch.float64)
        return ((2 * u - 1).to(theta) * radius) / 2
    z = torch.randn(theta.shape, generator=gen, dtype=torch.float64).to(theta)
    return z * (eps / 2 / float(z.norm()))


def _ascent_step(
    delta: Tensor, grad: Tensor, eps: float, lr: float, radius: Tensor | None
) -> tuple[Tensor, str | None]:
    """One projected ascent step on ``δ``, or ``(δ, why)`` when the ball's step is undefined.

    Box (``radius`` given): ``clip(δ + lr·r⊙sign(g), −r, r)``. Ball:
    ``Π_ε(δ + lr·ε·g/‖g‖)``; a zero or non-finite gradient stops the ascent.
    """
    if radius is not None:
        d = delta + lr * radius * torch.sign(grad)
        return torch.maximum(torch.minimum(d, radius), -radius), None
    gn = float(grad.norm())
    if gn == 0.0 or not math.isfinite(gn):
        return delta, "zero gradient" if gn == 0.0 else "non-finite gradient"
    d = delta + (lr * eps / gn) * grad
    n = float(d.norm())
    return (d * (eps / n) if n > eps else d), None


# --------------------------------------------------------------------------- invariants
def scale_invariant_operator(op: LinearOperator, theta: Tensor) -> LinearOperator:
    """``ΘAΘ`` with ``Θ = diag(θ)``: invariant under ``θ ↦ Dθ, A ↦ D⁻¹AD⁻¹``.

    Args:
        op: a curvature operator ``A`` (``[P, P]``).
        theta: the flat parameters ``[P]`` at which ``A`` is evaluated.

    Returns:
        A symmetric operator; its trace is ``Σ_j θ_j² A_jj`` and its eigenvalues are
        invariant under function-preserving rescalings (Dinh et al., 2017).
    """
    if theta.shape != (op.shape[0],):
        raise ConfigurationError(
            f"theta has shape {tuple(theta.shape)}, the operator acts on {op.shape[0]} entries"
        )
    t = theta.detach().to(op.dtype).to(op.device)[:, None]

    def fn(V: Tensor) -> Tensor:
        return t * op.matmat(t * V)

    return FunctionOperator(fn, op.shape[0], op.dtype, op.device)


def scale_invariant_trace(
    objective: Objective,
    *,
    curvature: Curvature = "hessian",
    method: str = "auto",
    num_matvecs: int = 96,
    generator: torch.Generator | None = None,
) -> InvariantEstimate:
    """``Σ_j θ_j² H_jj = tr(ΘHΘ)``, invariant under function-preserving rescalings.

    Args:
        objective: the loss at ``θ``.
        curvature: ``"hessian"`` or ``"ggn"``.
        method: ``"exact"`` (the diagonal from ``P`` unit products via
            :func:`hesslab.diagonal`), ``"diagonal"`` (Hutchinson diagonal estimate, then
            ``Σ θ_j² d_j``), any :func:`hesslab.trace` method (``"krylov"``,
            ``"hutch++"``, ``"hutchinson"``, ...) on ``ΘHΘ``, or ``"auto"`` (exact for
            ``P ≤ 2048``, else ``"krylov"``).
        num_matvecs: budget of stochastic methods.
        generator: randomness of stochastic methods (required for them).

    Returns:
        :class:`InvariantEstimate` with ``stderr`` (0 for ``"exact"``).

    References:
        Li, Wang, Yu (2019); Dinh et al. (2017), arXiv:1703.04933.
    """
    t0 = time.perf_counter()
    H = _curvature(objective, curvature)
    theta = objective.flat_params().detach()
    P = theta.numel()
    if method == "auto":
        method = "exact" if P <= 2048 else "krylov"
    th2 = theta.to(torch.float64).cpu().square()
    if method in ("exact", "diagonal"):
        gen = None if method == "exact" else _check_generator(generator)
        est = diagonal(
            H,
            num_matvecs,
            method="exact" if method == "exact" else "hutchinson",
            generator=gen,
        )
        value = float((th2 * est.values).sum())
        stderr = float((th2.square() * est.stderr.square()).sum().sqrt())
        n = est.num_matvecs
    else:
        est = trace(
            scale_invariant_operator(H, theta),
            num_matvecs,
            method=method,
            generator=_check_generator(generator),
        )
        value, stderr, n = float(est.value), float(est.stderr), est.num_matvecs
    return InvariantEstimate(
        value=value,
        stderr=stderr,
        num_matvecs=n,
        seconds=time.perf_counter() - t0,
        method=method,
        info={"curvature": curvature, "P": P},
    )


def layer_normalized_sharpness(
    objective: Objective,
    *,
    curvature: Curvature = "hessian",
    params: list[str] | None = None,
    trace_method: str = "auto",
    num_matvecs: int = 48,
    tol: float = 1e-8,
    seed: int = 0,
) -> dict[str, LayerSharpness]:
    """Per parameter tensor ``p``: ``λ_max(H_pp)·‖θ_p‖²`` and ``tr(H_pp)·‖θ_p‖²/P_p``.

    Both are invariant under function-preserving rescalings because ``H_pp → d_p⁻² H_pp``
    and ``‖θ_p‖² → d_p²‖θ_p‖²`` (Dinh et al., 2017). Every tensor uses generators seeded
    with ``seed`` (and its index), so a rescaled copy of the objective gets the same probes
    and the invariance holds to rounding, not just in expectation.

    Args:
        objective: the loss at ``θ``.
        curvature: ``"hessian"`` or ``"ggn"``.
        params: parameter names (default: every parameter of the objective).
        trace_method: :func:`hesslab.trace` method, or ``"auto"`` (``"exact"`` for
            ``P_p ≤ 256``, else ``"krylov"``).
        num_matvecs: trace budget per tensor for stochastic methods.
        tol: Lanczos tolerance of ``λ_max``.
        seed: seed of the generators.

    Returns:
        ``{name: LayerSharpness}``.
    """
    H = _curvature(objective, curvature)
    names = list(objective.space.names if params is None else params)
    unknown = [n for n in names if n not in objective.space.names]
    if unknown:
        raise ConfigurationError(
            f"{unknown} are not parameters of the objective; known: {list(objective.space.names)}"
        )
    out: dict[str, LayerSharpness] = {}
    for i, name in enumerate(names):
        block = H.restrict([name])
        size = block.shape[0]
        norm_sq = float(objective.theta[name].detach().to(torch.float64).square().sum())
        eig = eigenpairs(
            block,
            1,
            "largest",
            tol=tol,
            generator=torch.Generator().manual_seed(seed + 7919 * i),
            return_vectors=False,
        )
        lam = float(eig.values[0])
        method = trace_method
        if method == "auto":
            method = "exact" if size <= 256 else "krylov"
        tr = trace(
            block,
            min(num_matvecs, size) if method != "exact" else num_matvecs,
            method=method,
            generator=torch.Generator().manual_seed(seed + 7919 * i + 1),
        )
        out[name] = LayerSharpness(
            name=name,
            size=size,
            norm_sq=norm_sq,
            lambda_max=lam,
            trace=float(tr.value),
            trace_stderr=float(tr.stderr),
            normalized_lambda_max=lam * norm_sq,
            normalized_trace=float(tr.value) * norm_sq / size,
            num_matvecs=int(eig.num_matvecs + tr.num_matvecs),
        )
    return out


# Short notebook-friendly reprs (key numbers, not the tensors): see hesslab.display.
from hesslab import display as _display  # noqa: E402

_display.attach(SharpnessResult, _display.sharpness_summary)
_display.attach(InvariantEstimate, _display.scalar_summary)
_display.attach(LayerSharpness, _display.layer_sharpness_summary)
