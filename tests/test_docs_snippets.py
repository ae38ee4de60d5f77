"""Every ```python block of the documentation (docs/**/*.md and the README) runs.

The blocks of one page run in order in one namespace (as in a notebook), in a temporary
working directory. A block preceded by a ``<!-- skip-test -->`` line is not run (only for
what cannot run offline on one machine, e.g. a multi-node ``torchrun`` job). An HTML
comment ``<!-- test-setup ... -->`` (invisible on the page) holds code run at its place
before the following blocks, e.g. to write the run folder a snippet reads. A page whose
blocks need an optional extra that is not installed is skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(
    r"^(<!-- skip-test -->\s*\n)?```python\n(.*?)^```|^<!-- test-setup\n(.*?)^-->", re.M | re.S
)
OPTIONAL = {"transformers", "accelerate", "lightning", "pytorch_lightning", "mlxtend"}


def python_blocks(text: str) -> list[str]:
    """The runnable ```python blocks and test-setup comments of a Markdown page, in order."""
    blocks = (
        m.group(2) if m.group(3) is None else m.group(3)
        for m in FENCE.finditer(text)
        if not m.group(1)
    )
    return list(blocks)


README = DOCS.parent / "README.md"
PAGES = [*sorted(p for p in DOCS.rglob("*.md") if python_blocks(p.read_text())), README]


def _name(page: Path) -> str:
    return "README.md" if page == README else page.relative_to(DOCS).as_posix()


def test_pages_have_snippets():
    names = {_name(p) for p in PAGES}
    assert {"guide/own-model.md", "guide/huggingface.md", "guide/training.md"} <= names
    assert python_blocks(README.read_text()), "the README's own-model example is a python block"


def test_skip_marker_is_honoured():
    text = "a\n<!-- skip-test -->\n```python\nraise SystemExit\n```\n```python\nx = 1\n```\n"
    assert python_blocks(text) == ["x = 1\n"]
    hidden = "<!-- test-setup\ny = 2\n-->\n```python\nprint(y)\n```\n"
    assert python_blocks(hidden) == ["y = 2\n", "print(y)\n"]


@pytest.mark.parametrize("page", PAGES, ids=_name)
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
        except ImportError as e:  # e.g. transformers' Trainer without accelerate
            missing = [p for p in OPTIONAL if f"`{p}" in str(e) or f"'{p}" in str(e)]
            if missing:
                pytest.skip(f"{page.name} needs the optional package {missing[0]}")
            raise
