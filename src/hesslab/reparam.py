"""Function-preserving rescalings of positively homogeneous networks (Dinh et al., 2017).

For a ReLU network, ``relu(a z) = a relu(z)`` for ``a > 0``, so multiplying one layer by
``α`` and the next by ``1/α`` leaves the function unchanged:
``T_α(θ₁, θ₂) = (αθ₁, α⁻¹θ₂)``. More generally, for a chain of layers with factors
``α_1, ..., α_L`` and the *carried scale* ``c_l = Π_{j≤l} α_j``:

    W_l  ←  α_l W_l,      b_l  ←  c_l b_l,

so the pre-activation of layer ``l`` becomes ``c_l (W_l x + b_l)``; positively
homogeneous modules (ReLU, LeakyReLU, identity, max/avg pooling, flatten, dropout) pass
the scale through, and the output is unchanged when the carried scale at the output is 1
(``Π α_l = 1``).

BatchNorm in eval mode absorbs the scale: ``BN(c z)`` with running mean ``c μ``, running
variance ``c² σ²`` and ``eps`` multiplied by ``c²`` equals ``BN(z)`` exactly, because
``(c z − c μ) / sqrt(c² σ² + c² eps) = (z − μ) / sqrt(σ² + eps)``. The carried scale is
reset to 1 after a BatchNorm, so a layer followed by BatchNorm can be scaled freely (the
*BN-invariance* of its weights). ``eps`` is rescaled too so that the identity is exact; with
``eps`` left alone the error would be ``O(eps / σ²)``.

The map ``θ ↦ Dθ`` (``D`` diagonal with the per-tensor factors of
:func:`parameter_scales`) is linear and ``L(Dθ) = L(θ)`` for *every* ``θ`` (the buffers
are transformed with it), so by the chain rule ``∇L(Dθ) = D⁻¹∇L(θ)`` and
``∇²L(Dθ) = D⁻¹ ∇²L(θ) D⁻¹`` everywhere — not only at critical points (extra terms appear
only for nonlinear reparametrizations). The same holds for the Gauss–Newton matrix.

References:
    Dinh, Pascanu, Bengio, Bengio (2017), "Sharp Minima Can Generalize For Deep Nets",
    ICML, arXiv:1703.04933.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from hesslab.errors import ConfigurationError
from hesslab.validation import check_unshared

__all__ = ["parameter_scales", "rescale", "rescale_pair", "scalable_layers"]

_PARAM_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_HOMOGENEOUS = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
)
_BATCHNORM = nn.modules.batchnorm._BatchNorm

#: relative tolerance on the carried scale being 1 where the function must not change
_SCALE_TOL = 1e-9


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The leaf modules of a (nested) ``nn.Sequential`` in execution order."""
    if not isinstance(model, nn.Sequential):
        raise ConfigurationError(
            f"rescale supports nn.Sequential models (nested Sequentials allowed), got "
            f"{type(model).__name__}: the data flow of other modules is unknown. Write the "
            "network as an nn.Sequential, or rescale its parameters yourself"
        )
    check_unshared(model, "rescale")
    out: list[tuple[str, nn.Module]] = []

    def walk(mod: nn.Sequential, prefix: str) -> None:
        if type(mod).forward is not nn.Sequential.forward:
            raise ConfigurationError(
                f"{prefix.rstrip('.') or 'the model'} ({type(mod).__name__}) is an nn.Sequential "
                "with its own forward: its data flow is unknown to rescale. Write it as a "
                "plain nn.Sequential, or rescale its parameters yourself"
            )
        for name, child in mod.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, nn.Sequential):
                walk(child, full + ".")
            else:
                out.append((full, child))

    walk(model, "")
    return out


def scalable_layers(model: nn.Module) -> list[str]:
    """Names of the Linear/Conv modules of ``model`` in order: the entries of ``alphas``.

    Raises:
        ConfigurationError: ``model`` is not an ``nn.Sequential``.
    """
    return [n for n, m in _leaves(model) if isinstance(m, _PARAM_LAYERS)]


def _resolve_alphas(
    layers: list[str], alphas: Sequence[float] | Mapping[str, float]
) -> dict[str, float]:
    if isinstance(alphas, Mapping):
        out = {n: 1.0 for n in layers}
        for key, a in alphas.items():
            name = str(key)
            if name not in out and name.rsplit(".", 1)[-1] in ("weight", "bias"):
                name = name.rsplit(".", 1)[0]
            if name not in out:
                raise ConfigurationError(
                    f"alphas names layer {key!r}, which is not a Linear/Conv module of the "
                    f"model; scalable layers: {layers}"
                )
            out[name] = a
    else:
        seq = list(alphas)
        if len(seq) != len(layers):
            raise ConfigurationError(
                f"alphas has {len(seq)} entries for {len(layers)} Linear/Conv layers "
                f"{layers}; pass one factor per layer or a dict {{layer_name: alpha}}"
            )
        out = dict(zip(layers, seq, strict=True))
    for name, a in out.items():
        try:
            a = float(a)
        except (TypeError, ValueError):
            raise ConfigurationError(f"alpha of layer {name!r} is not a number: {a!r}") from None
        if not (math.isfinite(a) and a > 0):
            raise ConfigurationError(
                f"alpha of layer {name!r} must be finite and positive (ReLU is only "
                f"positively homogeneous), got {a!r}"
            )
        out[name] = a
    return out


