"""Render a run folder's saved files as one self-contained ``report.html``.

The page comes from the Jinja2 template ``templates/report.html.j2`` (its CSS from
``templates/report.css``) with autoescaping on: every piece of text from the run is
escaped unless it went through one of the filters below that return markup, which
escape it themselves. Texts, captions, claims and the description are Markdown
(CommonMark, through ``markdown-it-py``) with raw HTML escaped, images disabled and
links only to ``http(s)://``, ``mailto:`` and ``#`` anchors.

The page needs nothing but itself: figures are embedded as base64 PNG data URIs, the
CSS is inline, and there is no JavaScript and no external resource (fonts, scripts,
style sheets). The output is a pure function of ``config.json``, ``results.json``,
``figures/*.png`` and ``metrics.jsonl``, so rebuilding it from the files gives the
identical page.

Numbers show 4 significant figures, standard errors 2 (``1.235 ± 0.047``); very large
or small magnitudes use powers of ten.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

__all__ = [
    "format_number",
    "format_value",
    "markdown_inline",
    "markdown_to_html",
    "render_report",
]

_NONFINITE_TEXT = {"NaN": "NaN", "Infinity": "∞", "-Infinity": "−∞"}


# --------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------


def _as_number(x: Any) -> float | int | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return x
    if isinstance(x, str) and x in ("NaN", "Infinity", "-Infinity"):
        return float(x.replace("Infinity", "inf"))
    return None


def format_number(x: Any, sig: int = 4) -> str:
    """Format a number with ``sig`` significant figures as plain text.

    Integers print in full; ``1e-3 <= |x| < 1e6`` in fixed point (``0.01235``,
    ``12346``); other magnitudes as ``1.235e-05``; non-finite as ``NaN``, ``∞``, ``−∞``
    (also when given as the JSON strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``);
    ``None`` as ``–``. Anything else is ``str(x)``.
    """
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "✓" if x else "✗"
    if isinstance(x, str):
        return _NONFINITE_TEXT.get(x, x)
    if isinstance(x, int):
        return str(x)
    if not isinstance(x, float):
        return str(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    if -3 <= mag < 6:
        decimals = max(0, sig - 1 - mag)
        text = f"{x:.{decimals}f}"
        # Rounding can carry into a new digit (9.9996 -> 10.000); recompute once.
        if decimals > 0 and len(text.lstrip("-").replace(".", "").lstrip("0")) > sig:
            text = f"{x:.{decimals - 1}f}"
        return text
    return f"{x:.{sig - 1}e}"


def _number_html(x: Any, sig: int = 4) -> Markup:
    """Like :func:`format_number`, but exponents as ``1.235×10⁻⁵`` markup (escaped)."""
    text = format_number(x, sig)
    m = re.fullmatch(r"(-?\d(?:\.\d+)?)e([+-])(\d+)", text)
    if not m:
        return escape(text)
    mantissa, sign, exp = m.groups()
    exp_text = ("−" if sign == "-" else "") + str(int(exp))
    return Markup("{}×10<sup>{}</sup>").format(mantissa.replace("-", "−"), exp_text)


def format_value(value: Any, stderr: Any = None) -> str:
    """``value ± stderr`` as plain text (4 and 2 significant figures)."""
    if stderr is None:
        return format_number(value, 4)
    return f"{format_number(value, 4)} ± {format_number(stderr, 2)}"


def _value_html(value: Any, stderr: Any = None) -> Markup:
    """``value ± stderr`` as markup (see :func:`_number_html`)."""
    if _as_number(value) is None:
        return _cell_html(value)
    if stderr is None or _as_number(stderr) is None:
        return _number_html(value, 4)
    return Markup("{} ± {}").format(_number_html(value, 4), _number_html(stderr, 2))


def _cell_html(x: Any) -> Markup:
    """A table cell's content: numbers formatted, containers compact JSON, text escaped."""
    if (
        x is None
        or isinstance(x, (bool, int, float))
        or (isinstance(x, str) and x in _NONFINITE_TEXT)
    ):
        return _number_html(x)
    if isinstance(x, str):
        return escape(x)
    text = json.dumps(x, ensure_ascii=False)
    if len(text) > 120:
        text = text[:117] + "..."
    return escape(text)


def _text(x: Any) -> Markup:
    """Element content (``<pre>``, ``<code>``) escaped; quotes, harmless there, kept."""
    return Markup(html.escape(str(x), quote=False))


# --------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------

_SAFE_LINK = re.compile(r"^(https?://|mailto:|#)", re.IGNORECASE)


@functools.cache
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.disable("image")  # an image would be an external resource
    md.validateLink = lambda url: bool(_SAFE_LINK.match(url))  # type: ignore[method-assign]
    return md


