"""One experiment skeleton: an :class:`Experiment` description and the one runner behind it.

A paper module holds its config, its parts and its claims, and ends with::

    def _parts(cfg: MyConfig) -> list[Part]:
        return [Part("part1", _part1), Part("part2", _part2)]   # each fn(ctx) -> value

    def _summary(ctx: Context) -> dict:                        # after every part
        return {"claims": ..., "seconds": ctx.elapsed()}

    SPEC = Experiment(name="paper2020", ..., config_type=MyConfig, parts=_parts,
                      summary=_summary, steps=lambda cfg: 2 * len(cfg.seeds))
    run = SPEC.run

:meth:`Experiment.run` is the runner: it turns a config dict (as in ``config.json``) or
dataclass into the config, checks it, sets up the progress count, runs the parts in order
through :class:`~hesslab.stages.Parts` (so that with a
:class:`~hesslab.stages.StageStore` every finished part is saved and, on resume, loaded
instead of re-run), times them, calls the summary and flushes the run folder. It never
finalizes the run folder (the caller does).

Claims go through :meth:`Context.claim` (which calls :mod:`hesslab.experiments._claims`):
one schema keyed by ``(section, claim)``, so two claims of one section are two records, and
the same ``(section, claim)`` twice is an error instead of a silent overwrite.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from hesslab.errors import ConfigurationError
from hesslab.experiments import _claims
from hesslab.report.progress import StepProgress
from hesslab.stages import Parts

if TYPE_CHECKING:
    from hesslab.report.run import RunDir
    from hesslab.stages import StageStore

__all__ = ["Context", "Experiment", "Part", "Progress", "parse_value"]

#: ``progress(description, fraction_done)``, ``fraction_done`` in ``[0, 1]``.
Progress = Callable[[str, float], None]


def parse_value(text: str) -> Any:
    """A command-line value (``--set``, ``--model-option``) parsed.

    JSON (``[1, 2]``, ``0.5``, ``true``, ``null``), a Python literal (``(16, 16)``,
    ``None``), or else the string itself.
    """
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _coerce_scalar(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigurationError(f"{name} must be true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, bool) or not float(value).is_integer():
            raise ConfigurationError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number, got {value!r}")
    return float(value)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """``value`` converted to the type of the field's ``default`` (lists become tuples)."""
    if isinstance(value, str) and not isinstance(default, str):
        value = parse_value(value)
    if value is None:
        return None
    if isinstance(default, (bool, int, float)):
        return _coerce_scalar(name, value, default)
    if isinstance(default, tuple):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = (value,)
        if not isinstance(value, (list, tuple)):
            raise ConfigurationError(f"{name} must be a list, got {value!r}")
        if name == "seeds" and not value:
            raise ConfigurationError("seeds must list at least one seed, e.g. seeds=[0]")
    return _freeze(value)


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    return value


def _pairs(overrides: Sequence[str]) -> dict[str, str]:
    pairs = {}
    for item in overrides:
        key, sep, val = str(item).partition("=")
        if not sep:
            raise ConfigurationError(f"override {item!r} must look like field=value")
        pairs[key.strip()] = val.strip()
    return pairs


@dataclass(frozen=True)
class Part:
    """One named, resumable part of an experiment.

    Attributes:
        name: the part's stage name, unique within the run (letters, digits, ``_.-``).
        fn: ``fn(ctx) -> value``: runs the part, writing into ``ctx.run_dir``; the value
            (models and tensors included) is saved with the part and later parts read it
            as ``ctx.results[name]``.
    """

    name: str
    fn: Callable[[Context], Any]


@dataclass
class Context:
    """What the parts and the summary of one run see.

    Attributes:
        cfg: the config dataclass.
        run_dir: the run folder.
        tick: the progress count (``tick(desc, amount=1)``); counts nothing without
            ``Experiment.steps``.
        results: ``{part name: value}`` of the parts finished so far.
        seconds: ``{part name: wall time}`` (for a part loaded on resume: when it ran).
        started: ``time.perf_counter()`` when the runner started.
    """

    cfg: Any
    run_dir: RunDir
    tick: StepProgress
    results: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        """Seconds since the runner started (this process only)."""
        return time.perf_counter() - self.started

    def record_part_seconds(self, section: str = "Timing") -> dict[str, float]:
        """Write each part's wall time as a scalar ``"<part> seconds"`` of ``section``.

        Returns:
            A copy of :attr:`seconds`.
        """
        for name, s in self.seconds.items():
            self.run_dir.add_scalar(section, f"{name} seconds", s, unit="s")
        return dict(self.seconds)

    def claim(
        self,
        section: str,
        claim: str,
        measured: Any,
        verdict: _claims.Verdict | bool | None,
    ) -> bool | None:
        """Record ``claim`` of ``section`` with its verdict (see :func:`_claims.record`).

        Returns:
            The verdict's ``holds``.
        """
        return _claims.record(self.run_dir, section, claim, measured, verdict)

    @property
    def claims(self) -> dict[str, dict[str, bool | None]]:
        """``{section: {claim: holds}}`` of every claim of the run so far."""
        return _claims.claims_by_key(self.run_dir)


