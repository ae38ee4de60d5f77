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
import math
import os
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from hesslab.errors import ConfigurationError
from hesslab.io import append_jsonl
from hesslab.linalg.results import EigenResult, TraceEstimate
from hesslab.measures.distances import spectrum_w1
from hesslab.measures.eigvec import (
    displacement,
    gradient_alignment,
    ipr,
    ipr_null,
    subspace_displacement,
    subspace_overlap,
)
from hesslab.objective import Objective
from hesslab.operators import HessianOperator, gradient_moment
from hesslab.operators.base import LinearOperator
from hesslab.params import layer_groups as _layer_groups
from hesslab.quantities import Settings
from hesslab.quantities import measure as measure_quantity

__all__ = [
    "QUANTITIES",
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

#: Every quantity a monitor can measure (see the module docstring) -> the quantities of
#: :mod:`hesslab.quantities` it is computed from (``layers``: on each diagonal block).
USES: dict[str, tuple[str, ...]] = {
    "lambda_max": ("top_k",),
    "top_k": ("top_k",),
    "bottom": ("bottom",),
    "trace": ("trace",),
    "trace_sq": ("trace_sq",),
    "ws_bounds": ("trace", "trace_sq", "ws_bounds"),
    "logdet": ("top_k", "logdet"),
    "effective_rank": ("trace", "trace_sq"),
    "ipr": ("top_k",),
    "displacement": ("top_k",),
    "layers": ("lambda_max", "trace", "density"),
    "moment_overlap": ("top_k",),
    "grad_alignment": ("top_k",),
}
#: Every quantity a monitor can measure (see the module docstring).
QUANTITIES = tuple(USES)
#: The quantities that need the top-``k`` eigenvectors (not just ``lambda_max``).
_NEEDS_K = frozenset({"top_k", "ipr", "displacement", "logdet", "moment_overlap", "grad_alignment"})


def measurement_seed(seed: int, step: int, name: str) -> int:
    """Seed of the generator the measurement at ``step`` uses for quantity ``name``.

    ``(seed * 1_000_003 + step * 7_919 + crc32(name)) mod 2^62``: a direct call such as
    ``trace(op, generator=torch.Generator().manual_seed(measurement_seed(s, t, "trace")))``
    reproduces the monitor's number exactly.
    """
    return (int(seed) * 1_000_003 + int(step) * 7_919 + zlib.crc32(name.encode())) % (2**62)


@dataclass(frozen=True)
class Measurement:
    """One measurement of the spectrum.

    Attributes:
        step: the training step it was taken at.
        values: quantity name -> value (see the module docstring for the names).
        errors: quantity name -> error (residual norm for eigenvalues, standard error
            for trace estimates); only for quantities that have one.
        diagnostics: ``matvecs`` (per quantity, incl. ``top_k_cold`` when compared),
            ``converged`` flags, ``seconds`` per quantity, ``warm_started``, notes.
        seconds: wall time of the whole measurement.
    """

    step: int
    values: dict[str, float]
    errors: dict[str, float]
    diagnostics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def record(self) -> dict[str, Any]:
        """A flat JSON-ready dict: ``step``, ``seconds``, values, ``<name>_err`` errors."""
        out: dict[str, Any] = {"step": self.step, "seconds": self.seconds}
        out.update(self.values)
        out.update({f"{k}_err": v for k, v in self.errors.items()})
        return out


# --------------------------------------------------------------------------------- sinks


class Sink(Protocol):
    """Receives every :class:`Measurement`; ``close()`` at the end (optional)."""

    def write(self, measurement: Measurement) -> None:
        """Receive one measurement."""


class JsonlSink:
    """Append each measurement as one JSON line (``Measurement.record()``) to ``path``.

    Lines are written with :func:`hesslab.io.append_jsonl`: each record is one flushed
    write; a torn last line is skipped by :func:`hesslab.io.read_jsonl`. With
    ``diagnostics=True`` the record also holds the diagnostics under ``"diagnostics"``.
    """

    def __init__(self, path: str | os.PathLike[str], *, diagnostics: bool = False) -> None:
        self.path = Path(path)
        self.diagnostics = diagnostics

    def write(self, measurement: Measurement) -> None:
        """Append ``measurement.record()`` (with diagnostics if asked) as one line."""
        rec = measurement.record()
        if self.diagnostics:
            rec["diagnostics"] = measurement.diagnostics
        append_jsonl(self.path, rec)


class RunDirSink:
    """Log each measurement into a :class:`hesslab.report.run.RunDir` (``metrics.jsonl``)."""

    def __init__(self, run_dir: Any) -> None:
        if not hasattr(run_dir, "log_metrics"):
            raise ConfigurationError(
                "RunDirSink needs a hesslab.report.RunDir (with log_metrics); got "
                f"{type(run_dir).__name__}"
            )
        self.run_dir = run_dir

    def write(self, measurement: Measurement) -> None:
        """Log the record at ``measurement.step`` (``seconds`` as ``measure_seconds``)."""
        rec = measurement.record()
        rec.pop("step")
        rec["measure_seconds"] = rec.pop("seconds")
        self.run_dir.log_metrics(measurement.step, **rec)


class TensorBoardSink:
    """Write values (and errors as ``<name>_err``) as TensorBoard scalars.

    Imports :mod:`torch.utils.tensorboard` lazily; raises
    :class:`~hesslab.errors.ConfigurationError` if the ``tensorboard`` package is missing.
    """

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                "TensorBoardSink needs the 'tensorboard' package (pip install tensorboard); "
                "or use JsonlSink/RunDirSink instead"
            ) from exc
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, measurement: Measurement) -> None:
        """Write every finite value as a scalar at ``measurement.step`` and flush."""
        rec = measurement.record()
        step = rec.pop("step")
        for name, value in rec.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        """Close the TensorBoard writer."""
        self.writer.close()


