"""The ``hesslab`` command line (placeholder until the CLI issue lands)."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hesslab`` console script."""
    return 0
