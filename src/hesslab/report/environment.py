"""What a run folder records about where it ran: versions, platform, threads, device.

:func:`capture_environment` is the ``environment`` key of ``config.json`` (see
``docs/run-folder.md``); :func:`now` is the timestamp format of ``created`` and
``finished``.
"""

from __future__ import annotations

import datetime as _dt
import platform
from typing import Any

import numpy as np
import torch

__all__ = ["capture_environment", "hesslab_version", "now"]


def now() -> str:
    """The local time with its UTC offset, to the second (ISO 8601)."""
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def hesslab_version() -> str:
    """The installed distribution's version, else ``hesslab.__version__`` (a source tree)."""
    try:
        from importlib.metadata import version

        return version("hesslab")
    except Exception:  # not installed as a distribution (e.g. run from a source tree)
        import hesslab

        return getattr(hesslab, "__version__", "unknown")


def capture_environment(device: str) -> dict[str, Any]:
    """Versions (hesslab, torch, NumPy, Python), platform, thread count and CUDA state.

    Args:
        device: the run's compute device (``"cpu"``, ``"cuda:0"``, ...); its name is
            recorded as ``device_name`` (the GPU's, or the CPU's processor string).

    Returns:
        A JSON-ready mapping.
    """
    env: dict[str, Any] = {
        "hesslab": hesslab_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch_num_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        try:
            env["device_name"] = torch.cuda.get_device_name(torch.device(device))
        except Exception:  # a bad index: record what we can
            env["device_name"] = None
    elif device == "cpu":
        env["device_name"] = platform.processor() or platform.machine()
    return env
