"""Render a run folder's saved files as one self-contained ``report.html``.

The page needs nothing but itself: figures are embedded as base64 PNG data URIs, the
CSS is inline, and there is no JavaScript and no external resource (fonts, scripts,
style sheets). Every piece of text from the run is escaped with :func:`html.escape`.
The output is a pure function of ``config.json``, ``results.json``, ``figures/*.png``
and ``metrics.jsonl``, so rebuilding it from the files gives the identical page.

Numbers show 4 significant figures, standard errors 2 (``1.235 ± 0.047``); very large
or small magnitudes use powers of ten.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["format_number", "format_value", "markdown_to_html", "render_report"]

_NONFINITE_TEXT = {"NaN": "NaN", "Infinity": "∞", "-Infinity": "−∞"}

_CSS = """
:root { --fg: #1d2433; --muted: #5b6475; --line: #d9dee7; --bg: #ffffff; --panel: #f5f7fa;
  --accent: #2457a6; --ok: #1a7f37; --bad: #c0392b; --na: #8a93a3; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 28px 32px 48px; }
h1 { font-size: 1.75rem; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 1.3rem; margin: 40px 0 12px; padding-bottom: 6px;
  border-bottom: 2px solid var(--line); }
h3 { font-size: 1.05rem; margin: 22px 0 8px; }
h4 { font-size: 0.95rem; margin: 16px 0 6px; }
p { margin: 8px 0; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
code, pre, .num { font-family: "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace; }
code { background: var(--panel); padding: 1px 4px; border-radius: 3px; font-size: 0.9em; }
pre { background: var(--panel); border: 1px solid var(--line); border-radius: 6px;
  padding: 10px 12px; overflow-x: auto; font-size: 0.82rem; line-height: 1.4; }
pre.cmd { user-select: all; white-space: pre-wrap; word-break: break-all; font-size: 0.9rem; }
.subtitle { color: var(--muted); margin: 0 0 14px; }
.badge { display: inline-block; padding: 1px 10px; border-radius: 10px; font-size: 0.8rem;
  font-weight: 600; vertical-align: middle; margin-left: 8px; color: #fff; }
.badge.complete { background: var(--ok); } .badge.failed { background: var(--bad); }
.badge.running, .badge.incomplete { background: #b7791f; }
.error { border-left: 4px solid var(--bad); background: #fdf0ee; padding: 8px 12px;
  margin: 12px 0; white-space: pre-wrap; }
table { border-collapse: collapse; margin: 10px 0 16px; font-size: 0.88rem; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 10px; text-align: left;
  vertical-align: top; }
th { background: var(--panel); font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fafbfc; }
td:first-child { min-width: 9em; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums;
  font-size: 0.84rem; }
td.diag { color: var(--muted); font-size: 0.8rem; }
table.summary th { background: none; color: var(--muted); font-weight: 500;
  border-bottom: 1px solid var(--line); width: 1%; }
table.summary td { font-size: 0.9rem; }
.caption { color: var(--muted); font-size: 0.85rem; margin: 4px 0; }
nav.toc { background: var(--panel); border: 1px solid var(--line); border-radius: 6px;
  padding: 8px 16px; margin: 16px 0; font-size: 0.9rem; }
nav.toc ol { margin: 4px 0; padding-left: 22px; columns: 2; }
figure { margin: 18px 0; text-align: center; }
figure img { max-width: min(100%, 780px); height: auto; border: 1px solid var(--line);
  border-radius: 4px; }
figcaption { color: var(--muted); font-size: 0.86rem; margin-top: 6px; text-align: left;
  max-width: 820px; margin-left: auto; margin-right: auto; }
.holds { font-weight: 700; text-align: center; font-size: 1.05rem; }
.holds.yes { color: var(--ok); } .holds.no { color: var(--bad); } .holds.na { color: var(--na); }
.claims td.claim { max-width: 430px; }
.missing { color: var(--bad); }
footer { margin-top: 48px; color: var(--muted); font-size: 0.8rem;
  border-top: 1px solid var(--line); padding-top: 10px; }
@media print { main { max-width: none; } nav.toc { display: none; } }
"""


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


def _number_html(x: Any, sig: int = 4) -> str:
    """Like :func:`format_number`, but exponents as ``1.235×10⁻⁵`` markup (escaped)."""
    text = format_number(x, sig)
    m = re.fullmatch(r"(-?\d(?:\.\d+)?)e([+-])(\d+)", text)
    if not m:
        return html.escape(text)
    mantissa, sign, exp = m.groups()
    exp_text = ("−" if sign == "-" else "") + str(int(exp))
    return f"{html.escape(mantissa.replace('-', '−'))}×10<sup>{exp_text}</sup>"


def format_value(value: Any, stderr: Any = None) -> str:
    """``value ± stderr`` as plain text (4 and 2 significant figures)."""
    if stderr is None:
        return format_number(value, 4)
    return f"{format_number(value, 4)} ± {format_number(stderr, 2)}"


def _value_html(value: Any, stderr: Any = None) -> str:
    if _as_number(value) is None:
        return _cell_html(value)
    if stderr is None or _as_number(stderr) is None:
        return _number_html(value, 4)
    return f"{_number_html(value, 4)} ± {_number_html(stderr, 2)}"


def _cell_html(x: Any) -> str:
    """A table cell's content: numbers formatted, containers compact JSON, text escaped."""
    if (
        x is None
        or isinstance(x, (bool, int, float))
        or (isinstance(x, str) and x in _NONFINITE_TEXT)
    ):
        return _number_html(x)
    if isinstance(x, str):
        return html.escape(x)
    text = json.dumps(x, ensure_ascii=False)
    if len(text) > 120:
        text = text[:117] + "..."
    return html.escape(text)


# --------------------------------------------------------------------------------------
# A small, safe Markdown subset
# --------------------------------------------------------------------------------------

_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")


def _inline(text: str) -> str:
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if len(part) >= 2 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        s = html.escape(part, quote=False)
        s = _LINK.sub(lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', s)
        s = _BOLD.sub(r"<strong>\1</strong>", s)
        s = _ITALIC.sub(r"<em>\1</em>", s)
        out.append(s)
    return "".join(out)


def markdown_to_html(text: str) -> str:
    """Render a small Markdown subset safely (all text escaped first).

    Supported: paragraphs (blank-line separated), ``#``–``####`` headings (shown one
    level below the section title), ``-``/``*`` bullet lists, ``1.`` numbered lists,
    fenced code blocks (```` ``` ````), inline ``code``, ``**bold**``, ``*italic*`` and
    ``[text](https://...)`` links.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    para: list[str] = []
    items: list[str] = []
    list_tag = ""

    def flush_para() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(s.strip() for s in para))}</p>")
            para.clear()

    def flush_list() -> None:
        nonlocal list_tag
        if items:
            body = "".join(f"<li>{_inline(s)}</li>" for s in items)
            out.append(f"<{list_tag}>{body}</{list_tag}>")
            items.clear()
        list_tag = ""

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush_para()
            flush_list()
            code: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                code.append(lines[i])
                i += 1
            out.append(f"<pre>{html.escape(chr(10).join(code))}</pre>")
            i += 1
            continue
        heading = re.match(r"^(#{1,4})\s+(.*)$", stripped)
        bullet = re.match(r"^[-*]\s+(.*)$", stripped)
        number = re.match(r"^\d+[.)]\s+(.*)$", stripped)
        if not stripped:
            flush_para()
            flush_list()
        elif heading:
            flush_para()
            flush_list()
            level = min(len(heading.group(1)) + 2, 6)
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif bullet or number:
            flush_para()
            tag = "ul" if bullet else "ol"
            if list_tag and list_tag != tag:
                flush_list()
            list_tag = tag
            items.append((bullet or number).group(1))  # type: ignore[union-attr]
        elif items and line[:1].isspace():
            items[-1] += " " + stripped  # continuation of a list item
        else:
            flush_list()
            para.append(stripped)
        i += 1
    flush_para()
    flush_list()
    return "\n".join(out)


# --------------------------------------------------------------------------------------
# Page
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


def _table(headers: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]], cls: str = "") -> str:
    """``rows`` hold ``(css_class, inner_html)`` cells; ``headers`` are escaped here."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{c}">{inner}</td>' if c else f"<td>{inner}</td>" for c, inner in row
        )
        body.append(f"<tr>{cells}</tr>")
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_DIAG_COLUMNS = (("num_matvecs", "matvecs"), ("seconds", "seconds"), ("converged", "converged"))


def _scalars_html(scalars: Sequence[Mapping[str, Any]]) -> str:
    has_unit = any(s.get("unit") for s in scalars)
    diag_cols = [
        (key, title)
        for key, title in _DIAG_COLUMNS
        if any(key in (s.get("diagnostics") or {}) for s in scalars)
    ]
    headers = ["quantity", "value ± stderr"]
    if has_unit:
        headers.append("unit")
    headers += [title for _, title in diag_cols] + ["diagnostics"]
    rows = []
    for s in scalars:
        diag = dict(s.get("diagnostics") or {})
        row = [
            ("", html.escape(str(s.get("name", "")))),
            ("num", _value_html(s.get("value"), s.get("stderr"))),
        ]
        if has_unit:
            row.append(("", html.escape(str(s.get("unit") or ""))))
        for key, _ in diag_cols:
            v = diag.pop(key, None)
            if key == "seconds" and _as_number(v) is not None:
                row.append(("num", html.escape(format_number(v, 3))))
            elif key == "converged" and isinstance(v, bool):
                row.append(("holds " + ("yes" if v else "no"), "✓" if v else "✗"))
            else:
                row.append(("num", _cell_html(v) if v is not None else ""))
        extra = "; ".join(f"{html.escape(str(k))}={_cell_html(v)}" for k, v in diag.items())
        row.append(("diag", extra))
        rows.append(row)
    return _table(headers, rows, "scalars")


def _claims_html(claims: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for c in claims:
        holds = c.get("holds")
        mark, cls = (
            ("✓", "yes") if holds is True else ("✗", "no") if holds is False else ("–", "na")
        )
        measured = c.get("measured")
        rows.append(
            [
                ("claim", _inline(str(c.get("claim", "")))),
                ("", _inline(measured) if isinstance(measured, str) else _cell_html(measured)),
                (f"holds {cls}", mark),
            ]
        )
    return _table(["paper's claim", "measured", "holds"], rows, "claims")


def _custom_table_html(table: Mapping[str, Any]) -> str:
    columns = list(table.get("columns") or [])
    rows = [
        [("num" if _as_number(r.get(c)) is not None else "", _cell_html(r.get(c))) for c in columns]
        for r in table.get("rows", [])
    ]
    title = f"<h3>{html.escape(str(table.get('name', '')))}</h3>"
    caption = table.get("caption")
    cap = f'<p class="caption">{_inline(str(caption))}</p>' if caption else ""
    return title + cap + _table([str(c) for c in columns], rows)


def _figure_html(fig: Mapping[str, Any], number: int, run_path: Path) -> str:
    file = str(fig.get("file", ""))
    caption = str(fig.get("caption") or fig.get("name", ""))
    label = f"<strong>Figure {number}.</strong> {_inline(caption)}"
    target = run_path / file
    try:
        data = target.read_bytes()
    except OSError:
        return (
            f'<figure><p class="missing">figure file {html.escape(file)} is missing</p>'
            f"<figcaption>{label}</figcaption></figure>"
        )
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    alt = html.escape(f"Figure {number}: {caption}")
    return f'<figure><img src="{uri}" alt="{alt}"><figcaption>{label}</figcaption></figure>'


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
    title = str(record.get("title") or record.get("name") or run_path.name)
    status = str(results.get("status") or "incomplete")
    sections = list(results.get("sections") or [])
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for kind in ("texts", "claims", "figures", "tables", "scalars"):
        for item in results.get(kind) or []:
            sec = item.get("section", "")
            if sec not in sections:
                sections.append(sec)
            by_kind.setdefault(f"{kind}:{sec}", []).append(item)

    claims = list(results.get("claims") or [])
    n_hold = sum(c.get("holds") is True for c in claims)
    n_fail = sum(c.get("holds") is False for c in claims)

    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)} · hesslab report</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f'<h1>{html.escape(title)}<span class="badge {html.escape(status)}">'
        f"{html.escape(status)}</span></h1>",
    ]
    if record.get("description"):
        parts.append(f'<p class="subtitle">{_inline(str(record["description"]))}</p>')
    if results.get("error"):
        parts.append(f'<div class="error">{html.escape(str(results["error"]))}</div>')

    device = str(record.get("device") or "–")
    if env.get("device_name"):
        device += f" ({env['device_name']})"
    summary = [
        ("Run", html.escape(str(record.get("name") or run_path.name))),
        ("Started", html.escape(str(record.get("created") or "–"))),
        ("Run time", html.escape(_format_seconds(results.get("seconds")))),
        ("Device", html.escape(device)),
        ("Seed", _cell_html(record.get("seed"))),
        (
            "Software",
            html.escape(
                ", ".join(
                    f"{k} {env[k]}" for k in ("hesslab", "torch", "numpy", "python") if env.get(k)
                )
            )
            or "–",
        ),
        ("Platform", html.escape(str(env.get("platform") or "–"))),
    ]
    if claims:
        summary.append(
            (
                "Claims",
                f"{n_hold} of {len(claims)} hold"
                + (f", {n_fail} do not" if n_fail else "")
                + (
                    f", {len(claims) - n_hold - n_fail} undecided"
                    if len(claims) - n_hold - n_fail
                    else ""
                ),
            )
        )
    if metrics:
        keys: list[str] = []
        for m in metrics:
            keys.extend(k for k in m if k not in keys)
        summary.append(
            ("Metrics", html.escape(f"{len(metrics)} records in metrics.jsonl ({', '.join(keys)})"))
        )
    command = record.get("command") or []
    if command:
        summary.append(("Command", f"<code>{html.escape(shlex.join(map(str, command)))}</code>"))
    parts.append(
        '<table class="summary"><tbody>'
        + "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in summary)
        + "</tbody></table>"
    )

    used: set[str] = set()
    slugs = {sec: _slug(sec, used) for sec in sections}
    toc = [f'<li><a href="#{slugs[s]}">{html.escape(s)}</a></li>' for s in sections]
    arrays = list(results.get("arrays") or [])
    if arrays:
        toc.append('<li><a href="#arrays">Saved arrays</a></li>')
    toc += [
        '<li><a href="#config">Configuration</a></li>',
        '<li><a href="#rerun">Re-run this analysis</a></li>',
    ]
    parts.append(f'<nav class="toc"><strong>Contents</strong><ol>{"".join(toc)}</ol></nav>')

    fig_number = 0
    for sec in sections:
        parts.append(f'<section id="{slugs[sec]}"><h2>{html.escape(sec)}</h2>')
        for t in by_kind.get(f"texts:{sec}", []):
            parts.append(markdown_to_html(str(t.get("text", ""))))
        sec_claims = by_kind.get(f"claims:{sec}", [])
        if sec_claims:
            parts.append(_claims_html(sec_claims))
        for fig in by_kind.get(f"figures:{sec}", []):
            fig_number += 1
            parts.append(_figure_html(fig, fig_number, run_path))
        for table in by_kind.get(f"tables:{sec}", []):
            parts.append(_custom_table_html(table))
        sec_scalars = by_kind.get(f"scalars:{sec}", [])
        if sec_scalars:
            parts.append("<h3>All numbers</h3>" + _scalars_html(sec_scalars))
        parts.append("</section>")

    if arrays:
        rows = [
            [
                ("", f"<code>{html.escape(str(a.get('name')))}</code>"),
                ("num", html.escape("×".join(str(d) for d in a.get("shape", [])) or "scalar")),
                ("", html.escape(str(a.get("dtype", "")))),
            ]
            for a in arrays
        ]
        parts.append(
            '<section id="arrays"><h2>Saved arrays</h2>'
            "<p>In <code>arrays.npz</code> (load with <code>numpy.load</code>).</p>"
            + _table(["name", "shape", "dtype"], rows)
            + "</section>"
        )

    config_json = _pretty_json(record.get("config", {}))
    env_json = _pretty_json(env)
    parts.append(
        '<section id="config"><h2>Configuration</h2>'
        "<p>Every parameter of this run (<code>config.json</code>):</p>"
        f"<pre>{html.escape(config_json, quote=False)}</pre>"
        f"<h3>Environment</h3><pre>{html.escape(env_json, quote=False)}</pre></section>"
    )
    cwd = record.get("cwd")
    rerun = shlex.join(map(str, command)) if command else "(command not recorded)"
    parts.append(
        '<section id="rerun"><h2>Re-run this analysis</h2>'
        + (f"<p>From <code>{html.escape(str(cwd))}</code>:</p>" if cwd else "")
        + f'<pre class="cmd">{html.escape(rerun)}</pre></section>'
    )
    parts.append(
        f"<footer>Generated by hesslab {html.escape(str(env.get('hesslab', '')))} from the "
        "files of this run folder; regenerate it with <code>hesslab report "
        f"{html.escape(run_path.name)}</code>.</footer>"
    )
    parts.append("</main></body></html>\n")
    return "\n".join(parts)
