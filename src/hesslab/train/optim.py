"""Noise-injecting optimizers for the noise experiments of Wei & Schwab (2019).

Wei & Schwab (2019), "How noise affects the Hessian spectrum in overparameterized neural
networks" (arXiv:1910.00195), model a noisy optimizer near a degenerate valley by the SDE

    dθ = −∇L dt + √η C^{1/2} dW,                                            (1)

with learning rate ``η`` and noise covariance ``C``. Its Euler–Maruyama step with
``dt = η`` is ``θ ← θ − η ∇L + η C^{1/2} ξ``, ``ξ ~ N(0, I)``, which is exactly minibatch SGD
(``θ ← θ − η g_B``, ``g_B = ∇L + noise`` with ``Cov(noise) = C``). With ``C = C_B`` (the
minibatch-gradient covariance) the drift along the valley is ``−(η/4)∂_u Tr(C_B ...)``;
``C = H/B`` gives ``−(η/4B) ∂_u Tr H`` and ``C = σ² P_nondeg`` gives
``−(ησ²/4) ∂_u log det H_nondeg`` (docs/PAPERS.md §1).

Two increment conventions are offered (the ``convention`` argument), named after the
process they discretise; both use ``θ ← θ − lr·g + noise``:

* ``"langevin"`` (the default of :class:`NoisyGD`): ``noise = √lr · σ ξ``, increment
  covariance ``lr σ² I``: Euler–Maruyama of ``dθ = −∇L dt + σ dW`` with ``dt = lr``
  (temperature ``σ²/2``; stationary density ``∝ exp(−2L/σ²)``). In the notation of (1) it
  is ``C = (σ²/η) I``.
* ``"sgd"`` (the default of :class:`HessianShapedNoiseGD`): ``noise = lr · σ ξ``
  (``lr · ξ_C`` with ``Cov ξ_C = C``), increment covariance ``lr² σ² I``: (1) with
  ``η = lr`` and ``C = σ² I``, i.e. the noise that a minibatch gradient with covariance
  ``σ² I`` would add. Choose this one to match PAPERS.md §1's ``η`` and ``σ`` directly.

Plain full-batch GD, minibatch SGD and Adam are PyTorch's own: use
``torch.optim.SGD(params, lr)`` on the full-data loss (GD) or on minibatches (SGD), and
``torch.optim.Adam``; they are not re-implemented here.

Flattening convention: a flat noise vector ``[P]`` (or a subspace basis ``[P, r]``) runs
over the parameters of ``param_groups`` in order (group by group, parameter by
parameter, each tensor flattened in row-major order), the order ``torch.optim`` keeps.
Parameters without ``.grad`` still receive noise (they are part of ``θ``).

Randomness only comes from the ``generator`` argument (never the global RNG), so two
optimizers built with equally seeded generators take bit-identical steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from hesslab.errors import ConfigurationError
from hesslab.objective import Objective
from hesslab.operators.moment import per_sample_gradients

__all__ = [
    "HessianShapedNoiseGD",
    "NoisyGD",
    "SGDNoiseSampler",
    "flat_parameters",
]

_CONVENTIONS = ("langevin", "sgd")


def flat_parameters(optimizer: torch.optim.Optimizer) -> Tensor:
    """The optimizer's parameters as one flat ``[P]`` vector (``param_groups`` order)."""
    return torch.cat([p.detach().reshape(-1) for g in optimizer.param_groups for p in g["params"]])


