"""The registry of reproducible experiments: an explicit dict, name -> :class:`ExperimentSpec`.

The command line (``hesslab list``, ``hesslab reproduce NAME [--smoke]``) reads this
registry only. The protocol it follows::

    spec = EXPERIMENTS[name]                                  # or get_experiment(name)
    cfg = spec.config(smoke=smoke, overrides={"seeds": [0, 1]})  # a JSON-ready dict
    run = RunDir.create(out, name, config=cfg, command=argv, title=spec.title)
    result = spec.run(run, cfg, progress=None)                # writes into run, returns a dict
    run.finalize()                                            # the caller finalizes

An experiment module provides a frozen config dataclass with ``smoke()`` and ``full()``
class methods (every knob a field) and a ``run(run_dir, config, progress=None) -> dict``
function (``run(..., stages=store)`` makes its parts resumable, see
:mod:`hesslab.experiments._stages`). ``spec.run`` accepts the config as a dict (as stored
in ``config.json``) or as the dataclass itself; it never finalizes the run folder.

To add an experiment: write ``hesslab/experiments/<paper>.py`` with its config class and
``run`` function, then add one :class:`ExperimentSpec` entry to :data:`EXPERIMENTS`.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hesslab.errors import ConfigurationError
from hesslab.experiments import sagun2017
from hesslab.report.run import RunDir

if TYPE_CHECKING:
    from hesslab.analysis import StageStore

__all__ = ["EXPERIMENTS", "ExperimentSpec", "Progress", "get_experiment", "list_experiments"]

#: ``progress(description, fraction_done)``, ``fraction_done`` in ``[0, 1]``.
Progress = Callable[[str, float], None]


def _parse_value(text: str) -> Any:
    """A command-line value: JSON (``[1, 2]``, ``0.5``, ``true``, ``null``), a Python
    literal (``(16, 16)``, ``None``), or else the string itself."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _coerce(name: str, value: Any, default: Any) -> Any:
    """``value`` converted to the type of the field's ``default`` (lists become tuples)."""
    if isinstance(value, str) and not isinstance(default, str):
        value = _parse_value(value)
    if value is None:
        return None
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigurationError(f"{name} must be true or false, got {value!r}")
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not float(value).is_integer():
            raise ConfigurationError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigurationError(f"{name} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, tuple):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = (value,)
        if not isinstance(value, (list, tuple)):
            raise ConfigurationError(f"{name} must be a list, got {value!r}")
        if name == "seeds" and not value:
            raise ConfigurationError("seeds must list at least one seed, e.g. seeds=[0]")
        return _freeze(value)
    return _freeze(value)


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    return value


@dataclass(frozen=True)
class ExperimentSpec:
    """One reproducible experiment: what it is, how to configure it, how to run it.

    Attributes:
        name: registry key and run-folder name, e.g. ``"sagun2017"``.
        title: heading of the report.
        paper: the citation (authors, year, title).
        arxiv: the arXiv identifier, e.g. ``"1706.04454"``.
        description: one paragraph: what is reproduced, on what data.
        config_type: frozen dataclass of every knob, with ``smoke()`` and ``full()``
            class methods returning instances.
        runner: ``runner(run_dir, config_instance, progress, stages=None) -> dict``
            writes the experiment's figures, numbers and claims into ``run_dir`` (without
            finalizing it) and returns a small JSON-ready result dict; with a
            :class:`~hesslab.analysis.StageStore` as ``stages`` its parts are resumable
            (:class:`hesslab.experiments._stages.Parts`).
        smoke_seconds: expected wall time of the smoke size on 2 CPU cores (measured).
        full_seconds: expected wall time of the full size on 2 CPU cores (measured or
            estimated, see the experiment module's docstring).
    """

    name: str
    title: str
    paper: str
    arxiv: str
    description: str
    config_type: type
    runner: Callable[..., dict[str, Any]]
    smoke_seconds: float
    full_seconds: float

    def config_object(
        self,
        smoke: bool = False,
        overrides: Mapping[str, Any] | Sequence[str] | None = None,
    ) -> Any:
        """The config dataclass: the smoke or full size with ``overrides`` applied.

        Args:
            smoke: start from ``config_type.smoke()`` instead of ``config_type.full()``.
            overrides: field -> value, or ``"field=value"`` strings (values parsed as
                JSON or Python literals, e.g. ``"ks=[3,5]"``, ``"widths=(32, 32)"``).

        Raises:
            ConfigurationError: an unknown field or a value of the wrong type.
        """
        base = self.config_type.smoke() if smoke else self.config_type.full()
        if not overrides:
            return base
        if not isinstance(overrides, Mapping):
            pairs = {}
            for item in overrides:
                key, sep, val = str(item).partition("=")
                if not sep:
                    raise ConfigurationError(f"override {item!r} must look like field=value")
                pairs[key.strip()] = val.strip()
            overrides = pairs
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
        changes = {}
        for key, value in overrides.items():
            if key not in fields:
                raise ConfigurationError(
                    f"{self.name} has no setting {key!r}; settings: {', '.join(sorted(fields))}"
                )
            changes[key] = _coerce(key, value, fields[key])
        return dataclasses.replace(base, **changes)

    def config(
        self,
        smoke: bool = False,
        overrides: Mapping[str, Any] | Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """The run's config as a JSON-ready dict (store it as the run folder's config).

        Same arguments as :meth:`config_object`.
        """
        obj = self.config_object(smoke=smoke, overrides=overrides)
        return {f.name: _to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}

    def default_config(self, smoke: bool = False) -> dict[str, Any]:
        """The smoke or full config as a dict, without overrides."""
        return self.config(smoke=smoke)

    def run(
        self,
        run_dir: RunDir,
        config: Mapping[str, Any] | Any,
        progress: Progress | None = None,
        stages: StageStore | None = None,
    ) -> dict[str, Any]:
        """Run the experiment into ``run_dir`` (created by the caller, not finalized here).

        Args:
            run_dir: the run folder, normally created with ``config`` as its config.
            config: a dict from :meth:`config` (or the dataclass itself).
            progress: optional ``progress(description, fraction_done)``.
            stages: where finished parts are saved and, on a second call with the same
                store, loaded from instead of re-run (``hesslab reproduce --resume``; see
                :mod:`hesslab.experiments._stages`); ``None``: nothing is saved.

        Returns:
            The experiment's result dict (headline numbers, e.g. outlier counts).
        """
        if isinstance(config, Mapping):
            known = {f.name for f in dataclasses.fields(self.config_type)}
            unknown = set(config) - known
            if unknown:
                raise ConfigurationError(
                    f"{self.name} has no setting(s) {', '.join(sorted(unknown))}"
                )
            defaults = self.config_type.full()
            config = dataclasses.replace(
                defaults,
                **{k: _coerce(k, v, getattr(defaults, k)) for k, v in config.items()},
            )
        elif not isinstance(config, self.config_type):
            raise ConfigurationError(
                f"config must be a dict or a {self.config_type.__name__}, got "
                f"{type(config).__name__}"
            )
        if stages is None:
            return self.runner(run_dir, config, progress)
        return self.runner(run_dir, config, progress, stages=stages)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description for ``hesslab list``."""
        return {
            "name": self.name,
            "title": self.title,
            "paper": self.paper,
            "arxiv": self.arxiv,
            "description": self.description,
            "smoke_seconds": self.smoke_seconds,
            "full_seconds": self.full_seconds,
        }


_BUILTIN: dict[str, ExperimentSpec] = {
    "sagun2017": ExperimentSpec(
        name="sagun2017",
        title="Bulk and outliers of the Hessian (Sagun et al. 2017)",
        paper=(
            "Sagun, Evci, Guney, Dauphin, Bottou (2017), Empirical Analysis of the Hessian "
            "of Over-Parametrized Neural Networks"
        ),
        arxiv="1706.04454",
        description=(
            "Exact Hessian spectra of small ReLU MLPs trained on Gaussian mixtures with k "
            "classes (and an MLP on digits): a bulk near zero plus about k outliers; width "
            "sweep (bulk grows, outliers stay), data sweep (outliers move), Gauss-Newton vs "
            "Hessian outliers, and the line between small- and large-batch solutions."
        ),
        config_type=sagun2017.Sagun2017Config,
        runner=sagun2017.run,
        smoke_seconds=sagun2017.SMOKE_SECONDS,
        full_seconds=sagun2017.FULL_SECONDS,
    ),
    "sagun2017-simplex": ExperimentSpec(
        name="sagun2017-simplex",
        title="Bulk and outliers of the Hessian, simplex-mixture variation (Sagun et al. 2017)",
        paper=(
            "Sagun, Evci, Guney, Dauphin, Bottou (2017), Empirical Analysis of the Hessian "
            "of Over-Parametrized Neural Networks"
        ),
        arxiv="1706.04454",
        description=(
            "The sagun2017 analyses on a variation of the authors' setup: 10-D Gaussian "
            "mixtures with simplex means, hidden widths (20, 20), a fixed budget of 2,000 "
            "GD steps instead of training to ‖∇L‖ ≤ 1e-4 on 2-D blobs."
        ),
        config_type=sagun2017.Sagun2017SimplexConfig,
        runner=sagun2017.run,
        smoke_seconds=sagun2017.SMOKE_SECONDS,
        full_seconds=sagun2017.SIMPLEX_FULL_SECONDS,
    ),
}

#: Experiments defined in their own module as ``module.<attribute>`` (an ExperimentSpec).
#: They are imported on first access, so a module may import :class:`ExperimentSpec` from
#: here without an import cycle.
_LAZY: dict[str, tuple[str, str]] = {
    "wei2019": ("hesslab.experiments.wei2019", "SPEC"),
    "displacement": ("hesslab.experiments.displacement", "SPEC"),
    "li2019": ("hesslab.experiments.li2019", "SPEC"),
    "sankar2021": ("hesslab.experiments.sankar2021", "SPEC"),
    "dinh2017": ("hesslab.experiments.dinh2017", "SPEC"),
    "sankar2021-reg": ("hesslab.experiments.sankar2021_reg", "SPEC"),
    "wsbound-reg": ("hesslab.experiments.sankar2021_reg", "WSBOUND_SPEC"),
    "cohen2021": ("hesslab.experiments.cohen2021", "SPEC"),
    "zhang2024": ("hesslab.experiments.zhang2024", "SPEC"),
}


class _Registry(Mapping[str, ExperimentSpec]):
    """Read-only ``{name: ExperimentSpec}`` that imports each experiment module on access."""

    def __getitem__(self, name: str) -> ExperimentSpec:
        if name in _BUILTIN:
            return _BUILTIN[name]
        if name not in _LAZY:
            raise KeyError(name)
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)

    def __iter__(self) -> Iterator[str]:
        yield from _BUILTIN
        yield from _LAZY

    def __len__(self) -> int:
        return len(_BUILTIN) + len(_LAZY)


EXPERIMENTS: Mapping[str, ExperimentSpec] = _Registry()
"""Every experiment ``hesslab reproduce`` knows, by name (``hesslab list`` order)."""


def get_experiment(name: str) -> ExperimentSpec:
    """The spec of experiment ``name``; a clear error listing the known names otherwise."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown experiment {name!r}; known: {', '.join(sorted(EXPERIMENTS))}"
        ) from None


def list_experiments() -> list[dict[str, Any]]:
    """One summary dict per experiment (name, title, paper, arXiv id, expected run times)."""
    return [spec.summary() for spec in EXPERIMENTS.values()]
