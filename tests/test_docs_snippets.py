"""Every ```python block of the documentation (docs/**/*.md) runs.

The blocks of one page run in order in one namespace (as in a notebook), in a temporary
working directory. A block preceded by a ``<!-- skip-test -->`` line is not run (only for
what cannot run offline on one machine, e.g. a multi-node ``torchrun`` job). A page
whose blocks need an optional extra that is not installed is skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"^(<!-- skip-test -->\s*\n)?```python\n(.*?)^```", re.M | re.S)
OPTIONAL = {"transformers", "accelerate", "lightning", "pytorch_lightning", "mlxtend"}


def python_blocks(text: str) -> list[str]:
    """The runnable ```python blocks of a Markdown page, in order."""
    return [m.group(2) for m in FENCE.finditer(text) if not m.group(1)]


PAGES = sorted(p for p in DOCS.rglob("*.md") if python_blocks(p.read_text()))


def test_pages_have_snippets():
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert {"guide/own-model.md", "guide/huggingface.md", "guide/training.md"} <= names


def test_skip_marker_is_honoured():
    text = "a\n<!-- skip-test -->\n```python\nraise SystemExit\n```\n```python\nx = 1\n```\n"
    assert python_blocks(text) == ["x = 1\n"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_snippets_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for i, block in enumerate(python_blocks(page.read_text())):
        try:
            exec(compile(block, f"{page.name}[block {i}]", "exec"), namespace)
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] in OPTIONAL:
                pytest.skip(f"{page.name} needs the optional package {e.name}")
            raise
