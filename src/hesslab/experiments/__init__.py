"""Reproductions of published Hessian analyses, one module per paper, and their registry.

``EXPERIMENTS`` maps a name (``"sagun2017"``, ...) to an :class:`ExperimentSpec`; the
command line's ``hesslab list`` and ``hesslab reproduce NAME [--smoke]`` read it.
"""

from hesslab.experiments.registry import (
    EXPERIMENTS,
    ExperimentSpec,
    Progress,
    get_experiment,
    list_experiments,
)

__all__ = ["EXPERIMENTS", "ExperimentSpec", "Progress", "get_experiment", "list_experiments"]
