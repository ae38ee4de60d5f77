"""Curvature products on FSDP2-sharded models, with sharded vectors.

A model sharded with :func:`torch.distributed.fsdp.fully_shard` holds on each rank only a
shard of every parameter (a ``DTensor`` with placement ``Shard(0)``). The
:class:`ShardedHessianOperator` acts on vectors sharded the same way: rank ``r`` holds
the flat concatenation of its local parameter shards (``shape[0]`` is that local size,
about ``P / world_size``). Products are collective (every rank calls them together) and
are the Hessian of the loss over all ranks' data, weighted exactly as in
:class:`~hesslab.distributed.DistributedOperator`:

``H v = sum_r (N_r / N) H_r v``.

Inner products and norms of sharded vectors must be summed over the ranks: the operator's
``inner_product_space`` (a :class:`ShardedSpace`, see :mod:`hesslab.linalg.space`) does it,
and hesslab's solvers take it from the operator, so :func:`~hesslab.eigenpairs`,
:func:`~hesslab.trace`, :func:`~hesslab.frobenius_sq` and :func:`~hesslab.spectral_density`
run on a :class:`ShardedHessianOperator` unchanged (every rank calls them together, with a
generator in the same state on every rank). Every Krylov vector they keep is a ``[p]``
shard: ``O(P / world_size)`` memory per rank; random start vectors and probes are drawn
at full size ``P`` and sliced, so the results equal a single-process run on the unsharded
model to rounding. Returned eigenvectors are this rank's shards. A checkpoint holds this
rank's shard of the basis: pass each rank its own file (e.g. ``f"eig-{rank}.ckpt"``).
``method="dense"`` eigenpairs and ``method="xtrace"`` traces are refused.

Two product routes:

* ``"exact"`` (default): ``torch.autograd.grad`` through FSDP2's sharded parameters
  fails (FSDP2 computes with unsharded copies and routes the gradients through its
  hooks), so the operator gathers the full parameters once at construction into a plain
  copy of the module tree (the FSDP2 classes and forward hooks removed, the user's
  modules otherwise shared) and runs hesslab's exact :class:`HessianOperator` on it.
  A product all-gathers the block, multiplies on the rank's data and all-reduces; each
  rank keeps its slice. Exact to rounding, but ``O(P)`` memory per rank for the
  parameters and the gathered block (only the Krylov vectors the solvers keep are
  sharded).
* ``"finite-difference"``: central differences of the gradients FSDP2 itself computes
  (ordinary backward on the sharded model),
  ``H v ~ (g(theta + eps v) - g(theta - eps v)) / (2 eps)``, with
  ``eps = (3 u)^(1/3) (1 + ||theta||) / ||v||`` (``u`` the unit roundoff; Nocedal &
  Wright, *Numerical Optimization*, 2nd ed., section 8.1). The error of a product is
  estimated from the estimate at ``2 eps``: ``D(2 eps) - D(eps) = 3 c eps^2 + rounding``
  bounds the truncation error ``c eps^2`` and the rounding error of ``D(eps)``;
  :attr:`ShardedHessianOperator.last_error` holds ``||D(eps) - D(2 eps)||`` per column
  (``error_estimate=False`` skips the second difference; measured on a tanh MLP: 1.8x
  to 3.1x the actual error in float64, 2.7x to 3.1x in float32, where the relative
  error of a product is about 1e-4). ``richardson=True`` returns
  ``R(eps) = (4 D(eps) - D(2 eps)) / 3`` (truncation ``O(eps^4)``, ``eps`` scaled with
  ``u^(1/5)``) with the estimate ``||R(eps) - R(2 eps)|| / 5`` (one more difference,
  ``D(4 eps)``; the asymptotic ratio is 15). The
  parameter shards are saved before and copied back after every product (bit-identical;
  never restored by subtraction), and ``.grad`` is restored. The full parameters are
  gathered at construction only (for the objective's checks) and freed after, so the
  route's memory per rank is ``O(P / W)`` plus what FSDP2's own backward needs.

Meshes: plain FSDP2 (``Shard(0)`` on a 1-D mesh) and HSDP (``(Replicate(), Shard(0))`` on a
2-D mesh of data-parallel replicas x shards). The vectors are sharded over the mesh's shard
dimension (replicas hold the same shards, inner products are summed over the shard group
only); the products sum every rank's data with the exact ``N_r / N`` weights (``group``,
default the world, is the group of all ranks holding data).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from hesslab.distributed import broadcast_int
from hesslab.errors import ConfigurationError
from hesslab.linalg.space import LocalSpace
from hesslab.losses import output_tensor
from hesslab.objective import Objective
from hesslab.operators.base import LinearOperator
from hesslab.operators.hessian import HessianOperator

__all__ = ["ShardedHessianOperator", "ShardedSpace", "plain_module"]

ROUTES = ("exact", "finite-difference")


def _fsdp_module_cls() -> type | None:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - very old torch
        return None
    return FSDPModule


def _is_fsdp_hook(hook: Any) -> bool:
    owner = getattr(hook, "__self__", None)
    name = getattr(hook, "__qualname__", "")
    return "FSDP" in type(owner).__name__ or "_register_group_forward_hooks" in name


def plain_module(module: nn.Module, params: dict[str, Tensor], prefix: str = "") -> nn.Module:
    """A plain (non-FSDP) copy of ``module``'s tree holding the tensors ``params``.

    Every FSDP2 module is copied without its FSDP class and forward hooks; the other
    attributes (buffers, non-FSDP hooks, configuration) are shared with the original,
    which is not modified. ``params`` maps full parameter names to (unsharded) tensors.
    """
    fsdp = _fsdp_module_cls()
    cls = type(module)
    if fsdp is not None and issubclass(cls, fsdp):
        cls = next(b for b in cls.__mro__[1:] if not issubclass(b, fsdp) and b is not object)
    new = cls.__new__(cls)
    new.__dict__.update(module.__dict__)
    for attr in ("_forward_pre_hooks", "_forward_hooks"):
        hooks = getattr(module, attr)
        setattr(new, attr, OrderedDict((k, h) for k, h in hooks.items() if not _is_fsdp_hook(h)))
    new._parameters = {
        n: None if p is None else nn.Parameter(params[prefix + n], p.requires_grad)
        for n, p in module._parameters.items()
    }
    new._modules = {
        n: None if m is None else plain_module(m, params, f"{prefix}{n}.")
        for n, m in module._modules.items()
    }
    return new


def _shard_rows(rows: int, rank: int, world: int) -> range:
    """Rows of rank ``rank`` under ``Shard(0)`` (``torch.chunk`` sizes, as FSDP2)."""
    step = -(-rows // world) if rows else 0
    return range(min(rows, rank * step), min(rows, (rank + 1) * step))


class ShardedSpace(LocalSpace):
    """The inner-product space of a :class:`ShardedHessianOperator`'s vectors.

    Partial inner products are all-reduced over the operator's process group; random
    vectors are drawn at full size ``P`` and each rank keeps its rows.
    """

    distributed = True

    def __init__(self, op: ShardedHessianOperator) -> None:
        self.op = op

    def reduce_sum(self, value: Tensor) -> Tensor:
        """Sum of ``value`` over the ranks (a new tensor on ``value``'s device)."""
        return self.op.reduce_sum(value)

    def global_size(self, local: int) -> int:
        """``P``, the number of parameters over all ranks."""
        return self.op.full_size

    def local_part(self, full: Tensor) -> Tensor:
        """This rank's rows of a full ``[P, j]`` block (in the block's dtype)."""
        return self.op._pad(full[self.op._maps[self.op.rank].to(full.device)])

    def shared_seed(self, seed: int) -> int:
        """Rank 0's ``seed`` on every rank."""
        return broadcast_int(seed, group=self.op.group)


class ShardedHessianOperator(LinearOperator):
    """The Hessian over all ranks' data of an FSDP2-sharded model, on sharded vectors.

    Args:
        model: the ``fully_shard``-ed module (the same on every rank; in eval mode).
        loss_fn: as for :class:`~hesslab.Objective`.
        data: this rank's shard of the data (as for :class:`~hesslab.Objective`).
        route: ``"exact"`` or ``"finite-difference"`` (see the module docstring).
        eps: finite-difference step (default from the dtype and the norms).
        richardson: Richardson extrapolation of the finite differences.
        error_estimate: compute the finite-difference error estimate (one more
            difference, twice the gradients).
        mode: the exact route's :class:`HessianOperator` product mode.
        group: process group (default: the world).
        **objective_options: passed to the :class:`~hesslab.Objective` (e.g.
            ``max_batch_size``).

    Attributes:
        last_error: finite-difference route: estimated error norm of each column of the
            last product (``[K]``, ``None`` for the exact route or without estimate).
        eps_used: the step of the last finite-difference product (per column).
        full_size: ``P``, the number of parameters over all ranks.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Any,
        data: Any,
        *,
        route: str = "exact",
        eps: float | None = None,
        richardson: bool = False,
        error_estimate: bool = True,
        mode: str = "auto",
        group: Any = None,
        **objective_options: Any,
    ) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise ConfigurationError(
                "torch.distributed is not initialised; launch with torchrun and call "
                "torch.distributed.init_process_group first"
            )
        if route not in ROUTES:
            raise ConfigurationError(f"unknown route {route!r}; use one of {ROUTES}")
        self.model, self.group, self.route = model, group, route
        self.eps, self.richardson, self.error_estimate = eps, richardson, error_estimate
        self._params = self._sharded_params(model)  # sets shard_group (the mesh's last dim)
        sg = self.shard_group
        self.rank, self.world = dist.get_rank(sg), dist.get_world_size(sg)
        self.data_world = dist.get_world_size(group)
        local = [p.to_local() for p in self._params.values()]
        size = sum(t.numel() for t in local)
        super().__init__(max(size, 1), local[0].dtype, local[0].device)
        self.local_size = size
        self._layout()
        full = {  # frozen parameters too: the plain copy holds every parameter
            n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach()
            for n, p in model.named_parameters(remove_duplicate=False)
        }
        objective = Objective(plain_module(model, full), loss_fn, data, **objective_options)
        if objective.space.names != tuple(self._params):
            raise ConfigurationError(
                "the objective's parameters differ from the model's sharded parameters; "
                "every trainable parameter of the model must be a sharded one"
            )
        self.objective = objective
        self._hessian = HessianOperator(objective, mode=mode) if route == "exact" else None
        if route != "exact":  # only the data loop is used: drop the full parameter copies
            objective.theta, objective.model = {}, None
        del full
        count = torch.tensor([float(objective.num_items)], dtype=torch.float64)
        dist.all_reduce(count, group=group)
        self.num_local, self.num_total = float(objective.num_items), float(count)
        self.last_error: Tensor | None = None
        self.eps_used: Tensor | None = None
        self.inner_product_space = ShardedSpace(self)

    # ------------------------------------------------------------------ layout
    def _sharded_params(self, model: nn.Module) -> dict[str, Any]:
        from torch.distributed.tensor import DTensor, Replicate, Shard

        named = {n: p for n, p in model.named_parameters() if p.requires_grad}
        allowed = ((Shard(0),), (Replicate(), Shard(0)))
        meshes = set()
        for n, p in named.items():
            if not isinstance(p, DTensor) or tuple(p.placements) not in allowed:
                raise ConfigurationError(
                    f"parameter {n} is not sharded as Shard(0) (FSDP2) or (Replicate(), "
                    "Shard(0)) (HSDP); apply torch.distributed.fsdp.fully_shard to the model"
                )
            meshes.add(p.device_mesh)
        if not named:
            raise ConfigurationError("the model has no trainable parameters")
        if len(meshes) != 1:
            raise ConfigurationError("every sharded parameter must live on the same device mesh")
        (mesh,) = meshes
        self.shard_group = mesh.get_group(
            mesh.ndim - 1
        )  # HSDP: the shard dim; replicas hold copies
        return named

    def _layout(self) -> None:
        """Index maps: rank r's local entries inside the full flat vector ``[P]``."""
        maps: list[list[Tensor]] = [[] for _ in range(self.world)]
        offset = 0
        for n, p in self._params.items():
            rows, numel = p.shape[0], p.numel()
            per_row = numel // rows if rows else 0
            for r in range(self.world):
                span = _shard_rows(rows, r, self.world)
                maps[r].append(torch.arange(span.start * per_row, span.stop * per_row) + offset)
            if maps[self.rank][-1].numel() != p.to_local().numel():
                raise ConfigurationError(f"unexpected local shard shape of parameter {n}")
            offset += numel
        self.full_size = offset
        self._maps = [torch.cat(m).to(self.device) for m in maps]

    # ------------------------------------------------------------ reductions
    @property
    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend(self.group) == "nccl" else torch.device("cpu")

    def reduce_sum(self, value: Tensor) -> Tensor:
        """Sum of ``value`` over the shard group (partial inner products of sharded vectors).

        Under HSDP the replicas hold the same shards and are not summed.
        """
        return self._all_reduce(value, self.shard_group)

    def _all_reduce(self, value: Tensor, group: Any) -> Tensor:
        t = value.detach().to(self._comm_device, copy=True).contiguous()
        dist.all_reduce(t, group=group)
        return t.to(value.device)

    def dot(self, a: Tensor, b: Tensor) -> Tensor:
        """Column-wise inner products ``a^T b`` of sharded vectors (blocks ``[p, K]``)."""
        return self.reduce_sum((a * b).sum(0))

    def norm(self, a: Tensor) -> Tensor:
        """Column-wise 2-norms of sharded vectors."""
        return self.dot(a, a).clamp_min(0).sqrt()

    def _local(self, V: Tensor) -> Tensor:
        return V[: self.local_size]

    def gather(self, V: Tensor) -> Tensor:
        """The full ``[P, K]`` block from every rank's shard ``[p, K]`` (collective)."""
        dev, K = self._comm_device, V.shape[1]
        width = max(m.numel() for m in self._maps)
        pad = torch.zeros(width, K, dtype=V.dtype, device=dev)
        pad[: self.local_size] = self._local(V).to(dev)
        parts = [torch.empty_like(pad) for _ in range(self.world)]
        dist.all_gather(parts, pad, group=self.shard_group)
        full = torch.empty(self.full_size, K, dtype=V.dtype, device=self.device)
        for idx, part in zip(self._maps, parts, strict=True):
            full[idx] = part[: idx.numel()].to(self.device)
        return full

    def _pad(self, local: Tensor) -> Tensor:
        if self.local_size == self.shape[0]:
            return local
        out = local.new_zeros(self.shape[0], local.shape[1])  # a rank without entries
        out[: self.local_size] = local
        return out

    def local_part(self, full: Tensor) -> Tensor:
        """This rank's shard ``[shape[0], K]`` of a full block ``[P, K]``."""
        return self._pad(full[self._maps[self.rank].to(full.device)].to(self.device, self.dtype))

    # ---------------------------------------------------------------- products
    def _matmat(self, V: Tensor) -> Tensor:
        if self.route == "exact":
            return self._exact(V)
        return self._pad(self._finite_difference(V))

    def _exact(self, V: Tensor) -> Tensor:
        out = self._hessian._matmat(self.gather(V)) * (self.num_local / self.num_total)
        out = self._all_reduce(out, self.group)  # every rank's data, replicas included
        return self._pad(out[self._maps[self.rank]])

    def _flat_grad(self) -> Tensor:
        """Gradient of the loss over all ranks' data (local shard, flat) via FSDP2."""
        obj, scale = self.objective, self.data_world * self.num_local / self.num_total
        for p in self._params.values():
            p.grad = None
        with torch.enable_grad():
            for batch, w in obj.batches():  # FSDP2 averages over ranks: scale by W N_r/N
                if obj.loss.kind == "custom":
                    value = obj.loss.fn(self.model, batch)
                    loss = getattr(value, "total", value)
                else:
                    x, y = obj._split(batch)
                    out = self.model(**x) if isinstance(x, dict) else self.model(x)
                    loss = obj.criterion(output_tensor(out), y)
                (loss * (w * scale)).backward()
        grads = [
            torch.zeros_like(p.to_local()) if p.grad is None else p.grad.to_local()
            for p in self._params.values()
        ]
        return torch.cat([g.reshape(-1) for g in grads]).detach()

    def _set_shards(self, base: list[Tensor], v: Tensor | None, step: float) -> None:
        with torch.no_grad():
            offset = 0
            for p, b in zip(self._params.values(), base, strict=True):
                n = b.numel()
                shard = p.to_local()
                shard.copy_(b if v is None else b + step * v[offset : offset + n].view_as(b))
                offset += n

    def _central(self, base: list[Tensor], v: Tensor, step: float) -> Tensor:
        self._set_shards(base, v, step)
        plus = self._flat_grad()
        self._set_shards(base, v, -step)
        minus = self._flat_grad()
        return (plus - minus) / (2 * step)

    def _default_eps(self, vnorm: float, theta_norm: float) -> float:
        u = torch.finfo(self.dtype).eps / 2
        power = 1 / 5 if self.richardson else 1 / 3
        return (3 * u) ** power * (1 + theta_norm) / vnorm

    def _column(self, base: list[Tensor], v: Tensor, step: float) -> tuple[Tensor, float]:
        """One product column and its error estimate (NaN when not estimated)."""
        d1 = self._central(base, v, step)
        if not (self.error_estimate or self.richardson):
            return d1, float("nan")
        d2 = self._central(base, v, 2 * step)
        if not self.richardson:
            return d1, float(self.norm(self._pad((d1 - d2)[:, None]))[0])
        r1 = (4 * d1 - d2) / 3
        if not self.error_estimate:
            return r1, float("nan")
        r2 = (4 * d2 - self._central(base, v, 4 * step)) / 3
        # asymptotically ||r1 - r2|| = 15 c eps^4; / 5 keeps a 3x margin for rounding
        return r1, float(self.norm(self._pad((r1 - r2)[:, None]))[0]) / 5

    def _finite_difference(self, V: Tensor) -> Tensor:
        base = [p.to_local().detach().clone() for p in self._params.values()]
        grads = [p.grad for p in self._params.values()]
        flat = torch.cat([b.reshape(-1) for b in base])
        theta_norm = float(self.norm(self._pad(flat[:, None]))[0])
        V = self._local(V)
        vnorms = self.norm(self._pad(V)).tolist()
        cols, errors, steps = [], [], []
        try:
            for k, vnorm in enumerate(vnorms):
                if vnorm == 0:
                    cols.append(torch.zeros_like(V[:, k]))
                    errors.append(0.0), steps.append(0.0)
                    continue
                step = self.eps if self.eps is not None else self._default_eps(vnorm, theta_norm)
                col, err = self._column(base, V[:, k], step)
                cols.append(col), errors.append(err), steps.append(step)
        finally:
            self._set_shards(base, None, 0.0)  # copy the saved shards back: bit-identical
            for p, g in zip(self._params.values(), grads, strict=True):
                p.grad = g
        self.last_error = torch.tensor(errors, dtype=torch.float64)
        self.eps_used = torch.tensor(steps, dtype=torch.float64)
        return torch.stack(cols, 1)
