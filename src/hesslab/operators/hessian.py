"""The exact Hessian of the full-data loss as a linear operator.

``H = sum_b w_b * d^2 loss_b / d theta^2`` (weights from :meth:`Objective.batches`), applied
without ever forming ``H`` (Pearlmutter, 1994, "Fast exact multiplication by the
Hessian"). Three product modes:

* ``"forward-over-reverse"``: ``jvp(grad(loss), v)`` vectorised over the ``K`` columns with
  :func:`torch.func.vmap` (one forward-mode pass through the gradient computation).
* ``"reverse-over-reverse"``: build ``g = grad(loss)`` with ``create_graph=True``, then
  ``grad(g . v)``; all ``K`` columns go through one batched backward
  (``is_grads_batched``) when the model allows it.
* ``"reverse-over-reverse-cached"``: the same, but the first-order graph of every batch is
  built once and reused by every later product (only when the data fits in memory).

``mode="auto"`` times the applicable modes on the first batch at the first product (for
single products on one column, for blocks on two; each candidate runs once, once more
only when it is within 1.5x of the best so far but slower, so the choice costs about two
products of the chosen mode). A batch of two or more rows is screened first: every
candidate runs once on its first ``ceil(rows / 8)`` rows, and one more than 2x slower
than the best there is not timed on the whole batch (a 33M-parameter GPT-2 on two
sequences: the first product's extra time fell from 5.5 to 2.5 later products, the
forward-over-reverse run it skips cost 4.4). The fastest is kept; the choice and the
timings are in :attr:`HessianOperator.mode_report`. The cached mode's first-order graph
is built before its timed run and kept only when that mode is chosen. The first product's
result is the chosen mode's own timing run when that covered the whole input (one
product saved, the result identical to a recomputation).

The choice is remembered for the process, keyed by the structure the timings depend on:
the model's class and module tree, its train/eval flag, the loss, the differentiated
parameters (names, shapes, dtype, device), the first batch's tensor shapes, dtypes and
devices, and whether graphs may be cached. A later operator with the same key (a
:class:`~hesslab.SpectrumMonitor` measurement at the next step, a :meth:`restrict` block
of a layer seen before, a second analysis) reuses it without timing; its
``mode_report[kind]["reused"]`` is ``True``. :func:`clear_mode_memo` forgets the choices
(e.g. after the machine's load changed).
For blocks one more candidate competes, ``"columns"``: the block's columns one after the
other with the mode chosen for single products (its time per column is the single
products' one, not timed again). On CPUs a vectorised block is often
slower per column than single products (e.g. 1.8x on the 85k-parameter MLP of
``bench/peers``), on GPUs it is usually much faster; timing decides. The timing products
are not part of any algorithm's ``num_matvecs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.func import grad, jvp, vmap

from hesslab.errors import ConfigurationError
from hesslab.objective import Objective
from hesslab.operators.curvature import CurvatureOperator
from hesslab.operators.mode_choice import ModeChoice, clear_mode_memo

__all__ = ["HESSIAN_MODES", "HessianOperator", "clear_mode_memo", "hessian"]

HESSIAN_MODES = ("forward-over-reverse", "reverse-over-reverse", "reverse-over-reverse-cached")
_ALIASES = {
    "fwd-rev": "forward-over-reverse",
    "forward": "forward-over-reverse",
    "rev-rev": "reverse-over-reverse",
    "reverse": "reverse-over-reverse",
    "cached": "reverse-over-reverse-cached",
    "rev-rev-cached": "reverse-over-reverse-cached",
}


class HessianOperator(ModeChoice, CurvatureOperator):
    """Exact Hessian-vector products over the full data.

    Args:
        objective: the :class:`~hesslab.Objective`.
        mode: ``"auto"`` (default) or one of :data:`HESSIAN_MODES` (aliases ``"fwd-rev"``,
            ``"rev-rev"``, ``"cached"``).
        cache_graph: allow the cached mode: ``"auto"`` allows it when the data is a single
            batch (the caller has shown it fits in memory), ``True``/``False`` force it.
        autocast: ``"bfloat16"`` or ``"float16"`` runs each batch's product under
            :func:`torch.autocast` (float32 parameters only); the products of the batches
            come back in float32 and are summed in float32. Relative error against
            float64 (``||Hv - H_64 v|| / ||H_64 v||``, median over 8 vectors) measured
            by ``bench/autocast_error.py`` (``bench/results/autocast_error.md``): bfloat16
            5e-3 to 1e-1, float16 7e-4 to 3e-2 on the test and zoo models.
        compile: ``True`` compiles the forward-over-reverse product with
            :func:`torch.compile` (inductor; a string names another backend) and uses
            that mode (the double backward of the reverse-over-reverse modes cannot be
            traced). The first product compiles (seconds to minutes on a CPU); off by
            default: on 2 CPU cores it was no faster than the best eager mode
            (``bench/results/compile_cpu.md``).

    Attributes:
        mode_report: the chosen mode per block kind (``"single"``, ``"block"``), the
            seconds per column each candidate took, and whether batched backward worked.
    """

    def __init__(
        self,
        objective: Objective,
        *,
        mode: str = "auto",
        cache_graph: bool | str = "auto",
        autocast: str | torch.dtype | None = None,
        compile: bool | str = False,
    ) -> None:
        super().__init__(
            objective, mode=mode, cache_graph=cache_graph, autocast=autocast, compile=compile
        )
        mode = _ALIASES.get(mode, mode)
        if mode != "auto" and mode not in HESSIAN_MODES:
            raise ConfigurationError(
                f"unknown Hessian mode {mode!r}; use 'auto' or one of {HESSIAN_MODES}"
            )
        if compile:
            if mode not in ("auto", "forward-over-reverse"):
                raise ConfigurationError(
                    f"compile=True compiles the forward-over-reverse product (torch.compile "
                    f"cannot trace the double backward of {mode!r}); drop mode= or compile="
                )
            mode = "forward-over-reverse"
        if cache_graph == "auto":
            cache_graph = objective.num_batches == 1 and objective.max_batch_size is None
        if mode == "reverse-over-reverse-cached" and not cache_graph:
            cache_graph = True
        self.mode = mode
        self.cache_graph = bool(cache_graph)
        self._graphs: dict[int, tuple[list[Tensor], tuple[Tensor, ...]]] = {}
        self._batched_backward_ok = True
        self._compiled = _compiled_product(objective, compile) if compile else None
        self.mode_report: dict[str, Any] = {
            "requested": mode,
            "cache_graph": self.cache_graph,
            "autocast": None if self.autocast is None else str(self.autocast),
            "compile": compile,
            # the scaled_dot_product_attention backend of every derivative pass
            # (hesslab.derivative_context: the fused kernels have no double backward)
            "attention": "math",
        }
        self._structure: tuple | None = None

    # ------------------------------------------------------------- products
    def _fwd_rev(self, batch: Any, Vd: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
        obj = self.objective
        if self._compiled is not None:
            return self._compiled(obj.theta, batch, dict(Vd))

        def gfn(theta: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
            return grad(lambda th: obj.batch_loss(th, batch))(theta)

        def hvp(v: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
            return jvp(gfn, (obj.theta,), (v,))[1]

        if next(iter(Vd.values())).shape[0] == 1:
            out = hvp({n: t[0] for n, t in Vd.items()})
            return {n: t.unsqueeze(0) for n, t in out.items()}
        return vmap(hvp)(dict(Vd))

    def _first_order_graph(self, batch: Any, cached: bool) -> tuple[list[Tensor], tuple]:
        key = self._batch_index
        if cached and key in self._graphs:
            return self._graphs[key]
        obj = self.objective
        leaves = {n: t.detach().requires_grad_(True) for n, t in obj.theta.items()}
        with torch.enable_grad():
            loss = obj.batch_loss(leaves, batch)
            xs = [leaves[n] for n in obj.space.names]
            gs = torch.autograd.grad(loss, xs, create_graph=True)
        if cached:
            self._graphs[key] = (xs, gs)
        return xs, gs

    def _rev_rev(
        self, batch: Any, Vd: Mapping[str, Tensor], cached: bool, graph: tuple | None = None
    ) -> dict[str, Tensor]:
        xs, gs = self._first_order_graph(batch, cached) if graph is None else graph
        names = self.space.names
        K = next(iter(Vd.values())).shape[0]
        vs = [Vd[n] for n in names]
        if K > 1 and self._batched_backward_ok:
            try:
                out = torch.autograd.grad(
                    gs,
                    xs,
                    grad_outputs=vs,
                    retain_graph=True,
                    is_grads_batched=True,
                    allow_unused=True,
                )
                return {n: _zeros_if_none(o, v) for n, o, v in zip(names, out, vs, strict=True)}
            except RuntimeError:
                self._batched_backward_ok = False
                self.mode_report["batched_backward"] = False
        cols = []
        for k in range(K):
            out = torch.autograd.grad(
                gs, xs, grad_outputs=[v[k] for v in vs], retain_graph=True, allow_unused=True
            )
            cols.append([_zeros_if_none(o, v[k]) for o, v in zip(out, vs, strict=True)])
        if K == 1:  # a view instead of a copy per parameter (single products are the hot path)
            return {n: c.unsqueeze(0) for n, c in zip(names, cols[0], strict=True)}
        return {n: torch.stack([c[i] for c in cols]) for i, n in enumerate(names)}

    def _apply(self, mode: str, batch: Any, Vd: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
        if mode == "columns":  # the single-product mode, one column after the other
            single = self.mode_report["single"]["mode"]
            K = next(iter(Vd.values())).shape[0]
            cols = [
                self._apply(single, batch, {n: t[k : k + 1] for n, t in Vd.items()})
                for k in range(K)
            ]
            return {n: torch.cat([c[n] for c in cols]) for n in Vd}
        if mode == "forward-over-reverse":
            return self._fwd_rev(batch, Vd)
        return self._rev_rev(batch, Vd, cached=mode == "reverse-over-reverse-cached")

    def _batch_matmat(self, batch: Any, Vd: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
        if self.mode != "auto":
            return self._apply(self.mode, batch, Vd)
        kind = "single" if next(iter(Vd.values())).shape[0] == 1 else "block"
        chosen = self.mode_report.get(kind, {}).get("mode")
        if chosen is None:
            chosen, out = self._choose_or_recall(batch, Vd, kind)
            if out is not None:
                return out
        return self._apply(chosen, batch, Vd)

    def chosen_mode(self, kind: str = "single") -> str | None:
        """The mode used for single products (``"single"``) or blocks (``"block"``).

        For blocks this may be ``"columns"``: the columns one after the other with the
        single-product mode (``None`` before the first product in ``"auto"`` mode).
        """
        if self.mode != "auto":
            return self.mode
        return self.mode_report.get(kind, {}).get("mode")

    def clear_cache(self) -> None:
        """Release the cached first-order graphs."""
        self._graphs.clear()


def _compiled_product(objective: Objective, compile: bool | str) -> Any:
    """``torch.compile`` of the forward-over-reverse product ``(theta, batch, V) -> H_b V``.

    ``compile=True`` uses the default backend (inductor), a string names another backend
    (e.g. ``"aot_eager"``).
    """

    def product(theta: Any, batch: Any, Vd: dict[str, Tensor]) -> Any:
        def hvp(v: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
            gfn = grad(lambda th: objective.batch_loss(th, batch))
            return jvp(gfn, (theta,), (v,))[1]

        return vmap(hvp)(Vd)

    backend = "inductor" if compile is True else str(compile)
    # static shapes: a recompilation per batch shape and block width (dynamic shapes fail
    # in forward-mode AD's make_dual with symbolic sizes, torch 2.13)
    return torch.compile(product, backend=backend, dynamic=False)


def _zeros_if_none(out: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if out is None else out


def hessian(
    model_or_objective: Any,
    loss_fn: Any = None,
    data: Any = None,
    params: Any = None,
    *,
    mode: str = "auto",
    cache_graph: bool | str = "auto",
    autocast: str | torch.dtype | None = None,
    compile: bool | str = False,
    **objective_kwargs: Any,
) -> HessianOperator:
    """The Hessian of the full-data loss as an operator.

    ``hessian(model, loss_fn, data, params=None, **objective_kwargs)`` builds the
    :class:`~hesslab.Objective` first; ``hessian(objective)`` reuses one.

    Example:
        >>> H = hesslab.hessian(model.eval(), "ce", (x, y))
        >>> top = hesslab.eigenpairs(H, k=5)
    """
    obj = _objective(model_or_objective, loss_fn, data, params, objective_kwargs)
    return HessianOperator(
        obj, mode=mode, cache_graph=cache_graph, autocast=autocast, compile=compile
    )


def _objective(m: Any, loss_fn: Any, data: Any, params: Any, kw: dict) -> Objective:
    if isinstance(m, Objective):
        if loss_fn is not None or data is not None or params is not None or kw:
            raise ConfigurationError(
                "pass either an Objective or (model, loss_fn, data, ...), not both"
            )
        return m
    if loss_fn is None or data is None:
        raise ConfigurationError("pass (model, loss_fn, data) or an Objective")
    return Objective(m, loss_fn, data, params, **kw)
