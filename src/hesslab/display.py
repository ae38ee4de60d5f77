"""Short, readable ``__repr__`` and ``_repr_html_`` for hesslab's result dataclasses.

A result printed in a terminal or a notebook shows its key numbers, not the dataclass
dump of its tensors::

    >>> trace(H, num_matvecs=100)
    TraceEstimate(value=12.34 ± 0.21, method=hutch++, products=100, seconds=0.052)

Each result type has a *summary*: a list of ``(label, text)`` rows. :func:`short_repr`
joins them on one line (long lists of numbers are cut to their first entries) and
:func:`html_table` renders them as a small HTML table for Jupyter. The functions are
attached to the classes with :func:`attach` in the modules that define them (for
example at the end of :mod:`hesslab.linalg.results`), so the dataclass fields are
untouched. This module imports nothing else from hesslab.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "attach",
    "fmt",
    "html_table",
    "plus_minus",
    "short_repr",
]

Summary = list[tuple[str, str]]
"""Rows ``(label, text)`` of a result's summary."""

#: Longest repr (characters); longer ones are cut with an ellipsis.
MAX_REPR = 280
#: Entries of a vector shown in a repr.
MAX_ITEMS = 4


def fmt(x: Any) -> str:
    """A number in 4 significant digits (``"nan"``, ``"inf"``; ``"—"`` for ``None``)."""
    if x is None:
        return "—"
    if isinstance(x, torch.Tensor):
        x = x.item() if x.numel() == 1 else x.tolist()
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return str(x)
        return f"{x:.4g}"
    return str(x)


def plus_minus(value: Any, err: Any) -> str:
    """``"value ± err"``, or just the value when ``err`` is ``None`` or 0."""
    if err is None or (isinstance(err, (int, float)) and err == 0):
        return fmt(value)
    return f"{fmt(value)} ± {fmt(err)}"


def vector(x: Any, limit: int = MAX_ITEMS) -> str:
    """``"[1.2, 3.4, …]"``: the first ``limit`` entries of a tensor or sequence."""
    if x is None:
        return "—"
    if isinstance(x, torch.Tensor):
        n = x.numel()
        items = x.detach().reshape(-1)[:limit].tolist()
    else:
        items = list(x)
        n = len(items)
        items = items[:limit]
    body = ", ".join(fmt(float(v)) for v in items)
    return f"[{body}{', …' if n > limit else ''}]"


def converged_count(flags: Any) -> str:
    """``"3/5"``: how many of a bool tensor's entries are true."""
    if not isinstance(flags, torch.Tensor):
        return fmt(flags)
    return f"{int(flags.sum().item())}/{flags.numel()}"


def short_repr(obj: Any, rows: Summary) -> str:
    """``TypeName(label=text, ...)`` on one line, at most :data:`MAX_REPR` characters."""
    text = f"{type(obj).__name__}({', '.join(f'{k}={v}' for k, v in rows)})"
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 2] + "…)"


def html_table(obj: Any, rows: Summary) -> str:
    """A two-column HTML table of the summary, captioned with the type name."""
    cells = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
        f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
        for k, v in rows
    )
    return (
        f"<table><caption style='text-align:left'><b>{html.escape(type(obj).__name__)}"
        f"</b></caption>{cells}</table>"
    )


def attach(cls: type, summary: Callable[[Any], Summary]) -> None:
    """Give ``cls`` a ``__repr__`` and ``_repr_html_`` built from ``summary(obj)``."""

    def __repr__(self: Any) -> str:
        return short_repr(self, summary(self))

    def _repr_html_(self: Any) -> str:
        return html_table(self, summary(self))

    __repr__.__doc__ = f"One-line summary of the {cls.__name__} (key numbers only)."
    _repr_html_.__doc__ = f"HTML table of the {cls.__name__}'s key numbers (Jupyter)."
    cls.__repr__ = __repr__  # type: ignore[method-assign]
    cls._repr_html_ = _repr_html_  # type: ignore[attr-defined]


def cost(obj: Any, products: str = "num_matvecs") -> Summary:
    """The ``products`` and ``seconds`` rows of a result."""
    rows: Summary = []
    if hasattr(obj, products):
        rows.append(("products", fmt(getattr(obj, products))))
    if hasattr(obj, "seconds"):
        rows.append(("seconds", f"{obj.seconds:.3g}"))
    return rows


