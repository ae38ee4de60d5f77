"""Reproductions of published Hessian analyses, one module per paper, and their registry.

``EXPERIMENTS`` maps a name (``"sagun2017"``, ...) to an :class:`Experiment`; the
command line's ``hesslab list`` and ``hesslab reproduce NAME [--smoke]`` read it.
"""

from hesslab.experiments.registry import (
    EXPERIMENTS,
    Experiment,
    ExperimentSpec,
    Progress,
    get_experiment,
    list_experiments,
)

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "ExperimentSpec",
    "Progress",
    "get_experiment",
    "list_experiments",
]