def markdown_to_html(text: str) -> str:
    """Render Markdown (CommonMark) safely: raw HTML escaped, no images, web links only.

    Headings ``#``–``####`` are shown two levels down (``<h3>``–``<h6>``), below the
    section title.
    """
    md = _markdown()
    tokens = md.parse(str(text))
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(int(token.tag[1:]) + 2, 6)}"
    return md.renderer.render(tokens, md.options, {})


def markdown_inline(text: str) -> str:
    """Render one line of Markdown (code, emphasis, links) without a paragraph around it."""
    return _markdown().renderInline(str(text))


# --------------------------------------------------------------------------------------
# The page's parts, as data for the template
# --------------------------------------------------------------------------------------


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, n = f"s-{base}", 2
    while slug in used:
        slug, n = f"s-{base}-{n}", n + 1
    used.add(slug)
    return slug


def _format_seconds(seconds: Any) -> str:
    s = _as_number(seconds)
    if s is None or not math.isfinite(s):
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    minutes, sec = divmod(s, 60)
    if minutes < 60:
        return f"{int(minutes)} min {sec:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min"


def _pretty_json(obj: Any, indent: int = 0) -> str:
    """Indented JSON, but lists of plain values on one line (``"widths": [10, 5]``)."""
    pad = " " * (indent + 2)
    if isinstance(obj, dict) and obj:
        items = [
            f"{pad}{json.dumps(str(k), ensure_ascii=False)}: {_pretty_json(v, indent + 2)}"
            for k, v in obj.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(obj, list) and obj:
        flat = json.dumps(obj, ensure_ascii=False)
        if not any(isinstance(x, (dict, list)) for x in obj) and len(flat) <= 90:
            return flat
        items = [pad + _pretty_json(x, indent + 2) for x in obj]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    return json.dumps(obj, ensure_ascii=False)


_DIAG_COLUMNS = (("num_matvecs", "matvecs"), ("seconds", "seconds"), ("converged", "converged"))


def _scalars_context(scalars: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The "All numbers" table: a column per common diagnostic, the rest in one cell."""
    diag_columns = [
        (key, title)
        for key, title in _DIAG_COLUMNS
        if any(key in (s.get("diagnostics") or {}) for s in scalars)
    ]
    rows = []
    for s in scalars:
        diag = dict(s.get("diagnostics") or {})
        columns = [(key, diag.pop(key, None)) for key, _ in diag_columns]
        rows.append(
            {
                "name": str(s.get("name", "")),
                "value": s.get("value"),
                "stderr": s.get("stderr"),
                "unit": str(s.get("unit") or ""),
                "columns": columns,
                "extra": [(str(k), v) for k, v in diag.items()],
            }
        )
    has_unit = any(s.get("unit") for s in scalars)
    return {"has_unit": has_unit, "diag_columns": diag_columns, "rows": rows}


def _table_context(table: Mapping[str, Any]) -> dict[str, Any]:
    """A custom table: its cells formatted, numbers right-aligned."""
    columns = list(table.get("columns") or [])
    cells = [
        [("num" if _as_number(r.get(c)) is not None else "", _cell_html(r.get(c))) for c in columns]
        for r in table.get("rows", [])
    ]
    return {
        "name": str(table.get("name", "")),
        "caption": table.get("caption"),
        "columns": [str(c) for c in columns],
        "cells": cells,
    }


def _figure_context(fig: Mapping[str, Any], number: int, run_path: Path) -> dict[str, Any]:
    """A figure with its PNG as a data URI (``uri`` is ``None`` when the file is missing)."""
    file = str(fig.get("file", ""))
    try:
        data = (run_path / file).read_bytes()
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    except OSError:
        uri = None
    caption = str(fig.get("caption") or fig.get("name", ""))
    return {"number": number, "file": file, "uri": uri, "caption": caption}


def _claim_context(claim: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "claim": str(claim.get("claim", "")),
        "measured": claim.get("measured"),
        "holds": claim.get("holds"),
    }


def _sections_context(results: Mapping[str, Any], run_path: Path) -> list[dict[str, Any]]:
    """Each section's texts, claims, figures (numbered through the page), tables, scalars."""
    sections = list(results.get("sections") or [])
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for kind in ("texts", "claims", "figures", "tables", "scalars"):
        for item in results.get(kind) or []:
            sec = item.get("section", "")
            if sec not in sections:
                sections.append(sec)
            by_kind.setdefault(f"{kind}:{sec}", []).append(item)
    used: set[str] = set()
    out, fig_number = [], 0
    for sec in sections:
        figures = []
        for fig in by_kind.get(f"figures:{sec}", []):
            fig_number += 1
            figures.append(_figure_context(fig, fig_number, run_path))
        scalars = by_kind.get(f"scalars:{sec}", [])
        out.append(
            {
                "slug": _slug(sec, used),
                "title": sec,
                "texts": [str(t.get("text", "")) for t in by_kind.get(f"texts:{sec}", [])],
                "claims": [_claim_context(c) for c in by_kind.get(f"claims:{sec}", [])],
                "figures": figures,
                "tables": [_table_context(t) for t in by_kind.get(f"tables:{sec}", [])],
                "scalars": _scalars_context(scalars) if scalars else None,
            }
        )
    return out


def _claims_summary(claims: Sequence[Mapping[str, Any]]) -> str:
    """``"3 of 4 hold, 1 do not"`` (and how many are undecided)."""
    n_hold = sum(c.get("holds") is True for c in claims)
    n_fail = sum(c.get("holds") is False for c in claims)
    n_open = len(claims) - n_hold - n_fail
    return (
        f"{n_hold} of {len(claims)} hold"
        + (f", {n_fail} do not" if n_fail else "")
        + (f", {n_open} undecided" if n_open else "")
    )


def _summary_rows(
    record: Mapping[str, Any],
    results: Mapping[str, Any],
    run_path: Path,
    metrics: Sequence[Mapping[str, Any]],
) -> list[tuple[str, Any, str]]:
    """The table under the title: ``(label, value, kind)``, kind ``text``/``cell``/``code``."""
    env = record.get("environment", {}) or {}
    device = str(record.get("device") or "–")
    if env.get("device_name"):
        device += f" ({env['device_name']})"
    software = ", ".join(
        f"{k} {env[k]}" for k in ("hesslab", "torch", "numpy", "python") if env.get(k)
    )
    rows = [
        ("Run", str(record.get("name") or run_path.name), "text"),
        ("Started", str(record.get("created") or "–"), "text"),
        ("Run time", _format_seconds(results.get("seconds")), "text"),
        ("Device", device, "text"),
        ("Seed", record.get("seed"), "cell"),
        ("Software", software or "–", "text"),
        ("Platform", str(env.get("platform") or "–"), "text"),
    ]
    claims = list(results.get("claims") or [])
    if claims:
        rows.append(("Claims", _claims_summary(claims), "text"))
    if metrics:
        keys: list[str] = []
        for m in metrics:
            keys.extend(k for k in m if k not in keys)
        rows.append(
            ("Metrics", f"{len(metrics)} records in metrics.jsonl ({', '.join(keys)})", "text")
        )
    command = record.get("command") or []
    if command:
        rows.append(("Command", shlex.join(map(str, command)), "code"))
    return rows


# --------------------------------------------------------------------------------------
# Page
# --------------------------------------------------------------------------------------


@functools.cache
def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("hesslab.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        md=lambda text: Markup(markdown_to_html(text)),
        md_inline=lambda text: Markup(markdown_inline(text)),
        cell=_cell_html,
        value_html=_value_html,
        format_number=format_number,
        text=_text,
    )
    env.tests["numeric"] = lambda x: _as_number(x) is not None
    return env


def render_report(
    record: Mapping[str, Any],
    results: Mapping[str, Any],
    run_path: Path,
    metrics: Sequence[Mapping[str, Any]] = (),
) -> str:
    """Render the report page.

    Args:
        record: the contents of ``config.json`` (see :class:`hesslab.report.RunDir`).
        results: the contents of ``results.json`` (may be ``{}`` for an interrupted run).
        run_path: the run folder; figure files are read from it and embedded.
        metrics: the records of ``metrics.jsonl`` (summarised, not plotted).

    Returns:
        The complete HTML document.
    """
    env = record.get("environment", {}) or {}
    command = record.get("command") or []
    arrays = [
        {
            "name": str(a.get("name")),
            "shape": "×".join(str(d) for d in a.get("shape", [])) or "scalar",
            "dtype": str(a.get("dtype", "")),
        }
        for a in results.get("arrays") or []
    ]
    return (
        _templates()
        .get_template("report.html.j2")
        .render(
            title=str(record.get("title") or record.get("name") or run_path.name),
            status=str(results.get("status") or "incomplete"),
            description=record.get("description"),
            error=results.get("error"),
            summary=_summary_rows(record, results, run_path, metrics),
            sections=_sections_context(results, run_path),
            arrays=arrays,
            config_json=_pretty_json(record.get("config", {})),
            env_json=_pretty_json(env),
            cwd=record.get("cwd"),
            rerun=shlex.join(map(str, command)) if command else "(command not recorded)",
            version=str(env.get("hesslab", "")),
            run_name=run_path.name,
        )
    )
