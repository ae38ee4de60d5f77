"""Which parameters a curvature penalty acts on: all, the paper's middle rules, or a list.

The rules of :class:`~hesslab.train.HessianTracePenalty` and
:class:`~hesslab.train.WSBoundPenalty` (``selection=``); see :mod:`hesslab.train.regularizers`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from hesslab.errors import ConfigurationError
from hesslab.params import layer_groups, select_parameters

__all__ = ["RULES", "Selection", "middle_layer_parameters", "middle_parameters", "resolve_names"]

Selection = str | nn.Module | Iterable[str | nn.Module] | None
#: the named selection rules
RULES = ("all", "middle", "middle-layers")


def _middle_indices(n: int) -> range:
    """Indices ``⌊n/4⌋ ..= ⌊3n/4⌋`` (both ends included), clipped to ``0..n-1``."""
    return range(n // 4, min(3 * n // 4, n - 1) + 1)


def middle_parameters(model: nn.Module, params: Selection = None) -> list[str]:
    """The paper's middle rule over parameter *tensors* (Sankar et al., 2021).

    Of the ``n`` selected parameter tensors in model order (``params`` as in
    :func:`hesslab.select_parameters`, default all trainable ones), keep those with index
    in ``[⌊n/4⌋, ⌊3n/4⌋]`` (both ends included). For LeNet (10 tensors: five layers'
    weights and biases) that is indices 2..7: ``conv2``, ``fc1`` and ``fc2``.

    Returns:
        The selected names, in model order.
    """
    names = select_parameters(model, params)
    return [names[i] for i in _middle_indices(len(names))]


def middle_layer_parameters(model: nn.Module, params: Selection = None) -> list[str]:
    """The middle rule over *layers*: the groups of :func:`hesslab.layer_groups`.

    Of the ``L`` layers (modules owning parameters, a weight with its bias) that hold
    selected parameters, keep those with index in ``[⌊L/4⌋, ⌊3L/4⌋]`` (both ends), with
    all their selected parameters.

    Returns:
        The selected names, in model order.
    """
    chosen = set(select_parameters(model, params))
    groups = [[n for n in names if n in chosen] for names in layer_groups(model).values()]
    groups = [g for g in groups if g]
    keep = {n for i in _middle_indices(len(groups)) for n in groups[i]}
    return [n for n, _ in model.named_parameters() if n in keep]


def resolve_names(model: nn.Module, params: Selection, selection: Any) -> list[str]:
    """The names ``selection`` picks: a rule of :data:`RULES` within ``params``, or a list."""
    if isinstance(selection, str) and selection in RULES:
        if selection == "all":
            return select_parameters(model, params)
        if selection == "middle":
            return middle_parameters(model, params)
        return middle_layer_parameters(model, params)
    if params is not None:
        raise ConfigurationError(
            f"selection={selection!r} is an explicit selection and params= is given too; "
            f"pass the names in one of them, or use selection in {RULES} with params=."
        )
    return select_parameters(model, selection)
