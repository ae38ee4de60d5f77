"""The report page from its template: the same content as the hand-built page had, and
every record's text escaped (a record is data, never markup)."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from hesslab.linalg.results import EigenResult, TraceEstimate
from hesslab.report import RunDir, plot_eigenvalues, rebuild_report
from hesslab.report.html import markdown_inline, markdown_to_html

EVIL = "<script>alert(1)</script>"


class _Page(HTMLParser):
    """Tags, attributes and visible text of a page."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(data.strip())

    def visible(self) -> str:
        return " ".join(self.text)


def _demo_run(root: Path) -> RunDir:
    """A small demo-like run whose every user text carries a script tag."""
    run = RunDir.create(
        root / "demo",
        config={"seed": 7, "note": EVIL},
        command=["hesslab", "demo", "--title", EVIL],
        title=f"Demo {EVIL}",
        description=f"Curvature of a small MLP {EVIL}",
    )
    run.add_text("Spectrum", f"The top of the spectrum.\n\n- a list item {EVIL}\n\n{EVIL}")
    run.add_result(
        "Spectrum",
        "λ top",
        EigenResult(
            values=torch.tensor([4.25, 1.5], dtype=torch.float64),
            vectors=None,
            residual_norms=torch.tensor([1e-9, 3e-9], dtype=torch.float64),
            converged=torch.tensor([True, False]),
            num_matvecs=40,
            seconds=0.5,
            method="lanczos",
            which="largest",
            tol=1e-8,
            norm_estimate=4.25,
            info={"label": EVIL},
        ),
    )
    run.add_result(
        "Trace",
        "tr H",
        TraceEstimate(
            value=12.345678, stderr=0.0123, num_matvecs=99, seconds=1.5, method="hutch++"
        ),
    )
    run.add_scalar("Trace", f"odd {EVIL}", 2.5e-7, stderr=1e-9, unit=EVIL, **{EVIL: EVIL})
    run.add_figure("Spectrum", "top", plot_eigenvalues([4.25, 1.5]), f"Top eigenvalues {EVIL}")
    run.add_claim("Spectrum", f"λ_max above 4 {EVIL}", f"λ_max = 4.25 {EVIL}", True)
    run.add_claim("Trace", "the trace is negative", 12.35, False)
    run.add_claim("Trace", "undecided claim", "n/a", None)
    run.add_table("Trace", f"table {EVIL}", [{EVIL: EVIL, "n": 3}], caption=f"cap {EVIL}")
    run.add_array("density/grid", np.linspace(0, 1, 3))
    run.log_metrics(0, loss=1.0)
    run.finalize()
    return run


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, str]:
    run = _demo_run(tmp_path_factory.mktemp("page"))
    return run, (run.path / "report.html").read_text(encoding="utf-8")


def test_page_carries_the_numbers_figures_and_claims(demo: tuple[RunDir, str]) -> None:
    run, page = demo
    parsed = _Page(page)
    text = parsed.visible()
    # key numbers, 4 and 2 significant figures, powers of ten as markup
    assert "4.250" in text and "1.500" in text and "12.35 ± 0.012" in text
    assert "2.500×10<sup>−7</sup> ± 1.0×10<sup>−9</sup>" in page
    # one embedded figure per record, byte for byte
    imgs = [a["src"] for tag, a in parsed.tags if tag == "img"]
    assert len(imgs) == len(run.figures) == 1
    assert base64.b64decode(imgs[0].split(",", 1)[1]) == (run.path / "figures/top.png").read_bytes()
    assert "Figure 1." in text
    # the claims table: one row per claim with its mark
    claims = "".join(re.findall(r'<table class="claims">.*?</table>', page, re.S))
    marks = re.findall(r'<td class="holds (yes|no|na)">([✓✗–])</td>', claims)
    assert marks == [("yes", "✓"), ("no", "✗"), ("na", "–")]
    assert "1 of 3 hold, 1 do not, 1 undecided" in text
    # sections in order, each in the contents, then arrays, config and the command
    h2 = re.findall(r"<h2>([^<]*)</h2>", page)
    assert h2 == ["Spectrum", "Trace", "Saved arrays", "Configuration", "Re-run this analysis"]
    anchors = [a["href"] for tag, a in parsed.tags if tag == "a"]
    assert anchors == ["#s-spectrum", "#s-trace", "#arrays", "#config", "#rerun"]
    assert "density/grid" in text and "1 records in metrics.jsonl (step, seconds, loss)" in text
    assert "hesslab demo --title" in text and '"seed": 7' in page
    # diagnostics columns of the scalars table
    assert "matvecs" in text and "converged" in text and "method=lanczos" in text


def test_no_record_text_becomes_markup(demo: tuple[RunDir, str]) -> None:
    _, page = demo
    assert "<script" not in page.lower()
    # every place the text went shows it, escaped
    assert page.count("&lt;script&gt;") >= 12
    assert not any(tag == "script" for tag, _ in _Page(page).tags)
    # no external resource and no script URL anywhere
    assert not re.search(r'(src|href)="(?!data:image/png;base64,|#)', page)


def test_rebuilt_page_is_identical(demo: tuple[RunDir, str]) -> None:
    run, page = demo
    assert rebuild_report(run.path).read_text(encoding="utf-8") == page


def test_markdown_is_safe_and_shifted() -> None:
    out = markdown_to_html(f"# Title\n\n{EVIL}\n\n![x](https://example.org/x.png)")
    assert "<h3>Title</h3>" in out and "<script" not in out and "<img" not in out
    for url in ("javascript:alert(1)", "data:text/html,x", "file:///etc/passwd", "vbscript:x"):
        assert "href" not in markdown_inline(f"[a]({url})"), url
    assert markdown_inline("[a](https://x.org)") == '<a href="https://x.org">a</a>'
    assert markdown_inline("[a](#s-trace)") == '<a href="#s-trace">a</a>'
    assert (
        markdown_inline("**b** *c* `<d>`") == "<strong>b</strong> <em>c</em> <code>&lt;d&gt;</code>"
    )
    assert "<pre><code>raw &lt;b&gt;\n</code></pre>" in markdown_to_html("```\nraw <b>\n```")
