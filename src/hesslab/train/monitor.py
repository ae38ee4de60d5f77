"""Track the Hessian spectrum through training: :class:`SpectrumMonitor` and its sinks.

A monitor measures, every ``every`` steps, a chosen set of spectral quantities of the
full-data Hessian at the model's *current* weights, without touching the model: it
builds :class:`hesslab.Objective` (which snapshots the parameters and evaluates the model
functionally) and runs the estimators of :mod:`hesslab.linalg` on
:class:`~hesslab.HessianOperator`. Each measurement is a frozen :class:`Measurement`
holding values, their errors and diagnostics; sinks write them out
(:class:`JsonlSink`, :class:`RunDirSink`, :class:`TensorBoardSink`).

Use it from a plain PyTorch loop::

    monitor = SpectrumMonitor((x, y), "ce", every=50, k=5, sinks=[JsonlSink("m.jsonl")])
    for step in range(1000):
        ...                                  # optimizer step
        model.eval(); monitor.step(model, step); model.train()

or as a callback of :func:`hesslab.train.fit` (``fit(..., callbacks=[monitor])``): the
trainer calls ``monitor(model, step, info)`` in eval mode.

Quantities (keys of :attr:`Measurement.values`; errors under the same key in
:attr:`Measurement.errors`):

``lambda_max`` / ``top_k``
    ``lambda/1..k`` (``lambda_max`` = ``lambda/1``), errors = Lanczos residual norms
    ``||H v - lambda v||`` (a bound on each eigenvalue's error). Warm-started from the
    previous measurement's eigenvectors (``v0=``); see *warm starts* below.
``bottom``
    ``lambda_min`` (smallest eigenvalue), warm-started too.
``trace`` / ``trace_sq``
    ``tr H`` and ``tr H^2`` (:func:`hesslab.trace`, :func:`hesslab.frobenius_sq`), errors
    = standard errors.
``ws_bounds``
    Wolkowicz–Styan bounds ``ws/lambda_max_lower``, ``ws/lambda_max_upper``,
    ``ws/lambda_min_lower``, ``ws/lambda_min_upper`` from those traces.
``logdet``
    ``sum_{i<=r} log lambda_i`` of the top-``r`` block (``r = logdet_rank``, default
    ``k``) by :func:`hesslab.linalg.logdet.logdet`, error ``sum_i b_i / lambda_i`` with
    ``b_i`` the eigenvalues' error bounds; NaN when one of them is not positive beyond
    its error bound (the reason is logged in diagnostics).
``effective_rank``
    ``(tr H)^2 / tr H^2``, the participation-ratio effective rank of the whole spectrum
    (exact for PSD ``H``), error by first-order propagation of the two stderrs.
``ipr``
    ``ipr/1..k`` of the top eigenvectors, ``ipr_null`` = ``3/(P+2)``, and per layer
    ``ipr/<layer>/1..k`` (each vector restricted to the layer and renormalised).
``displacement``
    vector form ``disp_prev/i`` and ``disp_ref/i`` = ``2(1 - |<v_i(t'), v_i(t)>|)`` against
    the previous measurement and the reference time ``t_w`` (the first measurement at
    ``step >= reference_step``), and the subspace form ``subdisp_prev``, ``subdisp_ref``
    = ``1 - ||U(t')^T U(t)||_F^2 / k``.
``layers``
    per layer (``op.blocks(layer_groups)``): ``layer/<name>/lambda_max`` (warm-started) and
    ``layer/<name>/trace``; with ``layer_density=True`` also the layer's SLQ density's
    ``layer/<name>/w1_to_full`` (:func:`~hesslab.measures.distances.spectrum_w1`).
``moment_overlap``
    ``moment_overlap`` = ``||U_H^T U_M||_F^2 / k``, top-``k`` eigenvectors of ``H`` and of the
    gradient second moment ``M`` (Li et al., 2019).
``grad_alignment``
    ``grad_alignment`` = ``||U_H^T g||^2 / ||g||^2`` for the full-batch gradient ``g``.

Every operator quantity is measured through the vocabulary of :mod:`hesslab.quantities`
(:data:`USES` names the entries each monitor quantity needs); the per-quantity
``diagnostics["seconds"]`` and ``diagnostics["matvecs"]`` are the results' own.

Warm starts: the top-``k`` Lanczos run is started from the previous eigenvectors. With
``compare_cold`` the same eigenproblem is also solved from a random start and both
product counts (``diagnostics["matvecs"]["top_k"]`` and ``["top_k_cold"]``) and the
largest eigenvalue difference are recorded; :meth:`SpectrumMonitor.warm_start_summary`
totals them.

Randomness: every stochastic estimate in the measurement at step ``s`` uses its own
generator seeded with :func:`measurement_seed` ``(seed, s, name)``, so a measurement is
reproducible on its own (and comparable to a direct call with the same seed).

Data-parallel training (``torchrun``): with ``distributed=True`` every rank passes its own
shard of the data; each operator is wrapped in
:class:`~hesslab.distributed.DistributedOperator` (one all-reduce per product, exact
``N_r / N`` weights), the gradient of ``grad_alignment`` is all-reduced with the same
weights, the base seed is broadcast from rank 0 (so probes and start vectors agree), and
every rank computes the same measurement while only rank 0 writes to the sinks. All ranks
must call :meth:`SpectrumMonitor.step` at the same steps (the products are collective)::

    idx = shard_indices(len(data), dist.get_rank(), dist.get_world_size())
    monitor = SpectrumMonitor(data.subset(idx).loader(256), "ce", every=50,
                              distributed=True, sinks=[JsonlSink("m.jsonl")])
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hesslab.errors import ConfigurationError
from hesslab.objective import Objective
from hesslab.operators import HessianOperator
from hesslab.operators.base import LinearOperator
from hesslab.train.monitor_quantities import QUANTITIES, USES, _Measuring, _Record, measurement_seed
from hesslab.train.sinks import JsonlSink, Measurement, RunDirSink, Sink, TensorBoardSink

__all__ = [
    "QUANTITIES",
    "SHARDED_QUANTITIES",
    "USES",
    "JsonlSink",
    "Measurement",
    "RunDirSink",
    "Sink",
    "SpectrumMonitor",
    "TensorBoardSink",
    "measurement_seed",
]

logger = logging.getLogger(__name__)


class SpectrumMonitor(_Measuring):
    """Measure the Hessian spectrum every ``every`` steps (see the module docstring).

    Args:
        data: the data the Hessian is taken over (anything :class:`hesslab.Objective`
            accepts: a batch ``(x, y)``, a list of batches, a DataLoader without shuffle,
            or a :class:`~hesslab.data.TensorData`).
        loss_fn: ``"ce"``, ``"mse"`` or a criterion (as for :class:`~hesslab.Objective`).
        every: measure when ``step % every == 0``.
        quantities: names from :data:`QUANTITIES`.
        k: number of top eigenpairs (``top_k``, ``ipr``, ``displacement``, overlaps).
        params: parameter selection of the objective (``None``: all trainable).
        layer_groups: ``{layer: [parameter names]}`` for per-layer quantities (default
            :func:`hesslab.layer_groups` of the model).
        sinks: where measurements go (objects with ``write(measurement)``).
        seed: base seed of every stochastic estimate (see :func:`measurement_seed`).
        generator: alternatively, a generator from which the base seed is drawn once.
        reference_step: ``t_w``; the first measurement at ``step >= reference_step`` is
            the reference of ``disp_ref``/``subdisp_ref`` (default: the first one).
        tol: relative residual tolerance of the eigensolvers.
        trace_matvecs: budget of each trace estimate (``trace``, ``trace_sq``, layer
            traces).
        trace_method: method of :func:`hesslab.trace` (``"exact"`` for small ``P``).
        logdet_rank: ``r`` of ``logdet`` (default ``k``).
        block_size: Lanczos block size for ``top_k`` (``None``: single vector; the warm
            start then sums the previous vectors into one start vector).
        warm_start: start each eigensolve from the previous measurement's vectors.
        compare_cold: ``True``: also solve every top-``k`` problem from a random start and
            record both product counts; an int ``n``: do it every ``n``-th measurement.
        layer_density: with ``layers``, also SLQ densities of the blocks and the full
            Hessian, and their ``spectrum_w1`` distance.
        density_steps: Lanczos steps of those densities.
        moment_kind: ``kind`` of :func:`hesslab.gradient_moment` for ``moment_overlap``.
        loss_kwargs: extra keyword arguments of :class:`~hesslab.Objective`.
        distributed: ``data`` is this rank's shard of a ``torch.distributed`` job (e.g.
            under ``torchrun``; the process group must be initialised first): measure the
            curvature of the union of the shards and write to the sinks on rank 0 only
            (see the module docstring). ``moment_overlap`` then needs
            ``moment_kind="second_moment"``.
        wrap: applied to every operator before use (the full Hessian, its layer blocks,
            the gradient moment); default ``DistributedOperator`` with
            ``distributed=True``, else none.
        group: the process group of ``distributed`` (default: the world).
        sharded: the model passed to :meth:`step` is FSDP2-sharded (``fully_shard``)
            and ``data`` is this rank's shard: the full Hessian is a
            :class:`~hesslab.sharded.ShardedHessianOperator` (``True``: the exact route;
            or a route name), its eigenvectors are this rank's shards, only rank 0
            writes. Quantities limited to :data:`SHARDED_QUANTITIES`.

    Attributes:
        measurements: every :class:`Measurement` so far, in order.
    """

    def __init__(
        self,
        data: Any,
        loss_fn: Any = "ce",
        *,
        every: int = 100,
        quantities: Sequence[str] = ("lambda_max", "trace"),
        k: int = 5,
        params: Any = None,
        layer_groups: Mapping[str, Sequence[str]] | None = None,
        sinks: Iterable[Any] = (),
        seed: int = 0,
        generator: torch.Generator | None = None,
        reference_step: int | None = None,
        tol: float = 1e-6,
        trace_matvecs: int = 96,
        trace_method: str = "krylov",
        logdet_rank: int | None = None,
        block_size: int | None = None,
        warm_start: bool = True,
        compare_cold: bool | int = False,
        layer_density: bool = False,
        density_steps: int = 60,
        moment_kind: str = "second_moment",
        loss_kwargs: Mapping[str, Any] | None = None,
        distributed: bool = False,
        wrap: Callable[[LinearOperator], LinearOperator] | None = None,
        group: Any = None,
        sharded: bool | str = False,
    ) -> None:
        quantities = _check_arguments(every, quantities, k)
        self.sharded = "exact" if sharded is True else (sharded or None)
        if self.sharded is not None:
            _check_sharded(quantities)
            distributed, wrap = True, wrap or (lambda op: op)
        if hasattr(data, "x") and hasattr(data, "y") and not isinstance(data, tuple):
            data = (data.x, data.y)  # TensorData
        self.data = data
        self.loss_fn = loss_fn
        self.every = every
        self.quantities = quantities
        self.k = k
        self.params = params
        self.layer_groups = None if layer_groups is None else dict(layer_groups)
        self.sinks = list(sinks)
        if generator is not None:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        self.distributed = bool(distributed)
        self.group = group
        self._main = True
        if self.distributed:
            seed, self._main, wrap = _distributed_setup(
                int(seed), quantities, moment_kind, wrap, group
            )
        self._wrap: Callable[[LinearOperator], LinearOperator] = wrap or (lambda op: op)
        self.seed = int(seed)
        self.reference_step = reference_step
        self.tol = tol
        self.trace_matvecs = trace_matvecs
        self.trace_method = trace_method
        self.logdet_rank = logdet_rank
        self.block_size = block_size
        self.warm_start = warm_start
        self.compare_cold = compare_cold
        self.layer_density = layer_density
        self.density_steps = density_steps
        self.moment_kind = moment_kind
        self.loss_kwargs = dict(loss_kwargs or {})
        self.measurements: list[Measurement] = []
        self._prev_U: Tensor | None = None
        self._ref_U: Tensor | None = None
        self._ref_step: int | None = None
        self._prev_bottom: Tensor | None = None
        self._prev_layer: dict[str, Tensor] = {}
        self._count = 0

    # ---------------------------------------------------------------- callbacks
    def __call__(self, model: nn.Module, step: int, info: Mapping[str, Any] | None = None) -> None:
        """Callback form for :func:`hesslab.train.fit` (never stops training)."""
        self.step(model, step)
        return None

    def step(self, model: nn.Module, step: int) -> dict[str, float] | None:
        """Measure if ``step % every == 0``; returns the values (or ``None``).

        The model is not modified (parameters, ``.grad``, ``requires_grad``, train/eval
        flags). Train-mode dropout or BatchNorm is refused by the objective's determinism
        check: call ``model.eval()`` before.
        """
        if step % self.every != 0:
            return None
        m = self.measure(model, step)
        return m.values

    @property
    def reference(self) -> tuple[int | None, Tensor | None]:
        """``(t_w, U(t_w))``: the reference step and its top-``k`` eigenvectors."""
        return self._ref_step, self._ref_U

    def warm_start_summary(self) -> dict[str, float]:
        """Total products of warm-started and cold top-``k`` solves where both were run."""
        warm = cold = n = 0
        diff = 0.0
        for m in self.measurements:
            mv = m.diagnostics.get("matvecs", {})
            if "top_k_cold" in mv and m.diagnostics.get("warm_started"):
                warm += mv["top_k"]
                cold += mv["top_k_cold"]
                diff = max(diff, m.diagnostics.get("top_k_cold_max_abs_diff", 0.0))
                n += 1
        return {
            "num_compared": n,
            "matvecs_warm": warm,
            "matvecs_cold": cold,
            "saving": 1.0 - warm / cold if cold else float("nan"),
            "max_abs_eigenvalue_diff": diff,
        }

    @property
    def writes(self) -> bool:
        """Whether this process writes to the sinks (rank 0, or not distributed)."""
        return self._main

    def close(self) -> None:
        """Close the sinks that have a ``close()`` (on the writing rank only)."""
        if not self._main:
            return
        for s in self.sinks:
            if hasattr(s, "close"):
                s.close()

    def _operator(self, model: nn.Module) -> tuple[Any, Any, LinearOperator, int]:
        """``(objective, local Hessian, the operator measured, P)`` at the current weights."""
        if self.sharded is not None:
            from hesslab.sharded import ShardedHessianOperator

            op = ShardedHessianOperator(
                model, self.loss_fn, self.data, route=self.sharded, group=self.group,
                **self.loss_kwargs,
            )  # fmt: skip
            return op.objective, None, op, op.full_size
        obj = Objective(model, self.loss_fn, self.data, self.params, **self.loss_kwargs)
        H_local = HessianOperator(obj)
        return obj, H_local, self._wrap(H_local), obj.space.size

    def measure(self, model: nn.Module, step: int) -> Measurement:
        """Measure now (regardless of ``every``), record, send to the sinks, return."""
        t0 = time.perf_counter()
        q = set(self.quantities)
        rec = _Record()
        obj, H_local, op, P = self._operator(model)
        rec.diag["P"] = P
        k = min(self.k, P)
        top = self._top(rec, op, step, q, k)
        if "bottom" in q:
            self._bottom(rec, op, step)
        self._traces(rec, op, step, q)
        if "logdet" in q and top is not None:
            self._logdet(rec, op, top, k)
        groups = self._groups(model, obj) if q & {"ipr", "layers"} else None
        U = None if top is None else top.vectors.detach().to(torch.float64)
        if U is not None:
            self._eigvec_measures(rec, obj, op, U, step, q, k, groups)
        if "layers" in q and groups:
            self._layers(H_local, groups, step, rec)
        if U is not None:
            self._prev_U = top.vectors.detach()
        self._count += 1
        meas = Measurement(
            step=int(step),
            values=rec.values,
            errors=rec.errors,
            diagnostics=rec.diag,
            seconds=time.perf_counter() - t0,
        )
        self.measurements.append(meas)
        if self._main:
            for s in self.sinks:
                s.write(meas)
        logger.debug("spectrum monitor step %d: %s", step, rec.values)
        return meas


def _check_arguments(every: Any, quantities: Sequence[str] | str, k: Any) -> tuple[str, ...]:
    """Validate :class:`SpectrumMonitor`'s ``every``, ``quantities`` and ``k``."""
    if not isinstance(every, int) or every < 1:
        raise ConfigurationError(f"every must be a positive int, got {every!r}")
    if isinstance(quantities, str):
        quantities = (quantities,)
    unknown = [q for q in quantities if q not in QUANTITIES]
    if unknown:
        raise ConfigurationError(f"unknown quantities {unknown}; choose from {QUANTITIES}")
    if not isinstance(k, int) or k < 1:
        raise ConfigurationError(f"k must be a positive int, got {k!r}")
    return tuple(quantities)


