"""The registry of reproducible experiments: one explicit, lazy table, name -> :class:`Experiment`.

The command line (``hesslab list``, ``hesslab reproduce NAME [--smoke]``) reads this
registry only. The protocol it follows::

    spec = EXPERIMENTS[name]                                  # or get_experiment(name)
    cfg = spec.config(smoke=smoke, overrides={"seeds": [0, 1]})  # a JSON-ready dict
    run = RunDir.create(out, name, config=cfg, command=argv, title=spec.title)
    result = spec.run(run, cfg, progress=None)                # writes into run, returns a dict
    run.finalize()                                            # the caller finalizes

An experiment module provides a frozen config dataclass with ``smoke()`` and ``full()``
class methods (every knob a field), its parts and its claims, and one
:class:`~hesslab.experiments._base.Experiment` (``SPEC``) that ties them together; the
runner (:meth:`Experiment.run`, ``run(..., stages=store)`` makes the parts resumable, see
:mod:`hesslab.stages`) accepts the config as a dict (as stored in
``config.json``) or as the dataclass itself and never finalizes the run folder.

Importing this module imports no paper module: each is imported when its entry is first
looked up (``EXPERIMENTS[name]``), so ``hesslab list`` and one ``reproduce`` load only
what they use. To add an experiment: write ``hesslab/experiments/<paper>.py`` with its
config class, parts and ``SPEC``, then add one line to :data:`_TABLE`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from hesslab.errors import ConfigurationError
from hesslab.experiments._base import Experiment, Progress

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "ExperimentSpec",
    "Progress",
    "get_experiment",
    "list_experiments",
]

#: The former name of :class:`Experiment`.
ExperimentSpec = Experiment

#: Every experiment, in ``hesslab list`` order: name -> (module, attribute holding its
#: :class:`Experiment`). A module is imported on first access only.
_TABLE: dict[str, tuple[str, str]] = {
    "sagun2017": ("hesslab.experiments.sagun2017", "SPEC"),
    "sagun2017-simplex": ("hesslab.experiments.sagun2017", "SIMPLEX_SPEC"),
    "wei2019": ("hesslab.experiments.wei2019", "SPEC"),
    "displacement": ("hesslab.experiments.displacement", "SPEC"),
    "li2019": ("hesslab.experiments.li2019", "SPEC"),
    "sankar2021": ("hesslab.experiments.sankar2021", "SPEC"),
    "sankar2021-mnist": ("hesslab.experiments.sankar2021", "MNIST_SPEC"),
    "dinh2017": ("hesslab.experiments.dinh2017", "SPEC"),
    "dinh2017-mnist": ("hesslab.experiments.dinh2017", "MNIST_SPEC"),
    "sankar2021-reg": ("hesslab.experiments.sankar2021_reg", "SPEC"),
    "wsbound-reg": ("hesslab.experiments.sankar2021_reg", "WSBOUND_SPEC"),
    "cohen2021": ("hesslab.experiments.cohen2021", "SPEC"),
    "zhang2024": ("hesslab.experiments.zhang2024", "SPEC"),
}


class _Registry(Mapping[str, Experiment]):
    """Read-only ``{name: Experiment}`` that imports each experiment module on access."""

    def __getitem__(self, name: str) -> Experiment:
        if name not in _TABLE:
            raise KeyError(name)
        module, attr = _TABLE[name]
        return getattr(importlib.import_module(module), attr)

    def __iter__(self) -> Iterator[str]:
        yield from _TABLE

    def __len__(self) -> int:
        return len(_TABLE)


EXPERIMENTS: Mapping[str, Experiment] = _Registry()
"""Every experiment ``hesslab reproduce`` knows, by name (``hesslab list`` order)."""


def get_experiment(name: str) -> Experiment:
    """The spec of experiment ``name``; a clear error listing the known names otherwise."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown experiment {name!r}; known: {', '.join(sorted(EXPERIMENTS))}"
        ) from None


def list_experiments() -> list[dict[str, Any]]:
    """One summary dict per experiment (name, title, paper, arXiv id, expected run times)."""
    return [spec.summary_dict() for spec in EXPERIMENTS.values()]
