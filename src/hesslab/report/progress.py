"""Progress bars for the command line, quiet when stderr is not a terminal.

Library algorithms never print; they accept ``callback=`` and call it with a dict of
diagnostics (e.g. ``{"num_matvecs": 120, "residual": 3e-5}``). :class:`ProgressCallback`
turns those calls into updates of a :func:`progress_bar` (tqdm, writing to stderr)::

    with progress_bar(total=max_matvecs, desc="Lanczos", unit="matvec") as bar:
        result = eigenpairs(H, k=10, callback=ProgressCallback(bar))
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from tqdm import tqdm

__all__ = ["ProgressCallback", "StepProgress", "progress_bar", "stderr_is_terminal"]


def stderr_is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def progress_bar(
    total: int | float | None,
    desc: str = "",
    enabled: bool | None = None,
    *,
    unit: str = "it",
    leave: bool = False,
    file: TextIO | None = None,
) -> tqdm:
    """A tqdm progress bar on stderr, disabled when stderr is not a terminal.

    Args:
        total: expected number of units (``None``: unknown, shows a counter).
        desc: label shown before the bar.
        enabled: force the bar on (``True``) or off (``False``); ``None`` shows it only
            when ``file`` is a terminal (so logs and CI output stay clean).
        unit: name of one unit, e.g. ``"matvec"``, ``"step"``.
        leave: keep the finished bar on screen.
        file: output stream (default ``sys.stderr``).

    Returns:
        A ``tqdm`` instance; use it as a context manager or call ``close()``. When
        disabled, every method is a cheap no-op.
    """
    stream = sys.stderr if file is None else file
    if enabled is None:
        enabled = stderr_is_terminal(stream)
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        leave=leave,
        file=stream,
        disable=not enabled,
        dynamic_ncols=True,
        mininterval=0.2,
    )


class ProgressCallback:
    """Adapter from an algorithm's ``callback(info: dict)`` to progress-bar updates.

    If ``info`` holds ``key`` (default ``"num_matvecs"``, a running total), the bar is
    moved to that count; otherwise each call advances it by one. Entries named in
    ``postfix`` (e.g. ``("residual",)``) are shown after the bar.

    Args:
        bar: a bar from :func:`progress_bar` (or any tqdm instance).
        key: the running-total entry of ``info`` to follow.
        postfix: entries of ``info`` to display.
    """

    def __init__(self, bar: tqdm, key: str = "num_matvecs", postfix: Sequence[str] = ()) -> None:
        self.bar = bar
        self.key = key
        self.postfix = tuple(postfix)

    def __call__(self, info: Mapping[str, Any] | None = None) -> None:
        """Update the bar from one callback call."""
        info = info or {}
        count = info.get(self.key)
        if isinstance(count, (int, float)) and not isinstance(count, bool):
            delta = count - self.bar.n
            if delta > 0:
                self.bar.update(delta)
        else:
            self.bar.update(1)
        if self.postfix:
            shown = {k: info[k] for k in self.postfix if k in info}
            if shown:
                self.bar.set_postfix(
                    {k: f"{v:.3g}" if isinstance(v, float) else v for k, v in shown.items()},
                    refresh=False,
                )


class StepProgress:
    """Counts the steps of a long job and reports them to a ``progress(desc, fraction)``.

    Each call ``tick(desc, amount=1.0)`` adds ``amount`` steps (capped at ``total``), logs
    ``desc`` with the count at INFO level on ``logger`` and calls
    ``progress(desc, done / total)`` when a progress function was given (the experiments'
    ``progress=`` argument; the command line draws it as a bar).

    Args:
        progress: ``progress(description, fraction_done)``, or ``None``.
        total: the number of steps (at least 1 is assumed).
        logger: where the steps are logged (default this module's logger).
    """

    def __init__(
        self,
        progress: Callable[[str, float], None] | None,
        total: float,
        logger: logging.Logger | None = None,
    ) -> None:
        self.progress, self.total, self.done = progress, max(float(total), 1.0), 0.0
        self.logger = logger or logging.getLogger(__name__)

    def __call__(self, desc: str, amount: float = 1.0) -> None:
        """Add ``amount`` steps (capped at ``total``), log ``desc`` and report the fraction."""
        self.done = min(self.total, self.done + amount)
        self.logger.info("%s (%g/%g)", desc, self.done, self.total)
        if self.progress is not None:
            self.progress(desc, self.done / self.total)
