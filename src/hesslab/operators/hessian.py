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

import copy
import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.func import grad, jvp, vmap

from hesslab.batches import batch_rows, batch_tensors, map_tensors
from hesslab.errors import ConfigurationError, HesslabError
from hesslab.objective import Objective
from hesslab.operators.curvature import CurvatureOperator

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

# forward-over-reverse does a forward and a backward pass plus the tangents: at least this
# share of the time of the cached mode's graph building (a forward and a create_graph
# backward), which therefore bounds it from below before it is timed
_GRADIENT_SHARE = 0.75

# the mode choice first runs every candidate on a slice of batches with at least this many
# rows, and drops one this many times slower than the best there (see HessianOperator._screen)
_SCREEN_MIN_ROWS = 2
_SCREEN_RATIO = 2.0

# mode choices of "auto" operators in this process: memo key -> mode_report entry
_MODE_MEMO: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
_MODE_MEMO_SIZE = 256


def clear_mode_memo() -> None:
    """Forget the product modes that ``mode="auto"`` operators chose in this process.

    Later operators time the modes again at their first product. Useful when the
    machine's load changed a lot, or to compare timings.
    """
    _MODE_MEMO.clear()


class HessianOperator(CurvatureOperator):
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
        self.autocast = _autocast_dtype(autocast, objective.space.dtype)
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

    def _candidates(self) -> list[str]:
        # reverse-over-reverse first: its first-order graph (built before its timed run in
        # the cached mode) takes the process's first-call costs off the timed runs
        rev = "reverse-over-reverse-cached" if self.cache_graph else "reverse-over-reverse"
        return [rev, "forward-over-reverse"]

    def _choose(
        self, batch: Any, Vd: Mapping[str, Tensor], kind: str
    ) -> tuple[str, Mapping[str, Tensor] | None]:
        """Time each applicable mode on this batch; the fastest that works, and its product.

        Single products are timed on one column, blocks on two (the fewest that run the
        vectorised paths). Each candidate runs once; a run within 1.5x of the best so
        far but slower than it runs once more (its first run may carry first-call costs),
        best time kept; a run more than 1.5x slower is dropped without repeats. The
        cached mode's first-order graph is built before its run (not timed: every later
        product reuses it); its time bounds forward-over-reverse from below (see
        ``_GRADIENT_SHARE``), which is not run when that bound is 1.5x the best already.
        The product is the chosen mode's last run when the timed
        columns were all of ``Vd`` (else ``None``): the same mode on the same input, so
        the same numbers as a recomputation.
        """
        K_in = next(iter(Vd.values())).shape[0]
        Vd = {n: t[: min(t.shape[0], 1 if kind == "single" else 2)] for n, t in Vd.items()}
        K = next(iter(Vd.values())).shape[0]
        timings: dict[str, float] = {}
        if kind == "block":
            timings.update(self._columns_time(batch, Vd))
        errors = self._screen(batch, Vd)
        outputs: dict[str, Mapping[str, Tensor]] = {}
        floor = 0.0  # a lower bound on forward-over-reverse's seconds per column
        extra = ["columns"] if kind == "block" and "columns" not in timings else []
        for mode in [m for m in self._candidates() if m not in errors] + extra:
            best = min(timings.values(), default=float("inf"))
            if mode == "forward-over-reverse" and floor > 1.5 * best:
                errors[mode] = f"not timed: its gradient pass alone takes {floor:.2e} s/column"
                continue
            try:
                if mode == "reverse-over-reverse-cached" and self._batch_index not in self._graphs:
                    t0 = time.perf_counter()
                    self._first_order_graph(batch, cached=True)
                    floor = _GRADIENT_SHARE * (time.perf_counter() - t0) / K
                self._time_mode(mode, batch, Vd, timings, outputs)
            except HesslabError:  # a diagnosed input error, not a mode that cannot run
                raise
            except (RuntimeError, NotImplementedError) as e:  # e.g. an op without vmap rule
                errors[mode] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                timings.pop(mode, None)
                outputs.pop(mode, None)
        if not timings:
            raise ConfigurationError(
                f"no Hessian-vector product mode works for this model: {errors}"
            )
        best = min(timings, key=timings.__getitem__)
        self.mode_report[kind] = {"mode": best, "seconds_per_column": timings, "errors": errors}
        _remember(self._memo_key(batch, kind), self.mode_report[kind])
        self._release_unused_graphs()
        return best, outputs.get(best) if K == K_in else None

    def _screen(self, batch: Any, Vd: Mapping[str, Tensor]) -> dict[str, str]:
        """Candidates clearly slower on a slice of the batch: ``{mode: reason}``.

        A batch of at least :data:`_SCREEN_MIN_ROWS` rows is first cut to its first
        ``ceil(rows / 8)`` rows; each candidate runs once on that slice (the cached mode's
        time is its backward pass alone, its graph being built untimed, as every later
        product reuses it), and one more than :data:`_SCREEN_RATIO` times slower than the
        best is not timed on the whole batch. The full-batch timing then decides among
        the others, so a wrong screen can only drop a mode that was far slower on the
        slice. A slice that fails (a custom loss that cannot be cut) screens nothing.
        """
        try:
            n = self.objective._batch_size(batch)
        except HesslabError:
            return {}
        if n < _SCREEN_MIN_ROWS:
            return {}
        r = -(-n // 8)
        part = map_tensors(batch, lambda t: batch_rows(t, 0, r, n))
        times: dict[str, float] = {}
        try:
            for mode in self._candidates():
                graph = None
                if mode.startswith("reverse"):
                    t0 = time.perf_counter()
                    graph = self._first_order_graph(part, cached=False)
                    build = time.perf_counter() - t0
                t0 = time.perf_counter()
                if graph is None:
                    self._fwd_rev(part, Vd)
                else:
                    self._rev_rev(part, Vd, cached=False, graph=graph)
                times[mode] = time.perf_counter() - t0
                if mode == "reverse-over-reverse":
                    times[mode] += build
        except (HesslabError, RuntimeError, NotImplementedError):  # the full timing decides
            return {}
        best = min(times.values())
        return {
            m: f"not timed: {t:.2e} s against {best:.2e} s on a slice of {r} of {n} rows"
            for m, t in times.items()
            if t > _SCREEN_RATIO * best
        }

    def _time_mode(
        self, mode: str, batch: Any, Vd: Mapping[str, Tensor], timings: dict, outputs: dict
    ) -> None:
        """Run ``mode`` once, again if within 1.5x of the best but slower; best time kept."""
        K = next(iter(Vd.values())).shape[0]
        for _repeat in range(2):
            t0 = time.perf_counter()
            outputs[mode] = self._apply(mode, batch, Vd)
            dt = (time.perf_counter() - t0) / K
            best = min(timings.values(), default=float("inf"))
            timings[mode] = min(timings.get(mode, float("inf")), dt)
            if dt <= best or dt > 1.5 * best:  # the best, or clearly slower
                return

    def _columns_time(self, batch: Any, Vd: Mapping[str, Tensor]) -> dict[str, float]:
        """The ``"columns"`` block candidate's time per column: the single products' one.

        Chooses the single mode first if needed; ``{}`` when the single mode was set
        without timings (then ``"columns"`` is timed like the other candidates).
        """
        if "single" not in self.mode_report:
            self._choose_or_recall(batch, {n: t[:1] for n, t in Vd.items()}, "single")
        single = self.mode_report["single"]
        seconds = single.get("seconds_per_column", {}).get(single["mode"])
        return {} if seconds is None else {"columns": seconds}

    def _release_unused_graphs(self) -> None:
        """Free the cached graphs when no chosen mode uses them (they hold activations)."""
        chosen = {self.mode_report.get(k, {}).get("mode") for k in ("single", "block")}
        if "reverse-over-reverse-cached" not in chosen:
            self._graphs.clear()

    def _batch_matmat(self, batch: Any, Vd: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
        if self.autocast is None:
            return self._batch_product(batch, Vd)
        with torch.autocast(self.device.type, dtype=self.autocast):
            return self._batch_product(batch, Vd)

    def _batch_product(self, batch: Any, Vd: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
        if self.mode != "auto":
            return self._apply(self.mode, batch, Vd)
        kind = "single" if next(iter(Vd.values())).shape[0] == 1 else "block"
        chosen = self.mode_report.get(kind, {}).get("mode")
        if chosen is None:
            chosen, out = self._choose_or_recall(batch, Vd, kind)
            if out is not None:
                return out
        return self._apply(chosen, batch, Vd)

    def _memo_key(self, batch: Any, kind: str) -> tuple:
        """What the modes' speed depends on (see the module docstring)."""
        if self._structure is None:
            obj, model = self.objective, self.objective.model
            tree = hashlib.sha1(repr(model).encode()).hexdigest()
            self._structure = (
                type(model).__module__,
                type(model).__qualname__,
                tree,
                model.training,
                repr(obj.loss),
                type(obj).__qualname__,
                self.space.names,
                tuple(tuple(s) for s in self.space.shapes),
                str(self.space.dtype),
                str(self.space.device),
                self.cache_graph,
                str(self.autocast),
            )
        shapes = tuple((tuple(t.shape), str(t.dtype), str(t.device)) for t in batch_tensors(batch))
        return (kind, shapes, *self._structure)

    def _choose_or_recall(
        self, batch: Any, Vd: Mapping[str, Tensor], kind: str
    ) -> tuple[str, Mapping[str, Tensor] | None]:
        """The remembered mode for this structure (no timing), else :meth:`_choose`."""
        key = self._memo_key(batch, kind)
        known = _MODE_MEMO.get(key)
        single_key = None  # set when the single mode is recalled for a "columns" block
        if known is not None and known["mode"] == "columns" and "single" not in self.mode_report:
            single_key = self._memo_key(batch, "single")
            single = _MODE_MEMO.get(single_key)
            if single is None:
                known = None
            else:
                self.mode_report["single"] = {**copy.deepcopy(single), "reused": True}
        if known is None:
            return self._choose(batch, Vd, kind)
        _MODE_MEMO.move_to_end(key)
        self.mode_report[kind] = {**copy.deepcopy(known), "reused": True}
        try:
            return known["mode"], self._apply(known["mode"], batch, Vd)
        except (RuntimeError, NotImplementedError):  # e.g. a model that only looks alike
            _MODE_MEMO.pop(key, None)
            del self.mode_report[kind]
            if single_key is not None:
                _MODE_MEMO.pop(single_key, None)
                del self.mode_report["single"]
            return self._choose(batch, Vd, kind)

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


def _remember(key: tuple, entry: dict[str, Any]) -> None:
    _MODE_MEMO[key] = copy.deepcopy({k: v for k, v in entry.items() if k != "reused"})
    _MODE_MEMO.move_to_end(key)
    while len(_MODE_MEMO) > _MODE_MEMO_SIZE:
        _MODE_MEMO.popitem(last=False)


def _autocast_dtype(autocast: str | torch.dtype | None, dtype: torch.dtype) -> torch.dtype | None:
    """The autocast dtype (``None``: off); autocast lowers float32 work only."""
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
