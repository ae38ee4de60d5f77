"""The inner-product space of an operator's vectors: local, or sharded over processes.

Every Krylov method sees vectors as ``[p, j]`` tensors. For an ordinary operator ``p`` is
``P`` and an inner product is a local sum. For an operator whose vectors are sharded over
the ranks of a process group (:class:`~hesslab.sharded.ShardedHessianOperator`: each rank
holds ``p ~ P / W`` of the ``P`` entries) an inner product is the sum over the ranks of
the local partial sums. The solvers take the space from the operator
(:func:`space_of`, the operator's ``inner_product_space`` attribute) and reduce every partial inner
product through :meth:`LocalSpace.reduce_sum`; the local space returns its argument
itself, so single-process numerics are unchanged bit for bit.

Random vectors are drawn over the full ``P`` entries from the (same, on every rank)
generator and each rank keeps its slice (:meth:`LocalSpace.local_part`), so a sharded run
sees the same start vectors and probes as a single-process run on the unsharded model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hesslab.rng import resolve_generator

__all__ = ["LOCAL", "LocalSpace", "shared_generator", "space_of"]


class LocalSpace:
    """The vectors of one process: partial inner products are the inner products.

    A sharded space (a subclass) overrides :meth:`reduce_sum` (an all-reduce),
    :meth:`local_part` and :attr:`global_size`, and sets ``distributed = True``.
    """

    #: Whether inner products need a reduction over processes.
    distributed = False

    def reduce_sum(self, value: Tensor) -> Tensor:
        """Sum of ``value`` over the processes holding parts of the vectors (here: itself)."""
        return value

    def global_size(self, local: int) -> int:
        """``P``, the number of entries of a whole vector whose local part has ``local``."""
        return local

    def local_part(self, full: Tensor) -> Tensor:
        """This process' rows of a full ``[P, j]`` block (here: the block)."""
        return full

    def shared_seed(self, seed: int) -> int:
        """``seed`` as chosen by the first process (here: itself)."""
        return seed


#: The space of ordinary (single-process) operators.
LOCAL = LocalSpace()


def space_of(op: Any) -> LocalSpace:
    """The space of ``op``'s vectors (its ``inner_product_space`` attribute, else :data:`LOCAL`)."""
    space = getattr(op, "inner_product_space", None)
    return LOCAL if space is None else space


def shared_generator(generator: torch.Generator | None, space: LocalSpace) -> torch.Generator:
    """The generator a solver draws from (the same on every rank of a sharded space).

    :func:`~hesslab.rng.resolve_generator` of ``generator``; in a sharded space without
    one, a fresh generator seeded from the first rank's entropy.
    A generator passed to a solver on a sharded operator must be in the same state on
    every rank (e.g. ``torch.Generator().manual_seed(0)`` everywhere).
    """
    if generator is not None or not space.distributed:
        return resolve_generator(generator)
    seed = int(torch.randint(0, 2**62, (1,)))
    return torch.Generator().manual_seed(space.shared_seed(seed))
