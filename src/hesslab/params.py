"""The flat parameter space: the one place that flattens and unflattens parameters.

Every curvature operator acts on vectors of length ``P`` that concatenate the selected
parameter tensors in a fixed order. :class:`ParamSpace` owns that layout.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hesslab.errors import ParameterSelectionError
from hesslab.validation import check_nonempty_selection

__all__ = ["ParamSpace", "layer_groups", "select_parameters"]


@dataclass(frozen=True)
class ParamSpace:
    """Layout of a flat parameter vector.

    Attributes:
        names: parameter names, in flattening order.
        shapes: the shape of each parameter.
        dtype: common dtype of the parameters.
        device: common device of the parameters.
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    dtype: torch.dtype
    device: torch.device

    @property
    def numels(self) -> tuple[int, ...]:
        """Number of entries of each parameter."""
        out = []
        for s in self.shapes:
            n = 1
            for d in s:
                n *= int(d)
            out.append(n)
        return tuple(out)

    @property
    def size(self) -> int:
        """``P``, the total number of entries."""
        return sum(self.numels)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start index of each parameter in the flat vector (``len(names) + 1`` entries)."""
        out, acc = [0], 0
        for n in self.numels:
            acc += n
            out.append(acc)
        return tuple(out)

    def slices(self) -> dict[str, slice]:
        """Map each parameter name to its slice of the flat vector."""
        off = self.offsets
        return {name: slice(off[i], off[i + 1]) for i, name in enumerate(self.names)}

    def indices(self, names: Iterable[str]) -> Tensor:
        """Flat indices (``LongTensor``) covered by the given parameter names."""
        sl = self.slices()
        parts = []
        for n in names:
            if n not in sl:
                raise ParameterSelectionError(f"{n!r} is not in this parameter space")
            s = sl[n]
            parts.append(torch.arange(s.start, s.stop))
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

    # ---------------------------------------------------------------- vectors
    def flatten(self, tensors: Mapping[str, Tensor] | Sequence[Tensor]) -> Tensor:
        """Concatenate parameter-shaped tensors into a flat ``[P]`` vector."""
        seq = [tensors[n] for n in self.names] if isinstance(tensors, Mapping) else tensors
        return torch.cat([t.reshape(-1) for t in seq])

    def unflatten(self, vec: Tensor) -> dict[str, Tensor]:
        """Split a flat ``[P]`` vector into parameter-shaped views."""
        chunks = torch.split(vec, self.numels)
        return {n: c.view(s) for n, c, s in zip(self.names, chunks, self.shapes, strict=True)}

    # ----------------------------------------------------------------- blocks
    def flatten_block(self, tensors: Mapping[str, Tensor] | Sequence[Tensor]) -> Tensor:
        """``{name: [K, *shape]}`` -> ``[P, K]``."""
        seq = [tensors[n] for n in self.names] if isinstance(tensors, Mapping) else tensors
        return torch.cat([t.reshape(t.shape[0], -1) for t in seq], dim=1).T

    def unflatten_block(self, V: Tensor) -> dict[str, Tensor]:
        """``[P, K]`` -> ``{name: [K, *shape]}`` (contiguous copies, batch dim first)."""
        K = V.shape[1]
        chunks = torch.split(V.T.contiguous(), self.numels, dim=1)
        return {
            n: c.reshape(K, *s) for n, c, s in zip(self.names, chunks, self.shapes, strict=True)
        }


def select_parameters(
    model: nn.Module,
    params: str | nn.Module | Iterable[str | nn.Module] | None = None,
) -> list[str]:
    """Resolve a parameter selection to an ordered list of parameter names.

    Args:
        model: the model.
        params: ``None`` (all parameters with ``requires_grad``), a name, a glob pattern
            (``"layers.2.*"``, matched with :func:`fnmatch.fnmatchcase`), a submodule of
            ``model``, or a list mixing these. A module prefix like ``"layers.2"`` also
            selects everything below it.

    Returns:
        Names in the model's own parameter order.

    Raises:
        ParameterSelectionError: if an entry matches nothing.
    """
    named = dict(model.named_parameters())
    if params is None:
        names = [n for n, p in named.items() if p.requires_grad]
        if not names:
            raise ParameterSelectionError(
                "the model has no parameters with requires_grad=True; pass params= explicitly"
            )
        return names
    items = [params] if isinstance(params, (str, nn.Module)) else list(params)
    check_nonempty_selection(items)
    module_names = {id(m): n for n, m in model.named_modules()}
    chosen: set[str] = set()
    for item in items:
        if isinstance(item, nn.Module):
            if id(item) not in module_names:
                raise ParameterSelectionError(
                    f"module {type(item).__name__} is not a submodule of the model"
                )
            prefix = module_names[id(item)]
            hits = [n for n in named if prefix == "" or n.startswith(prefix + ".")]
        elif isinstance(item, str):
            hits = [
                n
                for n in named
                if n == item or n.startswith(item + ".") or fnmatch.fnmatchcase(n, item)
            ]
        else:
            raise ParameterSelectionError(
                f"cannot select parameters with a {type(item).__name__}; use names, glob "
                "patterns or submodules"
            )
        if not hits:
            raise ParameterSelectionError(
                f"{item!r} matches no parameter; available: {', '.join(named)}"
            )
        chosen.update(hits)
    return [n for n in named if n in chosen]


_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Bilinear)


def layer_groups(model: nn.Module, *, weights_only: bool = False) -> dict[str, list[str]]:
    """The natural per-layer parameter groups of a model.

    With ``weights_only=False`` every module that owns parameters directly forms one group
    (a Linear/Conv weight with its bias, a BatchNorm's scale with its shift, ...), in model
    order; the groups partition all parameters. With ``weights_only=True`` only the
    ``weight`` of Linear and Conv layers is kept, one group each, as in the layerwise
    Hessians of Sankar et al. (AAAI 2021).

    Returns:
        ``{module_name: [parameter names]}``.
    """
    groups: dict[str, list[str]] = {}
    for mname, module in model.named_modules():
        own = [n for n, _ in module.named_parameters(recurse=False)]
        if not own:
            continue
        prefix = f"{mname}." if mname else ""
        if weights_only:
            if isinstance(module, _WEIGHT_LAYERS) and "weight" in own:
                groups[mname or "weight"] = [prefix + "weight"]
        else:
            groups[mname or "<root>"] = [prefix + n for n in own]
    return groups