def _plan(
    model: nn.Module, alphas: Sequence[float] | Mapping[str, float]
) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """Per Linear/Conv layer ``(weight factor, bias factor)``; per BatchNorm its scale ``c``.

    The scale ``c`` is the factor the BatchNorm absorbs. Validates the network along the way.
    """
    leaves = _leaves(model)
    layers = [n for n, m in leaves if isinstance(m, _PARAM_LAYERS)]
    factors = _resolve_alphas(layers, alphas)
    carry = 1.0
    layer_plan: dict[str, tuple[float, float]] = {}
    bn_plan: dict[str, float] = {}
    for name, mod in leaves:
        if isinstance(mod, _PARAM_LAYERS):
            carry *= factors[name]
            layer_plan[name] = (factors[name], carry)
        elif isinstance(mod, _BATCHNORM):
            if mod.training:
                raise ConfigurationError(
                    f"BatchNorm {name!r} is in train mode; call model.eval() first (rescale "
                    "transforms the running statistics used in eval mode)"
                )
            if not mod.track_running_stats or mod.running_mean is None:
                raise ConfigurationError(
                    f"BatchNorm {name!r} has no running statistics; rescale needs eval-mode "
                    "BatchNorm with track_running_stats=True"
                )
            bn_plan[name] = carry
            carry = 1.0
        elif isinstance(mod, _HOMOGENEOUS):
            continue
        elif abs(carry - 1.0) <= _SCALE_TOL:
            continue  # a non-homogeneous module that sees an unscaled input is harmless
        elif any(True for _ in mod.parameters(recurse=False)) or list(mod.children()):
            raise ConfigurationError(
                f"module {name!r} ({type(mod).__name__}) is not a Linear/Conv/BatchNorm layer "
                "and rescale does not know how a scaled input passes through it; make the "
                "factors multiply to 1 before it, or rescale its parameters yourself"
            )
        else:
            raise ConfigurationError(
                f"module {name!r} ({type(mod).__name__}) is not positively homogeneous, so "
                f"scaling its input by {carry:.3g} changes the function. rescale supports "
                "ReLU, LeakyReLU, identity, pooling, flatten and dropout between rescaled "
                "layers; make the factors multiply to 1 before this module"
            )
    if abs(carry - 1.0) > _SCALE_TOL:
        raise ConfigurationError(
            f"the factors multiply to {carry:.6g} at the output (after the last BatchNorm); "
            "they must multiply to 1 for the function to be preserved"
        )
    return layer_plan, bn_plan


def parameter_scales(
    model: nn.Module, alphas: Sequence[float] | Mapping[str, float]
) -> dict[str, float]:
    """The diagonal of ``D`` in ``θ ↦ Dθ`` per parameter tensor: ``{param_name: factor}``.

    Weights of layer ``l`` get ``α_l``, biases the carried scale ``c_l = Π_{j≤l} α_j``
    (reset to 1 after each BatchNorm); every other parameter (BatchNorm's ``γ, β``) gets 1.

    Args:
        model: as for :func:`rescale`.
        alphas: as for :func:`rescale`.

    Raises:
        ConfigurationError: as for :func:`rescale`.
    """
    layer_plan, _ = _plan(model, alphas)
    named = dict(model.named_modules())
    out = {n: 1.0 for n, _ in model.named_parameters()}
    for name, (wf, bf) in layer_plan.items():
        mod = named[name]
        out[f"{name}.weight"] = wf
        if mod.bias is not None:
            out[f"{name}.bias"] = bf
    return out