#: The quantities a monitor measures on an FSDP2-sharded model (``sharded=``).
SHARDED_QUANTITIES = (
    "lambda_max", "top_k", "bottom", "trace", "trace_sq", "ws_bounds", "logdet", "effective_rank",
)  # fmt: skip


def _check_sharded(quantities: Sequence[str]) -> None:
    """Refuse the quantities that need whole eigenvectors, gradients or layer blocks."""
    bad = [q for q in quantities if q not in SHARDED_QUANTITIES]
    if bad:
        raise ConfigurationError(
            f"quantities {bad} are not measured on a sharded model (they need whole "
            f"eigenvectors, gradients or layer blocks); choose from {SHARDED_QUANTITIES}"
        )


def _distributed_setup(
    seed: int,
    quantities: Sequence[str],
    moment_kind: str,
    wrap: Callable[[LinearOperator], LinearOperator] | None,
    group: Any,
) -> tuple[int, bool, Callable[[LinearOperator], LinearOperator]]:
    """``(seed broadcast from rank 0, whether this rank writes, the operator wrapper)``."""
    import torch.distributed as dist

    from hesslab.distributed import DistributedOperator, broadcast_int

    if not (dist.is_available() and dist.is_initialized()):
        raise ConfigurationError(
            "distributed=True needs an initialised torch.distributed process group; "
            "launch with torchrun and call torch.distributed.init_process_group first"
        )
    if "moment_overlap" in quantities and moment_kind != "second_moment":
        raise ConfigurationError(
            f"moment_kind={moment_kind!r} is not a mean over data points, so it cannot "
            "be summed over shards; use moment_kind='second_moment' with distributed=True"
        )
    seed = broadcast_int(int(seed), group=group)
    main = dist.get_rank(group) == 0
    if wrap is None:

        def wrap(op: LinearOperator) -> LinearOperator:
            return DistributedOperator(op, group=group)

    return seed, main, wrap
