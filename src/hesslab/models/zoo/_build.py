"""Shared pieces of the zoo: activations, seeded initialisation, meta-device materialisation."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from hesslab.errors import ConfigurationError

#: Activation names accepted by the constructors (none of them acts in place).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
    "linear": nn.Identity,
}

#: ``init=`` may be a name, a standard deviation, or ``f(name, tensor, generator)``.
Init = str | float | Callable[[str, Tensor, torch.Generator], None] | None


def _activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name.lower()]()
    except (KeyError, AttributeError):
        raise ConfigurationError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}."
        ) from None


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        if generator.device.type != "cpu":
            raise ConfigurationError("pass a CPU torch.Generator; weights are drawn on the CPU.")
        return generator
    return torch.Generator().manual_seed(0 if seed is None else int(seed))


@torch.no_grad()
def init_parameters(
    model: nn.Module, init: Init = None, *, generator: torch.Generator
) -> nn.Module:
    """(Re-)initialise every ``Linear``/``Conv``/``Embedding`` and normalisation layer.

    Args:
        model: the module, with parameters on the CPU (changed in place and returned).
        init: ``None``/``"default"``: PyTorch's default, weights and biases
            ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``; ``"kaiming"``: weights
            ``N(0, 2/fan_in)``, biases 0 (He et al., 2015); ``"xavier"``: weights
            ``N(0, 2/(fan_in+fan_out))``, biases 0 (Glorot & Bengio, 2010); a float
            ``s``: every weight and bias ``N(0, s^2)`` (Sagun et al., 2017 use 0.1); a
            callable ``f(qualified_name, tensor, generator)`` that fills each
            weight/bias tensor in place.
            Normalisation layers always get weight 1, bias 0 and reset running stats.
            Embeddings get ``N(0, 1)`` (PyTorch's default), ``N(0, s^2)`` for a float
            ``s``, or the callable. Modules with an ``init_own_(generator)`` method (the
            transformers' class tokens, position tables) initialise what they own.
        generator: CPU generator the random numbers come from.
    """
    for mod_name, mod in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            _init_affine(mod, prefix, init, generator)
        elif isinstance(mod, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
            _init_norm(mod)
        elif isinstance(mod, nn.Embedding):
            if callable(init) and not isinstance(init, str):
                init(prefix + "weight", mod.weight, generator)
            else:
                std = float(init) if isinstance(init, (int, float)) else 1.0
                mod.weight.normal_(0.0, std, generator=generator)
        if hasattr(mod, "init_own_"):  # tokens and buffers a module owns directly
            mod.init_own_(generator)
    return model


def _init_norm(mod: nn.Module) -> None:
    """A normalisation layer: weight 1, bias 0, running statistics (BatchNorm) reset."""
    if isinstance(mod, nn.modules.batchnorm._NormBase):
        if mod.weight is not None:
            mod.weight.fill_(1.0)
            mod.bias.zero_()
        if mod.track_running_stats:
            mod.reset_running_stats()
        return
    if mod.weight is not None:
        mod.weight.fill_(1.0)
    if mod.bias is not None:
        mod.bias.zero_()


def _init_affine(mod: nn.Module, prefix: str, init: Init, generator: torch.Generator) -> None:
    """Fill one ``Linear``/``Conv`` layer's weight and bias as :func:`init_parameters` says."""
    w, b = mod.weight, mod.bias
    fan_out = w.shape[0] * (w[0, 0].numel() if w.ndim > 2 else 1)
    fan_in = w[0].numel()
    if callable(init) and not isinstance(init, str):
        init(prefix + "weight", w, generator)
        if b is not None:
            init(prefix + "bias", b, generator)
    elif isinstance(init, (int, float)) and not isinstance(init, bool):
        w.normal_(0.0, float(init), generator=generator)
        if b is not None:
            b.normal_(0.0, float(init), generator=generator)
    elif init is None or init == "default":
        bound = 1.0 / math.sqrt(fan_in)
        w.uniform_(-bound, bound, generator=generator)
        if b is not None:
            b.uniform_(-bound, bound, generator=generator)
    elif init in ("kaiming", "xavier"):
        var = 2.0 / fan_in if init == "kaiming" else 2.0 / (fan_in + fan_out)
        w.normal_(0.0, math.sqrt(var), generator=generator)
        if b is not None:
            b.zero_()
    else:
        raise ConfigurationError(
            f"unknown init {init!r}; use None, 'default', 'kaiming', 'xavier', a "
            "standard deviation (float) or a callable(name, tensor, generator)."
        )


def _materialise(
    build: Callable[[], nn.Module],
    *,
    seed: int | None,
    generator: torch.Generator | None,
    init: Init,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> nn.Module:
    if dtype is not None and not dtype.is_floating_point:
        raise ConfigurationError(f"dtype must be a floating dtype, got {dtype}.")
    with torch.device("meta"):
        model = build()
    model = model.to_empty(device="cpu")
    if dtype is not None:
        model = model.to(dtype=dtype)
    init_parameters(model, init, generator=_generator(seed, generator))
    if device is not None:
        model = model.to(device=device)
    return model


def _normal_init(std: float) -> Callable[[str, Tensor, torch.Generator], None]:
    """GPT-2's initialisation: weights and embeddings ``N(0, std^2)``, biases 0."""

    def init(name: str, t: Tensor, generator: torch.Generator) -> None:
        if name.endswith("bias"):
            t.zero_()
        else:
            t.normal_(0.0, std, generator=generator)

    return init
