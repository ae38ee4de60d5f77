"""The per-file lint exemptions ruff needs, and a check that the list only shrinks.

``pyproject.toml`` turns on ruff's size and complexity rules (``C901``, ``PLR0912``,
``PLR0915``) and the docstring rules (``D``). Files that still break them are listed, one
entry per file with only the codes it needs, in ``[tool.ruff.lint.extend-per-file-ignores]``
(the permanent exemptions, such as tests from ``D``, live in ``per-file-ignores``). This
script runs ruff with that list emptied and reports what each file really needs.

Commands (from the repository root)::

    python tools/lint_offenders.py            # print the table ruff needs now
    python tools/lint_offenders.py --write    # rewrite the table in pyproject.toml
    python tools/lint_offenders.py --check    # exit 1 if the table lists a code no file needs

``--check`` (run by ``make lint`` and ``tests/test_lint_offenders.py``) fails when a file
is listed for a code it no longer breaks, so a fix must also shorten the list: the list only
shrinks. A file that needs a code the table lacks is reported too (``ruff check`` fails on
it anyway). Only the size, complexity and docstring rules (:data:`EXEMPTIBLE`) are listed;
any other finding is to be fixed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
PATHS = ("src", "tests", "bench", "tools")
# the rules a file may be exempted from; any other finding is to be fixed, not listed
EXEMPTIBLE = ("C901", "PLR0912", "PLR0915", "D")
TABLE = "tool.ruff.lint.extend-per-file-ignores"
HEADER = (
    f"[{TABLE}]\n"
    "# Files that still break the size/complexity/docstring rules, each with only the codes\n"
    "# it needs. This list only shrinks: `python tools/lint_offenders.py --check` (run by\n"
    "# `make lint` and the test suite) fails when an entry is no longer needed; regenerate\n"
    "# it with `python tools/lint_offenders.py --write`.\n"
)


def ruff_config_without_table(pyproject_text: str) -> str:
    """``pyproject.toml``'s ``[tool.ruff*]`` sections as a ``ruff.toml``, minus the table.

    (``ruff --config 'lint.extend-per-file-ignores = {}'`` merges with the file's table
    instead of replacing it, so the table is dropped from a copy of the configuration.)
    """
    out: list[str] = []
    keep = False
    for line in pyproject_text.splitlines():
        header = re.match(r"^\[([^\[\]]+)\]\s*(#.*)?$", line)
        if header:
            name = header.group(1).strip()
            keep = (name == "tool.ruff" or name.startswith("tool.ruff.")) and name != TABLE
            if keep:
                out.append(f"[{name[len('tool.ruff.') :]}]" if name != "tool.ruff" else "")
            continue
        if keep:
            out.append(line)
    return "\n".join(out) + "\n"


def needed(root: Path = ROOT) -> dict[str, list[str]]:
    """Run ruff with the exemption table emptied; return each offending file's codes."""
    config = ruff_config_without_table((root / "pyproject.toml").read_text())
    # next to pyproject.toml, so that relative settings (src, patterns) resolve as there
    with tempfile.NamedTemporaryFile(
        "w", dir=root, prefix=".lint-offenders-", suffix=".toml", delete=False
    ) as handle:
        handle.write(config)
    try:
        cmd = [sys.executable, "-m", "ruff", "check", *PATHS, "--output-format", "json"]
        cmd += ["--exit-zero", "--no-cache", "--config", handle.name]
        out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True).stdout
    finally:
        Path(handle.name).unlink()
    codes: dict[str, set[str]] = {}
    for item in json.loads(out):
        if item["code"] is None or not item["code"].startswith(EXEMPTIBLE):
            continue  # a syntax error or another rule: fix it, do not exempt it
        path = Path(item["filename"]).resolve().relative_to(root.resolve()).as_posix()
        codes.setdefault(path, set()).add(item["code"])
    return {path: sorted(c) for path, c in sorted(codes.items())}


def listed(pyproject: Path = PYPROJECT) -> dict[str, list[str]]:
    """The exemption table as ``pyproject.toml`` has it now."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    config = tomllib.loads(pyproject.read_text())
    table = config.get("tool", {}).get("ruff", {}).get("lint", {})
    return {k: sorted(v) for k, v in table.get("extend-per-file-ignores", {}).items()}


def render(table: dict[str, list[str]]) -> str:
    """The TOML text of an exemption table (with its header comment)."""
    rows = [f'"{path}" = [{", ".join(f"{c!r}" for c in codes)}]' for path, codes in table.items()]
    return HEADER + "".join(row.replace("'", '"') + "\n" for row in rows)


def compare(have: dict[str, list[str]], need: dict[str, list[str]]) -> list[str]:
    """Lines describing each difference between the listed and the needed table."""
    problems = []
    for path in sorted(set(have) | set(need)):
        extra = sorted(set(have.get(path, [])) - set(need.get(path, [])))
        missing = sorted(set(need.get(path, [])) - set(have.get(path, [])))
        if extra:
            problems.append(f"{path}: listed for {', '.join(extra)} it no longer needs")
        if missing:
            problems.append(f"{path}: needs {', '.join(missing)}, not listed")
    return problems


def write(table: dict[str, list[str]], pyproject: Path = PYPROJECT) -> None:
    """Replace (or append) the exemption table in ``pyproject.toml``."""
    text = pyproject.read_text()
    block = re.compile(rf"^\[{re.escape(TABLE)}\]\n(?:(?!\[).*\n?)*", re.MULTILINE)
    new = render(table)
    if block.search(text):
        text = block.sub(lambda _: new + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + new
    pyproject.write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: print, ``--write`` or ``--check`` the exemption table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="fail if the table is not minimal")
    group.add_argument("--write", action="store_true", help="rewrite the table in pyproject")
    args = parser.parse_args(argv)
    need = needed()
    if args.write:
        write(need)
        return 0
    if args.check:
        problems = compare(listed(), need)
        for line in problems:
            sys.stderr.write(line + "\n")
        if problems:
            sys.stderr.write("fix: python tools/lint_offenders.py --write\n")
        return 1 if problems else 0
    sys.stdout.write(render(need))
    return 0


if __name__ == "__main__":
    sys.exit(main())