def scalar_summary(obj: Any) -> Summary:
    """``value ± stderr``, method, products, seconds (trace-like estimates)."""
    rows: Summary = [("value", plus_minus(obj.value, getattr(obj, "stderr", None)))]
    if getattr(obj, "method", None):
        rows.append(("method", str(obj.method)))
    return rows + cost(obj)


def named_values(values: dict[str, Any], errors: dict[str, Any], limit: int) -> str:
    """``"{a: 1.2 ± 0.1, b: 3, …}"`` for the first ``limit`` entries of ``values``."""
    items = [f"{k}: {plus_minus(v, errors.get(k))}" for k, v in list(values.items())[:limit]]
    more = ", …" if len(values) > limit else ""
    return "{" + ", ".join(items) + more + "}"


def optional(rows: Summary, pairs: Sequence[tuple[str, Any]]) -> Summary:
    """``rows`` plus each ``(label, value)`` whose value is not ``None``."""
    return rows + [(k, fmt(v)) for k, v in pairs if v is not None]


# ----------------------------------------------------------------- per-type summaries
def eigen_summary(r: Any) -> Summary:
    """:class:`~hesslab.EigenResult`: values, max residual, converged, products, seconds."""
    rows: Summary = [("values", vector(r.values))]
    if r.residual_norms.numel():
        rows.append(("max residual", fmt(float(r.residual_norms.max()))))
    rows.append(("converged", converged_count(r.converged)))
    rows.append(("method", f"{r.method} ({r.which})"))
    return rows + cost(r)


def diagonal_summary(r: Any) -> Summary:
    """:class:`~hesslab.DiagonalEstimate`: size, sum, largest stderr, products, seconds."""
    rows: Summary = [("P", str(r.values.numel())), ("values", vector(r.values))]
    if r.values.numel():
        rows.append(("sum", fmt(float(r.values.sum()))))
        rows.append(("max stderr", fmt(float(r.stderr.max()))))
    rows.append(("method", str(r.method)))
    return rows + cost(r)


def logdet_summary(r: Any) -> Summary:
    """:class:`~hesslab.LogdetEstimate`: value ± stderr, method, rank/shift, cost."""
    rows = scalar_summary(r)
    extra = [("rank", r.rank), ("shift", r.shift if r.shift else None)]
    return rows[:2] + [(k, fmt(v)) for k, v in extra if v is not None] + rows[2:]


def bounds_summary(r: Any) -> Summary:
    """:class:`~hesslab.BoundsResult`: the two eigenvalue intervals, P, mean, std."""
    rows: Summary = [
        ("λ_max in", f"[{fmt(r.lambda_max_lower)}, {fmt(r.lambda_max_upper)}]"),
        ("λ_min in", f"[{fmt(r.lambda_min_lower)}, {fmt(r.lambda_min_upper)}]"),
        ("P", str(r.dimension)),
        ("mean", fmt(r.mean)),
        ("std", fmt(r.std)),
    ]
    if r.notes:
        rows.append(("notes", str(len(r.notes))))
    return rows + cost(r)


def density_summary(r: Any) -> Summary:
    """:class:`~hesslab.SpectralDensity`: P, probes, steps, support, outliers, cost."""
    nodes = r.nodes
    rows: Summary = [("P", str(r.dimension)), ("probes", str(nodes.shape[0]))]
    rows.append(("steps", str(r.num_steps)))
    if nodes.numel():
        rows.append(("support", f"[{fmt(float(nodes.min()))}, {fmt(float(nodes.max()))}]"))
    if r.outliers.numel():
        rows.append(("outliers", vector(r.outliers)))
    return rows + cost(r)


def measurement_summary(m: Any) -> Summary:
    """The monitor's ``Measurement``: step, values ± errors, seconds."""
    rows: Summary = [("step", str(m.step)), ("values", named_values(m.values, m.errors, 4))]
    return [*rows, ("seconds", f"{m.seconds:.3g}")]


def class_structure_summary(c: Any) -> Summary:
    """:class:`~hesslab.ClassStructure`: C, P, predicted ranks, products, seconds."""
    rows: Summary = [("C", str(c.num_classes)), ("P", str(c.means.shape[-1]))]
    ranks = ", ".join(f"{k}≤{v}" for k, v in c.predicted_ranks().items())
    rows.append(("ranks", ranks))
    return rows + cost(c, "num_vjps")


