"""The automatic product mode of :class:`~hesslab.operators.hessian.HessianOperator`.

``mode="auto"`` times the applicable modes on the first batch at the first product and
keeps the fastest; the choice is remembered for the process, keyed by the structure the
timings depend on (see :mod:`hesslab.operators.hessian` for the rules and the measured
costs). :class:`ModeChoice` holds that logic as a mixin of the operator: it needs the
operator's ``_apply``, ``_fwd_rev``, ``_rev_rev``, ``_first_order_graph``, ``_graphs``,
``objective``, ``space``, ``cache_graph``, ``autocast`` and ``mode_report``.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from hesslab.batches import batch_rows, batch_tensors, map_tensors
from hesslab.errors import ConfigurationError, HesslabError

__all__ = ["ModeChoice", "clear_mode_memo"]

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


class ModeChoice:
    """The ``mode="auto"`` timing, screening and memo of a Hessian operator (a mixin)."""

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


def _remember(key: tuple, entry: dict[str, Any]) -> None:
    _MODE_MEMO[key] = copy.deepcopy({k: v for k, v in entry.items() if k != "reused"})
    _MODE_MEMO.move_to_end(key)
    while len(_MODE_MEMO) > _MODE_MEMO_SIZE:
        _MODE_MEMO.popitem(last=False)
