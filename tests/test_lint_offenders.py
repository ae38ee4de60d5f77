"""The per-file lint exemptions in pyproject.toml are exactly what ruff needs (they only shrink)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location(
        "lint_offenders", ROOT / "tools" / "lint_offenders.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exemption_table_lists_only_what_ruff_needs():
    pytest.importorskip("ruff")
    tool = _tool()
    problems = tool.compare(tool.listed(), tool.needed())
    assert problems == [], "\n".join([*problems, "fix: python tools/lint_offenders.py --write"])


def test_compare_flags_a_code_no_longer_needed_and_one_missing():
    tool = _tool()
    have = {"a.py": ["C901", "D205"], "gone.py": ["D102"]}
    need = {"a.py": ["C901", "PLR0915"]}
    problems = tool.compare(have, need)
    assert problems == [
        "a.py: listed for D205 it no longer needs",
        "a.py: needs PLR0915, not listed",
        "gone.py: listed for D102 it no longer needs",
    ]
    assert tool.compare(need, need) == []


def test_write_replaces_the_table_and_keeps_the_rest(tmp_path):
    tool = _tool()
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[tool.ruff.lint]\nselect = ["D"]\n\n'
        f'[{tool.TABLE}]\n"old.py" = ["D205"]\n\n'
        "[tool.other]\nx = 1\n"
    )
    table = {"src/a.py": ["C901", "PLR0915"], "src/b.py": ["D102"]}
    tool.write(table, pyproject)
    assert tool.listed(pyproject) == table
    text = pyproject.read_text()
    assert "old.py" not in text and "[tool.other]\nx = 1" in text and 'select = ["D"]' in text
    config = tool.ruff_config_without_table(text)
    assert "src/a.py" not in config and "[lint]" in config and "other" not in config
