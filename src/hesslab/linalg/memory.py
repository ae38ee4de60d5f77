"""Peak memory of a solver call, recorded as ``peak_memory_bytes`` in its result.

What is measured:

* **CUDA** (the operator lives on a CUDA device): ``torch.cuda.max_memory_allocated`` after
  ``torch.cuda.reset_peak_memory_stats`` at the call's start, minus the memory allocated
  at the start: the most tensor memory the call held at once beyond what existed before
  (the caching allocator's reserve and other processes are not counted).
* **CPU**: the process's resident-set high-water mark, minus the resident set at the
  call's start: the call's peak resident memory beyond the start, including allocator
  slack, all threads and anything else the process allocated meanwhile; memory the
  allocator serves from free but still resident heap (glibc keeps freed chunks below its
  mmap threshold) does not raise it, since the process's footprint did not grow. Three
  readings,
  the first the platform allows:

  1. Linux with a writable ``/proc/self/clear_refs``: the mark is reset to the current RSS
     at the call's start (value 5) and read from ``VmHWM`` in ``/proc/self/status`` at its
     end. Exact.
  2. A readable current RSS (``/proc/self/statm``) but no reset (containers that mount
     ``/proc`` read-only, sandboxed kernels): a daemon thread samples the RSS every
     millisecond during the call, and the result is the larger of the highest sample and,
     when the call raised the process's lifetime peak (``getrusage``'s ``ru_maxrss``), that
     new peak, which then is exact. A lower bound: a peak shorter than a millisecond
     between samples can be missed.
  3. Neither (other systems): ``ru_maxrss`` before and after, how much the call raised the
     lifetime peak, 0 when it did not. A lower bound.
A solver called inside another measured one (``logdet`` calling ``eigenpairs``) records
``None``: resetting the peak would corrupt the outer measurement, which covers it.
"""

from __future__ import annotations

import dataclasses
import functools
import resource
import sys
import threading
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


_PAGE = resource.getpagesize()


def _rss_bytes() -> int | None:
    """The current resident set from ``/proc/self/statm`` (None where unreadable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


class _RssSampler(threading.Thread):
    """Samples the current RSS every ``interval`` seconds until stopped; keeps the maximum."""

    def __init__(self, interval: float = 1e-3) -> None:
        super().__init__(name="hesslab-rss-sampler", daemon=True)
        self.interval = interval
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes() or 0)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return max(self.peak, _rss_bytes() or 0)


class measure_peak_memory:
    """``with measure_peak_memory(device) as m: ...`` then ``m.bytes`` (see module doc).

    ``m.method`` names the reading used: ``"cuda"``, ``"rss-hwm"`` (exact), ``"rss-sampled"``
    or ``"maxrss"`` (lower bounds).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.bytes: int | None = None
        self.method = ""

    def __enter__(self) -> measure_peak_memory:
        self._sampler: _RssSampler | None = None
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start, self.method = torch.cuda.memory_allocated(self.device), "cuda"
            return self
        rss = _rss_bytes()
        self._maxrss = _maxrss_bytes()
        if _reset_rss_peak():
            self._start, self.method = (_status_kb("VmRSS") or 0) * 1024, "rss-hwm"
        elif rss is not None:
            self._start, self.method = rss, "rss-sampled"
            self._sampler = _RssSampler()
            self._sampler.start()
        else:
            self._start, self.method = self._maxrss, "maxrss"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.method == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method == "rss-hwm":
            peak = (_status_kb("VmHWM") or 0) * 1024
        else:
            peak = self._sampler.stop() if self._sampler is not None else 0
            maxrss = _maxrss_bytes()
            if maxrss > self._maxrss:  # the call set a new lifetime peak: that is its peak
                peak = max(peak, maxrss)
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
