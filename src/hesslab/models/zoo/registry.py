"""The zoo by name (:data:`MODELS`) and :func:`build_model`, which reads sizes off data."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import nn

from hesslab.errors import ConfigurationError
from hesslab.models.zoo.convnets import lenet, mlp, resnet_small
from hesslab.models.zoo.transformers import gpt, vit

#: Model constructors by the names the CLI accepts.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "lenet": lenet,
    "resnet_small": resnet_small,
    "gpt": gpt,
    "vit": vit,
}


def build_model(name: str, data: Any = None, **kwargs: Any) -> nn.Module:
    """Build a model from :data:`MODELS` by name, inferring sizes from ``data``.

    Args:
        name: ``"mlp"``, ``"lenet"``, ``"resnet_small"``, ``"gpt"`` or ``"vit"`` (``-``
            and ``_`` are interchangeable).
        data: optional :class:`~hesslab.data.TensorData` or :class:`~hesslab.data.Split`;
            fills in ``in_dim``/``out_dim`` (mlp), ``in_channels``/``image_size``/
            ``num_classes`` (lenet, resnet_small, vit), ``vocab_size``/``max_len`` (gpt,
            from token data such as ``text``) unless given in ``kwargs``.
        **kwargs: passed to the constructor (e.g. ``widths=(32, 32)``, ``seed=1``).

    Example:
        >>> from hesslab.data import digits
        >>> net = build_model("mlp", digits(), widths=(32, 32))
    """
    key = name.lower().replace("-", "_")
    if key not in MODELS:
        raise ConfigurationError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}.")
    if data is not None:
        _sizes_from_data(key, data, kwargs)
    try:
        return MODELS[key](**kwargs)
    except TypeError as e:
        raise ConfigurationError(f"bad options for model {name!r}: {e}") from e


def _sizes_from_data(key: str, data: Any, kwargs: dict[str, Any]) -> None:
    """Fill the size arguments of model ``key`` that ``kwargs`` lacks from ``data``."""
    train = getattr(data, "train", data)
    shape = tuple(train.x.shape[1:])
    k = train.num_classes
    if key == "mlp":
        kwargs.setdefault("in_dim", math.prod(shape))
        if k is not None:
            kwargs.setdefault("out_dim", k)
        elif train.y.ndim > 1:
            kwargs.setdefault("out_dim", math.prod(train.y.shape[1:]))
        else:
            kwargs.setdefault("out_dim", 1)
    elif key == "gpt":
        if len(shape) != 1 or train.x.is_floating_point() or k is None:
            raise ConfigurationError(
                "gpt needs token sequences (integer input_ids [N, T] with a vocabulary "
                "size as num_classes), e.g. the bundled 'text' data."
            )
        kwargs.setdefault("vocab_size", k)
        kwargs.setdefault("max_len", shape[0])
    else:
        if len(shape) != 3:
            raise ConfigurationError(
                f"{key} needs image inputs [N, C, H, W], the data have [N, "
                f"{', '.join(map(str, shape))}]; use the image form (e.g. 'digits-image')."
            )
        kwargs.setdefault("in_channels", shape[0])
        if key in ("lenet", "vit"):
            kwargs.setdefault("image_size", shape[1])
        if k is not None:
            kwargs.setdefault("num_classes", k)