# ------------------------------------------------------------------------------- monitor


class SpectrumMonitor:
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
    ) -> None:
        quantities = _check_arguments(every, quantities, k)
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

    # ---------------------------------------------------------------- measuring
    def _gen(self, step: int, name: str) -> torch.Generator:
        return torch.Generator().manual_seed(measurement_seed(self.seed, step, name))

    def _settings(self, **changes: Any) -> Settings:
        s = Settings(tol=self.tol, num_matvecs=self.trace_matvecs, trace_method=self.trace_method)
        return s.replace(**changes)

    def _quantity(
        self, rec: _Record, name: str, op: LinearOperator, step: int, seed_name: str, **kw: Any
    ) -> Any:
        """Quantity ``name`` of :mod:`hesslab.quantities` with the generator of ``seed_name``.

        Its ``seconds`` go to ``rec.secs[seed_name]``.
        """
        res = measure_quantity(name, op, self._settings(**kw), self._gen(step, seed_name))
        rec.secs[seed_name] = res.seconds
        return res

    def measure(self, model: nn.Module, step: int) -> Measurement:
        """Measure now (regardless of ``every``), record, send to the sinks, return."""
        t0 = time.perf_counter()
        q = set(self.quantities)
        rec = _Record()
        obj = Objective(model, self.loss_fn, self.data, self.params, **self.loss_kwargs)
        H_local = HessianOperator(obj)
        op = self._wrap(H_local)
        P = obj.space.size
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

    def _top(
        self, rec: _Record, op: LinearOperator, step: int, q: set[str], k: int
    ) -> EigenResult | None:
        """``top_k`` (warm-started; also cold with ``compare_cold``) when a quantity needs it."""
        wants_k = q & _NEEDS_K
        if not (wants_k or "lambda_max" in q):
            return None
        P = op.shape[0]
        kk = k if wants_k else 1
        if self.logdet_rank is not None and "logdet" in q:
            kk = max(kk, min(self.logdet_rank, P))
        v0 = None
        if self.warm_start and self._prev_U is not None and self._prev_U.shape[0] == P:
            v0 = self._prev_U[:, :kk]
        rec.diag["warm_started"] = v0 is not None
        kw = {"k": kk, "block_size": self.block_size}
        top = self._quantity(rec, "top_k", op, step, "top_k", v0=v0, **kw)
        rec.mv["top_k"] = top.num_matvecs
        rec.conv["top_k"] = top.all_converged
        for i in range(kk):
            rec.values[f"lambda/{i + 1}"] = float(top.values[i])
            rec.errors[f"lambda/{i + 1}"] = float(top.residual_norms[i])
        rec.values["lambda_max"] = rec.values["lambda/1"]
        rec.errors["lambda_max"] = rec.errors["lambda/1"]
        if v0 is not None and self._compare_now():
            cold = self._quantity(rec, "top_k", op, step, "top_k_cold", **kw)
            rec.mv["top_k_cold"] = cold.num_matvecs
            rec.diag["top_k_cold_values"] = [float(x) for x in cold.values]
            rec.diag["top_k_cold_max_abs_diff"] = float((cold.values - top.values).abs().max())
        return top

    def _bottom(self, rec: _Record, op: LinearOperator, step: int) -> None:
        v0 = self._prev_bottom if self.warm_start else None
        if v0 is not None and v0.shape[0] != op.shape[0]:
            v0 = None
        bot = self._quantity(rec, "bottom", op, step, "bottom", k=1, v0=v0)
        rec.mv["bottom"] = bot.num_matvecs
        rec.conv["bottom"] = bot.all_converged
        rec.values["lambda_min"] = float(bot.values[0])
        rec.errors["lambda_min"] = float(bot.residual_norms[0])
        self._prev_bottom = bot.vectors.detach()

    def _traces(self, rec: _Record, op: LinearOperator, step: int, q: set[str]) -> None:
        """``trace``, ``trace_sq`` and what follows from them (bounds, effective rank)."""
        got: dict[str, TraceEstimate] = {}
        for name in ("trace", "trace_sq"):
            if q & {name, "ws_bounds", "effective_rank"}:
                got[name] = self._quantity(rec, name, op, step, name)
                rec.mv[name] = got[name].num_matvecs
                rec.values[name], rec.errors[name] = got[name].value, got[name].stderr
        if len(got) < 2:
            return
        tr, trsq = got["trace"], got["trace_sq"]
        if "ws_bounds" in q:
            b = measure_quantity("ws_bounds", op, self._settings(given=got))
            for name in ("lambda_max_lower", "lambda_max_upper", "lambda_min_lower"):
                rec.values[f"ws/{name}"] = float(getattr(b, name))
            rec.values["ws/lambda_min_upper"] = float(b.lambda_min_upper)
            rec.notes.extend(b.notes)
        if "effective_rank" in q:
            if trsq.value > 0:
                r = tr.value**2 / trsq.value
                rec.values["effective_rank"] = r
                rec.errors["effective_rank"] = r * math.sqrt(
                    (2 * tr.stderr / max(abs(tr.value), 1e-300)) ** 2
                    + (trsq.stderr / trsq.value) ** 2
                )
            else:
                rec.values["effective_rank"] = float("nan")

    def _logdet(self, rec: _Record, op: LinearOperator, top: EigenResult, k: int) -> None:
        s = self._settings(k=self.logdet_rank or k, given={"top_k": top})
        try:  # refuses an eigenvalue that is not positive beyond its error bound
            ld = measure_quantity("logdet", op, s)
            rec.values["logdet"], rec.errors["logdet"] = ld.value, ld.info["max_abs_error"]
        except ConfigurationError as e:
            rec.values["logdet"] = float("nan")
            rec.notes.append(f"logdet: {e}")

    def _groups(self, model: nn.Module, obj: Objective) -> dict[str, list[str]] | None:
        """The layer groups: given, else :func:`hesslab.layer_groups` of the model."""
        if self.layer_groups is not None:
            return self.layer_groups
        mine = set(obj.space.names)
        groups = {g: [n for n in names if n in mine] for g, names in _layer_groups(model).items()}
        return {g: n for g, n in groups.items() if n}

    def _eigvec_measures(
        self, rec: _Record, obj: Objective, op: LinearOperator, U: Tensor, step: int,
        q: set[str], k: int, groups: Mapping[str, Sequence[str]] | None,
    ) -> None:  # fmt: skip
        """``ipr``, ``displacement``, ``grad_alignment``, ``moment_overlap`` of ``U[:, :k]``."""
        Uk = U[:, :k]
        if "ipr" in q:
            self._ipr(rec, obj, Uk, groups)
        if "displacement" in q:
            self._displacement(rec, Uk, step)
        if "grad_alignment" in q:
            g = obj.gradient()
            if self.distributed:
                from hesslab.distributed import all_reduce_mean

                g = all_reduce_mean(g, obj.num_items, group=self.group)
            rec.values["grad_alignment"] = gradient_alignment(g, Uk)
            rec.values["grad_norm"] = float(g.norm())
        if "moment_overlap" in q:
            M = self._wrap(gradient_moment(obj, kind=self.moment_kind))
            mres = self._quantity(rec, "top_k", M, step, "moment", k=k)
            rec.secs["moment_overlap"] = rec.secs.pop("moment")
            rec.mv["moment"] = mres.num_matvecs
            rec.conv["moment"] = mres.all_converged
            rec.values["moment_overlap"] = subspace_overlap(Uk, mres.vectors)
            rec.values["moment_lambda_max"] = float(mres.values[0])

    def _ipr(
        self, rec: _Record, obj: Objective, Uk: Tensor, groups: Mapping[str, Sequence[str]] | None
    ) -> None:
        k = Uk.shape[1]
        glob = ipr(Uk)
        for i in range(k):
            rec.values[f"ipr/{i + 1}"] = float(glob[i])
        rec.values["ipr_null"] = ipr_null(Uk.shape[0])
        if groups:
            per = ipr(Uk, groups, space=obj.space)
            for g, vals in per.items():
                for i in range(k):
                    rec.values[f"ipr/{g}/{i + 1}"] = float(vals[i])

    def _displacement(self, rec: _Record, Uk: Tensor, step: int) -> None:
        k = Uk.shape[1]
        if self._prev_U is not None and self._prev_U.shape == Uk.shape:
            prev = self._prev_U.to(torch.float64)
            d = displacement(prev, Uk)
            for i in range(k):
                rec.values[f"disp_prev/{i + 1}"] = float(d[i])
            rec.values["subdisp_prev"] = subspace_displacement(prev, Uk)
        if self._ref_U is None and (self.reference_step is None or step >= self.reference_step):
            self._ref_U, self._ref_step = Uk.clone(), step
        if self._ref_U is not None and self._ref_U.shape == Uk.shape:
            d = displacement(self._ref_U, Uk)
            for i in range(k):
                rec.values[f"disp_ref/{i + 1}"] = float(d[i])
            rec.values["subdisp_ref"] = subspace_displacement(self._ref_U, Uk)
            rec.diag["reference_step"] = self._ref_step

    def _compare_now(self) -> bool:
        c = self.compare_cold
        if isinstance(c, bool):
            return c
        return isinstance(c, int) and c > 0 and self._count % c == 0

    def _layers(
        self, op: HessianOperator, groups: Mapping[str, Sequence[str]], step: int, rec: _Record
    ) -> None:
        """Per layer ``lambda_max`` (warm-started), ``trace`` and W1 to the full density.

        The W1 distance of the layer's SLQ density to the full one only with
        ``layer_density``.
        """
        blocks = {
            g: self._wrap(b) for g, b in op.blocks({g: list(n) for g, n in groups.items()}).items()
        }
        results: list[Any] = []

        def quantity(name: str, block: LinearOperator, seed_name: str, **kw: Any) -> Any:
            res = measure_quantity(name, block, self._settings(**kw), self._gen(step, seed_name))
            results.append(res)
            return res

        full_density = None
        if self.layer_density:
            steps = min(self.density_steps, op.shape[0])
            full_density = quantity("density", self._wrap(op), "density", num_steps=steps)
        for g, block in blocks.items():
            Pg = block.shape[0]
            prev = self._prev_layer.get(g) if self.warm_start else None
            res = quantity("lambda_max", block, f"layer/{g}/lambda", v0=prev)
            self._prev_layer[g] = res.vectors.detach()
            rec.values[f"layer/{g}/lambda_max"] = float(res.values[0])
            rec.errors[f"layer/{g}/lambda_max"] = float(res.residual_norms[0])
            method = self.trace_method if Pg > 3 else "exact"
            budget = min(self.trace_matvecs, max(Pg, 3))
            tr = quantity(
                "trace", block, f"layer/{g}/trace", num_matvecs=budget, trace_method=method
            )
            rec.values[f"layer/{g}/trace"] = tr.value
            rec.errors[f"layer/{g}/trace"] = tr.stderr
            if full_density is not None:
                steps = min(self.density_steps, Pg)
                dens = quantity("density", block, f"layer/{g}/density", num_steps=steps)
                rec.values[f"layer/{g}/w1_to_full"] = spectrum_w1(dens, full_density)
        rec.mv["layers"] = sum(int(r.num_matvecs) for r in results)
        rec.secs["layers"] = sum(float(r.seconds) for r in results)


@dataclass
class _Record:
    """What one measurement collects (values, errors and the diagnostics' parts)."""

    values: dict[str, float] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    mv: dict[str, int] = field(default_factory=dict)
    secs: dict[str, float] = field(default_factory=dict)
    conv: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    diag: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.diag.update(matvecs=self.mv, seconds=self.secs, converged=self.conv, notes=self.notes)


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


# Short notebook-friendly reprs (key numbers, not the tensors): see hesslab.display.
from hesslab import display as _display  # noqa: E402

_display.attach(Measurement, _display.measurement_summary)
