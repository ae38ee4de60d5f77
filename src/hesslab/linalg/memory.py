"""Peak memory of a solver call, recorded as ``peak_memory_bytes`` in its result.

What is measured:

* **CUDA** (the operator lives on a CUDA device): ``torch.cuda.max_memory_allocated`` after
  ``torch.cuda.reset_peak_memory_stats`` at the call's start, minus the memory allocated
  at the start: the most tensor memory the call held at once beyond what existed before
  (the caching allocator's reserve and other processes are not counted).
* **CPU**: the process's resident-set high-water mark. On Linux the mark is reset to the
  current RSS at the call's start (``/proc/self/clear_refs``, value 5) and read from
  ``VmHWM`` in ``/proc/self/status`` at its end, minus the RSS at the start: the call's
  peak resident memory beyond the start, including allocator slack, all threads and
  anything else the process allocated meanwhile. Where the mark cannot be reset
  (other systems), ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` before and after: how
  much the call raised the process's lifetime peak, a lower bound (0 when an earlier
  call had peaked higher).

A solver called inside another measured one (``logdet`` calling ``eigenpairs``) records
``None``: resetting the peak would corrupt the outer measurement, which covers it.
"""

from __future__ import annotations

import dataclasses
import functools
import resource
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = ["measure_peak_memory", "records_peak_memory"]

F = TypeVar("F", bound=Callable[..., Any])
_depth = 0


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def _maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports kilobytes


class measure_peak_memory:
    """``with measure_peak_memory(device) as m: ...`` then ``m.bytes`` (see module doc)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.bytes: int | None = None

    def __enter__(self) -> measure_peak_memory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        elif _reset_rss_peak():
            self._start, self._proc = (_status_kb("VmRSS") or 0) * 1024, True
        else:
            self._start, self._proc = _maxrss_bytes(), False
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._proc:
            peak = (_status_kb("VmHWM") or 0) * 1024
        else:
            peak = _maxrss_bytes()
        self.bytes = max(0, peak - self._start)


def records_peak_memory(fn: F) -> F:
    """Wrap a solver so that its result carries ``peak_memory_bytes`` (outermost call only).

    The device is the first argument's ``device`` attribute (an operator or a tensor),
    else the CPU.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _depth
        if _depth:
            return fn(*args, **kwargs)
        device = getattr(args[0], "device", "cpu") if args else "cpu"
        _depth += 1
        try:
            with measure_peak_memory(device) as m:
                result = fn(*args, **kwargs)
        finally:
            _depth -= 1
        if dataclasses.is_dataclass(result) and "peak_memory_bytes" in {
            f.name for f in dataclasses.fields(result)
        }:
            result = dataclasses.replace(result, peak_memory_bytes=m.bytes)
        return result

    return wrapper  # type: ignore[return-value]