def _params(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    return [p for g in optimizer.param_groups for p in g["params"]]


def _noise_factor(convention: str, lr: float) -> float:
    """Multiplier of a unit-covariance noise draw: ``√lr`` (langevin) or ``lr`` (sgd)."""
    return math.sqrt(lr) if convention == "langevin" else lr


def _check_common(lr: float, convention: str) -> None:
    if not (isinstance(lr, (int, float)) and lr >= 0 and math.isfinite(lr)):
        raise ConfigurationError(f"lr must be a finite number >= 0, got {lr!r}")
    if convention not in _CONVENTIONS:
        raise ConfigurationError(
            f"convention must be 'langevin' (noise √lr·σ·ξ) or 'sgd' (noise lr·σ·ξ), "
            f"got {convention!r}"
        )


def _draw(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal draws with ``generator`` (on the generator's device, then moved)."""
    device = like.device if generator is None else generator.device
    z = torch.randn(shape, generator=generator, dtype=like.dtype, device=device)
    return z.to(like.device)


def _add_flat(params: list[Tensor], flat: Tensor, alpha: float) -> None:
    """``p += alpha · flat[slice of p]`` for every parameter, in order."""
    offset = 0
    for p in params:
        n = p.numel()
        p.add_(flat[offset : offset + n].view_as(p).to(p.dtype), alpha=alpha)
        offset += n


class NoisyGD(torch.optim.Optimizer):
    """Gradient descent plus isotropic Gaussian noise, optionally only in a subspace.

    One step (``g`` the ``.grad`` left by the caller's backward pass, ``ξ ~ N(0, I_P)``)::

        convention="langevin":  θ ← θ − lr·g + √lr · σ · ξ        Cov(increment) = lr σ² I
        convention="sgd":       θ ← θ − lr·g + lr · σ · ξ         Cov(increment) = lr² σ² I

    (see the module docstring for the SDEs these discretise). With ``subspace=U``
    (``[P, r]``, orthonormal columns) the noise is ``U z``, ``z ~ N(0, I_r)``: it lies in
    ``span U`` with covariance ``factor² σ² U Uᵀ`` (e.g. ``U`` = the top-``r`` Hessian
    eigenvectors, the non-degenerate subspace of Wei & Schwab 2019). ``σ = 0`` is plain GD.

    Args:
        params: parameters or parameter groups, as for any ``torch.optim`` optimizer.
        lr: learning rate ``lr >= 0`` (per group).
        noise_std: ``σ >= 0`` (per group; ignored for the groups when ``subspace`` is set,
            which uses the first group's ``σ``).
        generator: the source of all randomness (``None``: PyTorch's default generator,
            which makes runs depend on global state; pass one).
        subspace: optional ``[P, r]`` basis over the flat parameter vector
            (``param_groups`` order); orthonormality is checked to ``√eps`` accuracy.
        convention: ``"langevin"`` (default) or ``"sgd"``.

    Raises:
        ConfigurationError: negative ``lr``/``noise_std``, unknown ``convention``, or a
            subspace of the wrong shape or not orthonormal.

    References:
        Wei & Schwab (2019), arXiv:1910.00195.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        noise_std: float = 0.0,
        *,
        generator: torch.Generator | None = None,
        subspace: Tensor | None = None,
        convention: str = "langevin",
    ) -> None:
        _check_common(lr, convention)
        if not (noise_std >= 0 and math.isfinite(noise_std)):
            raise ConfigurationError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
        super().__init__(params, {"lr": lr, "noise_std": noise_std})
        self.generator = generator
        self.convention = convention
        self.subspace: Tensor | None = None
        if subspace is not None:
            self.set_subspace(subspace)

    @property
    def num_params(self) -> int:
        """``P``, the length of the flat parameter vector."""
        return sum(p.numel() for p in _params(self))

    def set_subspace(self, basis: Tensor | None) -> None:
        """Restrict the noise to ``span(basis)`` (``[P, r]`` orthonormal), or lift it (None)."""
        if basis is None:
            self.subspace = None
            return
        P = self.num_params
        if not isinstance(basis, Tensor) or basis.ndim != 2 or basis.shape[0] != P:
            shape = tuple(basis.shape) if isinstance(basis, Tensor) else type(basis).__name__
            raise ConfigurationError(
                f"subspace must be a [P, r] tensor with P={P} (the flattened parameters in "
                f"param_groups order), got {shape}"
            )
        U = basis.detach()
        gram = U.T.to(torch.float64) @ U.to(torch.float64)
        eye = torch.eye(U.shape[1], dtype=torch.float64, device=U.device)
        tol = math.sqrt(torch.finfo(U.dtype).eps) * max(1, U.shape[1])
        if float((gram - eye).abs().max()) > tol:
            raise ConfigurationError(
                "subspace columns must be orthonormal (UᵀU = I); orthonormalise them first, "
                "e.g. with torch.linalg.qr(U).Q"
            )
        self.subspace = U

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One noisy GD step; ``closure`` (optional) re-evaluates the loss as in torch."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])
        if self.subspace is not None:
            group = self.param_groups[0]
            sigma, lr = group["noise_std"], group["lr"]
            if sigma > 0:
                U = self.subspace
                z = _draw((U.shape[1],), U, self.generator)
                params = _params(self)
                _add_flat(
                    params, (U @ z).to(params[0].device), sigma * _noise_factor(self.convention, lr)
                )
            return loss
        for group in self.param_groups:
            sigma, lr = group["noise_std"], group["lr"]
            if sigma <= 0:
                continue
            scale = sigma * _noise_factor(self.convention, lr)
            for p in group["params"]:
                p.add_(_draw(tuple(p.shape), p, self.generator), alpha=scale)
        return loss


class SGDNoiseSampler:
    """Gaussian draws with the covariance of a minibatch-gradient's noise, ``C_B``.

    With per-sample gradients ``g_i`` (``i = 1..N``) at the current weights, ``ḡ`` their
    mean and ``C = (1/N) Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ``, a size-``B`` minibatch gradient has
    covariance ``C_B = C / B`` (with replacement) or ``C (N − B) / (B (N − 1))`` (without).
    A draw is ``ξ = G_c z · √(f / N)`` with ``G_c = [g_1 − ḡ, ..., g_N − ḡ]`` (``[P, N]``),
    ``z ~ N(0, I_N)`` and ``f`` that factor (``f = 1/B``: ``ξ = G_c z / √(N B)``), so
    ``Cov(ξ) = f G_c G_cᵀ / N = C_B`` exactly, without forming the ``P × P`` matrix ``C``.

    The per-sample gradients come from :func:`hesslab.operators.moment.per_sample_gradients`
    (``torch.func.vmap`` over ``grad``) of ``objective`` at the given weights; their
    order is the objective's parameter order (``objective.space``).

    Args:
        objective: the :class:`~hesslab.Objective` (model, loss, data); its weights are
            replaced by the ``theta`` passed to each call.
        batch_size: ``B`` (``1 <= B <= N``).
        replacement: minibatches drawn with (default) or without replacement.
        chunk_size: samples per vectorised chunk of per-sample gradients.

    References:
        Wei & Schwab (2019), arXiv:1910.00195; Li et al. (2019), arXiv:1907.10732 (the
        minibatch second moment ``ḡḡᵀ + C/B``).
    """

    def __init__(
        self,
        objective: Objective,
        batch_size: int,
        *,
        replacement: bool = True,
        chunk_size: int | None = None,
    ) -> None:
        if not isinstance(objective, Objective):
            raise ConfigurationError(
                f"objective must be a hesslab.Objective, got {type(objective).__name__}; build "
                "one with hesslab.Objective(model, loss_fn, data)"
            )
        N = objective.num_data
        if not (isinstance(batch_size, int) and 1 <= batch_size <= N):
            raise ConfigurationError(
                f"batch_size must be an integer in 1..N={N}, got {batch_size!r}"
            )
        self.objective, self.batch_size = objective, batch_size
        self.replacement, self.chunk_size = replacement, chunk_size

    @property
    def factor(self) -> float:
        """``f`` with ``C_B = f · C``: ``1/B`` or ``(N − B) / (B (N − 1))``."""
        N, B = self.objective.num_data, self.batch_size
        if self.replacement:
            return 1.0 / B
        return (N - B) / (B * (N - 1)) if N > 1 else 0.0

    def gradients(self, theta: Tensor | None = None) -> Tensor:
        """Per-sample gradients ``[P, N]`` at ``theta`` (flat, objective order)."""
        obj = self.objective if theta is None else self.objective.at(theta.detach())
        blocks = [
            per_sample_gradients(obj, batch, chunk_size=self.chunk_size)
            for batch, _ in obj.batches()
        ]
        return torch.cat(blocks, dim=1)

    def factor_matrix(self, theta: Tensor | None = None) -> Tensor:
        """``S = G_c √(f/N)`` (``[P, N]``) with ``S Sᵀ = C_B``."""
        G = self.gradients(theta)
        Gc = G - G.mean(dim=1, keepdim=True)
        return Gc * math.sqrt(self.factor / G.shape[1])

    def covariance(self, theta: Tensor | None = None) -> Tensor:
        """The dense ``C_B`` (``[P, P]``; for small models and tests)."""
        S = self.factor_matrix(theta)
        return S @ S.T

    def sample(
        self,
        theta: Tensor | None = None,
        num_samples: int | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draws of ``ξ ~ N(0, C_B)``: ``[P]``, or ``[P, K]`` with ``num_samples=K``."""
        S = self.factor_matrix(theta)
        K = 1 if num_samples is None else int(num_samples)
        z = _draw((S.shape[1], K), S, generator)
        xi = S @ z
        return xi[:, 0] if num_samples is None else xi


class HessianShapedNoiseGD(torch.optim.Optimizer):
    """Gradient descent plus Gaussian noise with the covariance of minibatch SGD, ``C_B``.

    One step (``g`` the caller's ``.grad``, ``ξ ~ N(0, C_B(θ))`` drawn at the current
    weights before the update)::

        convention="sgd" (default):  θ ← θ − lr·g − lr·s·ξ     Cov(increment) = lr² s² C_B
        convention="langevin":       θ ← θ − lr·g − √lr·s·ξ    Cov(increment) = lr s² C_B

    With ``s = 1`` and ``"sgd"`` the increment has the same mean and covariance as a
    minibatch-SGD step (``C_B ≈ H/B`` near a minimum of a likelihood loss, hence
    "Hessian-shaped"), but Gaussian and with the batch noise decoupled from the drift:
    PAPERS.md §1's SDE with ``C = C_B``. See :class:`SGDNoiseSampler` for how ``ξ`` is
    drawn from per-sample gradients.

    The noise comes from exactly one of:

    * ``objective=`` (with ``batch_size=``): a :class:`~hesslab.Objective` over the same
      parameters, in the same order and shapes as this optimizer's ``param_groups`` (e.g.
      ``Objective(model, loss, data)`` and ``model.parameters()``). Each step evaluates
      the per-sample gradients at the current weights (``N`` of them: meant for small
      problems).
    * ``noise_fn=``: ``noise_fn(step, theta) -> [P]`` a draw of ``ξ`` (flat,
      ``param_groups`` order), for any other source. The generator is not used then.

    Args:
        params: parameters or groups (one ``lr`` for all groups is used for the noise).
        lr: learning rate.
        batch_size: ``B`` of the SGD being imitated (with ``objective``).
        objective: see above.
        noise_fn: see above.
        noise_scale: ``s >= 0`` multiplying ``ξ`` (``1`` imitates SGD at batch size ``B``).
        replacement: ``C_B`` for minibatches with (default) or without replacement.
        generator: source of all randomness.
        convention: ``"sgd"`` (default) or ``"langevin"``.

    Raises:
        ConfigurationError: both or neither of ``objective``/``noise_fn``, parameters that
            do not match the objective's, or bad numbers.

    References:
        Wei & Schwab (2019), arXiv:1910.00195.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        batch_size: int | None = None,
        *,
        objective: Objective | None = None,
        noise_fn: Callable[[int, Tensor], Tensor] | None = None,
        noise_scale: float = 1.0,
        replacement: bool = True,
        generator: torch.Generator | None = None,
        convention: str = "sgd",
    ) -> None:
        _check_common(lr, convention)
        if not (noise_scale >= 0 and math.isfinite(noise_scale)):
            raise ConfigurationError(
                f"noise_scale must be a finite number >= 0, got {noise_scale!r}"
            )
        if (objective is None) == (noise_fn is None):
            raise ConfigurationError(
                "pass exactly one of objective= (with batch_size=) or noise_fn="
            )
        super().__init__(params, {"lr": lr})
        self.generator, self.convention, self.noise_scale = generator, convention, noise_scale
        self.noise_fn = noise_fn
        self.sampler: SGDNoiseSampler | None = None
        self.num_steps = 0
        if objective is not None:
            if batch_size is None:
                raise ConfigurationError("objective= needs batch_size= (the B of SGD to imitate)")
            shapes = tuple(tuple(p.shape) for p in _params(self))
            expected = tuple(tuple(s) for s in objective.space.shapes)
            if shapes != expected:
                raise ConfigurationError(
                    f"the optimizer's parameter shapes {shapes} differ from the objective's "
                    f"{expected} (names {list(objective.space.names)}); build the objective "
                    "on the same model and pass model.parameters() in the same order"
                )
            self.sampler = SGDNoiseSampler(objective, batch_size, replacement=replacement)

    def sample_noise(self) -> Tensor:
        """A draw of ``ξ`` at the current weights (flat, ``param_groups`` order)."""
        theta = flat_parameters(self)
        if self.sampler is not None:
            return self.sampler.sample(
                theta.to(self.sampler.objective.space.dtype), generator=self.generator
            )
        xi = self.noise_fn(self.num_steps, theta)  # type: ignore[misc]
        if not isinstance(xi, Tensor) or xi.shape != theta.shape:
            raise ConfigurationError(
                f"noise_fn must return a flat tensor of shape {tuple(theta.shape)}, got "
                f"{getattr(xi, 'shape', type(xi).__name__)}"
            )
        return xi

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One step of GD plus ``C_B``-shaped noise (noise drawn before the update)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        lr = self.param_groups[0]["lr"]
        xi = self.sample_noise() if self.noise_scale > 0 else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])
        if xi is not None:
            params = _params(self)
            _add_flat(
                params,
                xi.to(params[0].device),
                -self.noise_scale * _noise_factor(self.convention, lr),
            )
        self.num_steps += 1
        return loss