def _no_parts(cfg: Any) -> list[Part]:
    return []


def _no_summary(ctx: Context) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Experiment:
    """One reproducible experiment: what it is, its config, its parts and its summary.

    Attributes:
        name: registry key and run-folder name, e.g. ``"sagun2017"``.
        title: heading of the report.
        paper: the citation (authors, year, title).
        arxiv: the arXiv identifier, e.g. ``"1706.04454"``.
        description: one paragraph: what is reproduced, on what data.
        config_type: frozen dataclass of every knob, with ``smoke()`` and ``full()``
            class methods returning instances.
        smoke_seconds: expected wall time of the smoke size on 2 CPU cores (measured).
        full_seconds: expected wall time of the full size on 2 CPU cores.
        parts: ``parts(cfg) -> [Part, ...]``, the ordered parts of a run.
        summary: ``summary(ctx) -> dict``: after the parts, writes the run-level records
            (setup text, overall claims, timing) and returns the result dict.
        steps: ``steps(cfg) -> int``, the progress count's total (``None``: no count).
        setup: ``setup(ctx)``, before the parts (e.g. the setup text); not resumable, so
            it should only write records (it runs again on resume, before the restored
            parts replace the records).
        check: ``check(cfg)`` raises :class:`~hesslab.errors.ConfigurationError` on a
            config that cannot run, before anything is written.
    """

    name: str
    title: str
    paper: str
    arxiv: str
    description: str
    config_type: type
    smoke_seconds: float
    full_seconds: float
    parts: Callable[[Any], Sequence[Part]] = _no_parts
    summary: Callable[[Context], dict[str, Any]] = _no_summary
    steps: Callable[[Any], float] | None = None
    setup: Callable[[Context], None] | None = None
    check: Callable[[Any], None] | None = None

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
            overrides = _pairs(overrides)
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

    def resolve(self, config: Mapping[str, Any] | Any | None) -> Any:
        """The config dataclass from a dict (as in ``config.json``), an instance or ``None``.

        ``None`` gives the smoke size.

        Raises:
            ConfigurationError: unknown settings, or neither a dict nor the config type.
        """
        if config is None:
            return self.config_type.smoke()
        if isinstance(config, Mapping):
            known = {f.name for f in dataclasses.fields(self.config_type)}
            unknown = set(config) - known
            if unknown:
                raise ConfigurationError(
                    f"{self.name} has no setting(s) {', '.join(sorted(unknown))}"
                )
            defaults = self.config_type.full()
            return dataclasses.replace(
                defaults,
                **{k: _coerce(k, v, getattr(defaults, k)) for k, v in config.items()},
            )
        if not isinstance(config, self.config_type):
            raise ConfigurationError(
                f"config must be a dict or a {self.config_type.__name__}, got "
                f"{type(config).__name__}"
            )
        return config

    def run(
        self,
        run_dir: RunDir,
        config: Mapping[str, Any] | Any | None = None,
        progress: Progress | None = None,
        stages: StageStore | None = None,
    ) -> dict[str, Any]:
        """Run the experiment into ``run_dir`` (created by the caller, not finalized here).

        Args:
            run_dir: the run folder, normally created with ``config`` as its config.
            config: a dict from :meth:`config`, the dataclass itself, or ``None`` (the
                smoke size).
            progress: optional ``progress(description, fraction_done)``.
            stages: where finished parts are saved and, on a second call with the same
                store, loaded from instead of re-run (``hesslab reproduce --resume``; see
                :mod:`hesslab.stages`); ``None``: nothing is saved.

        Returns:
            The experiment's result dict (headline numbers, e.g. outlier counts).
        """
        cfg = self.resolve(config)
        if self.check is not None:
            self.check(cfg)
        logger = logging.getLogger(getattr(self.summary, "__module__", None) or __name__)
        total = self.steps(cfg) if self.steps is not None else 1.0
        tick = StepProgress(progress if self.steps is not None else None, total, logger=logger)
        ctx = Context(cfg, run_dir, tick)
        part = Parts(run_dir, stages, tick if self.steps is not None else None)
        if self.setup is not None:
            self.setup(ctx)
        for p in self.parts(cfg):
            ctx.results[p.name] = part(p.name, lambda p=p: p.fn(ctx))
            ctx.seconds[p.name] = part.seconds[p.name]
            run_dir.flush()
        result = self.summary(ctx)
        run_dir.flush()
        return result

    def summary_dict(self) -> dict[str, Any]:
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


#: The dtypes an experiment config's ``dtype`` field may name.
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def config_dtype(cfg: Any) -> torch.dtype:
    """The torch dtype named by ``cfg.dtype`` (``"float64"`` or ``"float32"``).

    Raises:
        ConfigurationError: for any other name.
    """
    try:
        return DTYPES[cfg.dtype]
    except KeyError:
        raise ConfigurationError(
            f"dtype must be 'float64' or 'float32', got {cfg.dtype!r}"
        ) from None