def rescale(
    model: nn.Module,
    alphas: Sequence[float] | Mapping[str, float],
    *,
    probe: Tensor | None = None,
) -> nn.Module:
    """A rescaled copy of a positively homogeneous network that computes the same function.

    Layer ``l`` (the ``l``-th Linear/Conv module) gets ``W_l ← α_l W_l`` and
    ``b_l ← c_l b_l`` with ``c_l = Π_{j≤l} α_j``; an eval-mode BatchNorm after a layer
    with carried scale ``c`` gets running mean ``× c``, running variance ``× c²`` and
    ``eps × c²`` and resets the carried scale to 1 (so ``BN(c z) = BN(z)`` exactly). The
    output is unchanged when the carried scale at the output is 1. See the module
    docstring for the proof and for how the Hessian transforms.

    Args:
        model: an ``nn.Sequential`` (nested Sequentials allowed, e.g.
            :func:`hesslab.models.mlp`/:func:`hesslab.models.lenet`) of Linear/Conv layers,
            eval-mode BatchNorm and positively homogeneous modules (ReLU, LeakyReLU,
            identity, max/avg pooling, flatten, dropout). Other modules (tanh, sigmoid,
            GELU, softmax, ...) are accepted only where the carried scale is exactly 1.
        alphas: one positive factor per Linear/Conv layer in order (see
            :func:`scalable_layers`), or ``{layer_name: α}`` (missing layers get 1;
            ``"fc1.weight"`` is read as ``"fc1"``).
        probe: inputs on which the outputs of the copy are compared with the model's
            (a safety net: relative error at most ``max(1e-3, 50 eps)``). Default: 8
            standard normal points when the first layer is a Linear (drawn from a fixed
            private generator), none otherwise. Skipped while dropout is active.

    Returns:
        A new model (a deep copy); ``model`` is not touched.

    Raises:
        ConfigurationError: a non-Sequential model (or a Sequential with its own
            ``forward``), a non-homogeneous or unknown module where the scale is not 1
            (named in the message), a train-mode BatchNorm, non-positive factors, factors
            whose product at the output is not 1, or outputs that changed on the probe.
        SharedModuleError: a module or parameter used at several places (a Linear applied
            twice would see a scaled input at its second use).

    Example:
        >>> net2 = rescale(mlp(64, (32, 32), 10), [1e3, 1.0, 1e-3])
        >>> torch.allclose(net2(x), net(x))
        True

    References:
        Dinh, Pascanu, Bengio, Bengio (2017), "Sharp Minima Can Generalize For Deep Nets",
        arXiv:1703.04933, §5 (T_α).
    """
    layer_plan, bn_plan = _plan(model, alphas)
    new = copy.deepcopy(model)
    named = dict(new.named_modules())
    with torch.no_grad():
        for name, (wf, bf) in layer_plan.items():
            mod = named[name]
            mod.weight.mul_(wf)
            if mod.bias is not None:
                mod.bias.mul_(bf)
        for name, c in bn_plan.items():
            bn = named[name]
            bn.running_mean.mul_(c)
            bn.running_var.mul_(c * c)
            bn.eps = bn.eps * c * c
    _verify_on_probe(model, new, probe)
    return new


def _verify_on_probe(model: nn.Module, new: nn.Module, probe: Tensor | None) -> None:
    """Raise if ``new`` and ``model`` compute different outputs on a probe batch."""
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.training for m in model.modules()):
        return
    first = next((p for p in model.parameters()), None)
    if first is None:
        return
    if probe is None:
        layer = _leaves(model)[0][1]
        if not isinstance(layer, nn.Linear):
            return
        g = torch.Generator().manual_seed(0)
        probe = torch.randn(8, layer.in_features, generator=g, dtype=torch.float64)
    probe = probe.to(dtype=first.dtype, device=first.device)
    with torch.no_grad():
        before, after = model(probe), new(probe)
    err = float((after - before).norm() / before.norm().clamp_min(torch.finfo(first.dtype).tiny))
    tol = max(1e-3, 50 * torch.finfo(first.dtype).eps)
    if not err <= tol:
        raise ConfigurationError(
            f"the rescaled model's outputs differ from the model's by {err:.3g} (relative) on "
            "a probe batch: the model does not compute what its nn.Sequential structure says "
            "(a functional op, a hook, a module reused elsewhere). Rescale its parameters "
            "yourself"
        )


def rescale_pair(model: nn.Module, i: int, alpha: float) -> nn.Module:
    """Dinh et al.'s ``T_α`` on Linear/Conv layers ``(i, i+1)``: ``(αθ_i, α⁻¹θ_{i+1})``.

    Biases follow the rule of :func:`rescale` (the bias of layer ``i`` is scaled by ``α``,
    that of layer ``i+1`` is unchanged).

    Args:
        model: as for :func:`rescale`.
        i: index of the first layer among :func:`scalable_layers` (``0 <= i < L - 1``).
        alpha: the positive factor.

    Returns:
        A new model computing the same function.

    Raises:
        ConfigurationError: ``i`` out of range, or as for :func:`rescale` (e.g. a
            BatchNorm between the two layers absorbs ``α``, so the pair does not compose
            to the identity: scale the layer before the BatchNorm alone instead).
    """
    layers = scalable_layers(model)
    if not 0 <= int(i) < len(layers) - 1:
        raise ConfigurationError(
            f"i must index a pair of consecutive Linear/Conv layers, 0 <= i < {len(layers) - 1}, "
            f"got {i}; layers: {layers}"
        )
    alpha = float(alpha)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ConfigurationError(f"alpha must be finite and positive, got {alpha!r}")
    return rescale(model, {layers[i]: alpha, layers[i + 1]: 1.0 / alpha})
