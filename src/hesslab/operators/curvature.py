"""Shared machinery of the curvature operators defined by an :class:`~hesslab.Objective`."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from hesslab.errors import ConfigurationError
from hesslab.objective import Objective
from hesslab.operators.base import LinearOperator
from hesslab.params import layer_groups
from hesslab.validation import check_finite

__all__ = ["BlockDiagonalOperator", "CurvatureOperator", "RestrictedOperator", "autocast_dtype"]


def autocast_dtype(autocast: str | torch.dtype | None, dtype: torch.dtype) -> torch.dtype | None:
    """The autocast dtype of a curvature operator (``None``: off).

    ``"bfloat16"``/``"bf16"`` or ``"float16"``/``"fp16"``/``"half"`` (or the dtype itself).
    Autocast lowers float32 work only, so the parameters must be float32.

    Raises:
        ConfigurationError: another value, or parameters that are not float32.
    """
    if autocast is None:
        return None
    lowered = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16}
    lowered |= {"fp16": torch.float16, "half": torch.float16}
    out = autocast if isinstance(autocast, torch.dtype) else lowered.get(str(autocast))
    if out not in (torch.bfloat16, torch.float16):
        raise ConfigurationError(
            f"autocast must be None, 'bfloat16' or 'float16', got {autocast!r}"
        )
    if dtype != torch.float32:
        raise ConfigurationError(
            f"autocast needs float32 parameters (autocast leaves {dtype} work unchanged); "
            "pass a float32 model, or autocast=None"
        )
    return out


class CurvatureOperator(LinearOperator):
    """Base of operators built from an objective (Hessian, Gauss–Newton, gradient moments).

    Products are sums over the objective's batches with its exact weights; vectors are
    flat over ``objective.space`` (``P`` entries, the objective's dtype and device).
    Subclasses implement ``_batch_matmat(batch, Vd) -> {name: [K, *shape]}``.

    ``autocast`` (``"bfloat16"``, ``"float16"`` or ``None``) runs each batch's product
    under :func:`torch.autocast` (float32 parameters only); the batches' products come
    back in float32 (gradients of float32 parameters) and are summed in float32.
    """

    def __init__(
        self, objective: Objective, *, autocast: str | torch.dtype | None = None, **options: Any
    ) -> None:
        if not isinstance(objective, Objective):
            raise ConfigurationError(
                f"expected a hesslab.Objective, got {type(objective).__name__}; build one with "
                "hesslab.Objective(model, loss_fn, data)"
            )
        super().__init__(objective.space.size, objective.space.dtype, objective.space.device)
        self.objective = objective
        self.space = objective.space
        self._options = {**options, "autocast": autocast} if autocast is not None else options
        self.autocast = autocast_dtype(autocast, objective.space.dtype)

    def _autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of one batch's product (a no-op when autocast is off)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def _batch_matmat(self, batch: Any, Vd: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
        raise NotImplementedError  # pragma: no cover

    def _matmat(self, V: Tensor) -> Tensor:
        Vd = self.space.unflatten_block(V)
        out: Tensor | None = None
        for i, (batch, w) in enumerate(self.objective.batches()):
            self._batch_index = i
            with self._autocast():
                part = self.space.flatten_block(self._batch_matmat(batch, Vd))
            check_finite(part, f"the {type(self).__name__} product", batch_index=i)
            if out is None:  # the first batch's result is a fresh tensor: scale it in place
                out = part.mul_(w) if w != 1.0 else part
            else:
                out.add_(part, alpha=w)
        return torch.zeros_like(V) if out is None else out.contiguous()

    # ------------------------------------------------------------ structure
    def restrict(self, params: Any) -> CurvatureOperator:
        """The diagonal block ``A[block, block]`` for a parameter subset, without materialising.

        ``params`` selects by names, glob patterns or submodules (see
        :func:`hesslab.params.select_parameters`). The block is the same kind of operator
        on :meth:`Objective.restrict`, so its products only differentiate the block.
        """
        return type(self)(self.objective.restrict(params), **self._options)

    def blocks(
        self, groups: Mapping[str, list[str]] | None = None, *, weights_only: bool = False
    ) -> dict[str, CurvatureOperator]:
        """Per-layer diagonal blocks ``{group: A[group, group]}``.

        Args:
            groups: ``{name: [parameter names]}``; default :func:`hesslab.layer_groups`
                of the model restricted to this operator's parameters.
            weights_only: with default groups, Linear/Conv weights only (Sankar et al. 2021).
        """
        if groups is None:
            mine = set(self.space.names)
            groups = {
                g: [n for n in names if n in mine]
                for g, names in layer_groups(
                    self.objective.model, weights_only=weights_only
                ).items()
            }
            groups = {g: n for g, n in groups.items() if n}
        return {g: self.restrict(names) for g, names in groups.items()}

    def block_diagonal(
        self, groups: Mapping[str, list[str]] | None = None
    ) -> BlockDiagonalOperator:
        """The layerwise block-diagonal approximation ``diag(A_11, A_22, ...)`` over the full space.

        Parameters outside every group get zero rows and columns.
        """
        blocks = self.blocks(groups)
        sl = self.space.slices()
        index = [
            torch.cat([torch.arange(sl[n].start, sl[n].stop) for n in op.space.names])
            for op in blocks.values()
        ]
        return BlockDiagonalOperator(
            list(blocks.values()), index, self.shape[0], names=list(blocks)
        )


class RestrictedOperator(LinearOperator):
    """``A[idx, idx]`` of any operator, through products with zero-padded vectors.

    Costs one full product per product; for curvature operators prefer
    :meth:`CurvatureOperator.restrict`, which differentiates only the block.
    """

    def __init__(self, op: LinearOperator, index: Tensor) -> None:
        index = torch.as_tensor(index, dtype=torch.long)
        if index.ndim != 1 or len(index) == 0 or int(index.max()) >= op.shape[0]:
            raise ConfigurationError("index must be a non-empty 1-D set of valid coordinates")
        super().__init__(len(index), op.dtype, op.device)
        self.op, self.index = op, index.to(op.device)
        self.symmetric = op.symmetric

    def _matmat(self, V: Tensor) -> Tensor:
        full = torch.zeros(self.op.shape[0], V.shape[1], dtype=V.dtype, device=V.device)
        full[self.index] = V
        return self.op._matmat(full)[self.index]


class BlockDiagonalOperator(LinearOperator):
    """``sum_g E_g A_g E_g^T``: operators on disjoint coordinate sets, embedded in ``R^P``."""

    def __init__(
        self,
        blocks: list[LinearOperator],
        index: list[Tensor],
        size: int,
        *,
        names: list[str] | None = None,
    ) -> None:
        if not blocks or len(blocks) != len(index):
            raise ConfigurationError("need one index set per block, and at least one block")
        seen = torch.cat(index)
        if len(torch.unique(seen)) != len(seen):
            raise ConfigurationError("block index sets overlap")
        super().__init__(size, blocks[0].dtype, blocks[0].device)
        for b, ix in zip(blocks, index, strict=True):
            if b.shape[0] != len(ix):
                raise ConfigurationError(f"block {b!r} has size {b.shape[0]} but {len(ix)} indices")
        self.blocks = blocks
        self.symmetric = all(b.symmetric for b in blocks)
        self.index = [ix.to(self.device) for ix in index]
        self.names = names or [f"block{i}" for i in range(len(blocks))]

    def _matmat(self, V: Tensor) -> Tensor:
        out = torch.zeros_like(V)
        for b, ix in zip(self.blocks, self.index, strict=True):
            out[ix] = b._matmat(V[ix].contiguous())
        return out