def sharpness_summary(r: Any) -> Summary:
    """``SharpnessResult``: value, loss, max loss, ε and set, steps, gradients, seconds."""
    rows: Summary = [("value", fmt(r.value)), ("loss", fmt(r.loss))]
    rows += [("max loss", fmt(r.max_loss)), ("eps", fmt(r.eps))]
    rows += [("set", "box" if r.box else "ball"), ("steps", str(r.num_steps))]
    return rows + cost(r, "num_gradients")


def outlier_summary(r: Any) -> Summary:
    """``OutlierCount``: count (with its plausible range), bulk edge (± s.e.), method, values."""
    count = str(r.count) if r.low == r.high else f"{r.count} (plausible {r.low}-{r.high})"
    se = r.info.get("edge_stderr") if isinstance(r.info, dict) else None
    edge = plus_minus(r.threshold, se) if se and se == se else fmt(r.threshold)  # NaN: one probe
    rows: Summary = [("count", count), ("threshold", edge)]
    return [*rows, ("method", str(r.method)), ("values", vector(r.values))]


def fit_summary(r: Any) -> Summary:
    """``FitResult``: steps, epochs, final losses/accuracies, stop reason, seconds."""
    rows: Summary = [("steps", str(r.steps)), ("epochs", str(r.epochs))]
    rows = optional(
        rows,
        [
            ("train loss", r.final_train_loss),
            ("train acc", r.final_train_accuracy),
            ("test loss", r.final_test_loss),
            ("test acc", r.final_test_accuracy),
            ("grad norm", r.final_grad_norm),
        ],
    )
    rows.append(("stopped by", str(r.stopped_by)))
    return [*rows, ("seconds", f"{r.seconds:.3g}")]


def layer_sharpness_summary(r: Any) -> Summary:
    """``LayerSharpness``: name, size, λ_max, trace ± stderr, normalized values."""
    rows: Summary = [("name", r.name), ("size", str(r.size)), ("λ_max", fmt(r.lambda_max))]
    rows += [("trace", plus_minus(r.trace, r.trace_stderr))]
    rows += [("norm. λ_max", fmt(r.normalized_lambda_max))]
    return [*rows, ("norm. trace", fmt(r.normalized_trace)), *cost(r)]


def penalty_summary(r: Any) -> Summary:
    """``PenaltyRecord``: step, value ± stderr, penalty, probes, P, seconds."""
    rows: Summary = [("step", str(r.step)), ("value", plus_minus(r.value, r.stderr))]
    rows += [("penalty", fmt(r.penalty)), ("probes", str(r.num_probes))]
    return [*rows, ("P", str(r.dimension)), *cost(r)]


def interpolation_summary(r: Any) -> Summary:
    """``InterpolationResult``: points, loss range, largest λ_max, distance, seconds."""
    rows: Summary = [("points", str(len(r.t))), ("distance", fmt(r.distance))]
    if r.loss:
        rows.append(("loss", f"[{fmt(min(r.loss))}, {fmt(max(r.loss))}]"))
    if r.lambda_max:
        rows.append(("max λ_max", fmt(max(r.lambda_max))))
    return [*rows, ("seconds", f"{r.seconds:.3g}")]


def slice_summary(r: Any) -> Summary:
    """``Slice1D``/``Slice2D``: grid size and loss range, seconds."""
    if hasattr(r, "s"):
        grid, losses = str(len(r.s)), [float(v) for v in r.loss]
    else:
        grid, losses = f"{len(r.a)}×{len(r.b)}", [float(v) for v in r.loss.reshape(-1)]
    rows: Summary = [("grid", grid)]
    if losses:
        rows.append(("loss", f"[{fmt(min(losses))}, {fmt(max(losses))}]"))
    return [*rows, ("seconds", f"{r.seconds:.3g}")]


def run_rows(run: Any, limit: int = 8) -> Summary:
    """A loaded run folder (:class:`hesslab.runs.Run`): status, sizes, its first scalars."""
    rows: Summary = [
        ("status", str(run.status)),
        ("schema", str(run.schema)),
        ("scalars", str(len(run.results))),
        ("metric records", str(len(run.metrics))),
        ("arrays", str(len(run.arrays))),
    ]
    for key, rec in list(run.results.items())[:limit]:
        rows.append((key, plus_minus(rec.get("value"), rec.get("stderr"))))
    if len(run.results) > limit:
        rows.append(("…", f"{len(run.results) - limit} more (run.results_frame())"))
    return rows
