"""The quantities of :class:`~hesslab.train.monitor.SpectrumMonitor` and how each is measured.

:data:`USES` maps every monitor quantity to the entries of :mod:`hesslab.quantities` it is
computed from; :class:`_Measuring` holds the monitor's per-quantity steps (top-``k`` with
warm and cold starts, bottom, traces and what follows from them, ``logdet``, the
eigenvector measures and the per-layer blocks), each writing into one :class:`_Record`.
See :mod:`hesslab.train.monitor` for the quantities' definitions.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from hesslab.errors import ConfigurationError
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


class _Measuring:
    """The measuring steps of :class:`~hesslab.train.monitor.SpectrumMonitor` (a mixin).

    Every method reads the monitor's settings and warm-start state from ``self``.
    """

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
