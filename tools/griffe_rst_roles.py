"""Griffe extension for the docs build: Sphinx roles in docstrings rendered as code.

hesslab's docstrings are Google style but name other objects with Sphinx roles
(``:class:`~hesslab.train.SpectrumMonitor```, ``:func:`hesslab.trace```), which Markdown
would show verbatim. This rewrites each role as inline code (the last component with
``~``, the full path otherwise), as Sphinx displays it, and
``text::`` before a literal block as ``text:``. Loaded by ``mkdocs.yml``
(``extensions:`` of the mkdocstrings Python handler); the library never imports it.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|exc|obj|const):`(~?)([^`]+)`")
LITERAL = re.compile(r"(\S)::(\n[ \t]*\n)")  # "Commands::" before an indented block


def _code(match: re.Match[str]) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


def rewrite_roles(text: str) -> str:
    """``text`` with every Sphinx role as inline code and ``::`` before a literal block
    as ``:`` (Markdown shows the indented block as code already)."""
    return LITERAL.sub(r"\1:\2", ROLE.sub(_code, text))


class RstRoles(Extension):
    """Rewrite Sphinx roles in every docstring griffe loads."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite_roles(obj.docstring.value)
