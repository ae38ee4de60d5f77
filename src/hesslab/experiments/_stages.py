"""Resumable parts of a reproduction (compatibility module).

:class:`Parts` now lives in :mod:`hesslab.stages`, beside
:class:`~hesslab.stages.StageStore`; it is re-exported here so that
``from hesslab.experiments._stages import Parts`` keeps working.
"""

from __future__ import annotations

from hesslab.stages import Parts

__all__ = ["Parts"]
