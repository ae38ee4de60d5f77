"""The spectrum monitor inside the trainers people use: Hugging Face and Lightning.

Both callbacks run a :class:`~hesslab.train.SpectrumMonitor` every ``monitor.every``
optimizer steps on the fixed analysis data the monitor was built with, and hand the
values to the trainer's own loggers (TensorBoard, W&B, CSV, whatever it is configured
with) as well as to the monitor's sinks. They never change the training run: the model
is measured functionally (its parameters, buffers and ``.grad`` are not touched), its
train/eval flag is restored, and the global RNG states (CPU and CUDA) are saved and
restored around each measurement, so a run with the callback ends with bit-identical
weights (``tests/test_integrations.py``).

Under the trainers' DDP, pass a function that builds the monitor with ``distributed=True``
and this rank's shard of the analysis data: the callback calls it when training starts,
once the trainer has set up the process group (Lightning creates it inside ``fit``); every
rank then measures its shard collectively (the numbers are those of the whole analysis
set) and rank 0 logs (``tests/test_integrations_ddp.py``)::

    def monitor():
        rank, world = dist.get_rank(), dist.get_world_size()
        shard = [analysis[i] for i in shard_indices(len(analysis), rank, world)]
        return SpectrumMonitor(shard, "ce", every=100, distributed=True)

    trainer = L.Trainer(accelerator="gpu", devices=8, strategy="ddp",
                        callbacks=[LightningSpectrumCallback(monitor)])

Both packages are optional (``pip install 'hesslab[hf]'`` / ``'hesslab[lightning]'``);
the classes are created when first accessed, with a clear error if the package is
missing::

    from hesslab.integrations import HFSpectrumCallback
    monitor = SpectrumMonitor(analysis_batches, "causal_lm", every=100, k=3)
    trainer = Trainer(model=model, args=args, train_dataset=ds)
    HFSpectrumCallback.attach(trainer, monitor)     # logs through trainer.log
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from hesslab.errors import ConfigurationError

__all__ = [
    "HFSpectrumCallback",  # noqa: F822 (created on first access)
    "LightningSpectrumCallback",  # noqa: F822
    "build_monitor",
    "measure_quietly",
]


@contextlib.contextmanager
def _preserved_rng() -> Iterator[None]:
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP / accelerate wrappers."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def measure_quietly(monitor: Any, model: nn.Module, step: int) -> dict[str, float] | None:
    """``monitor.step(model, step)`` in eval mode, leaving the model's flags and the RNG as
    they were. Returns the values measured (``None`` when ``step`` is not a multiple of
    ``monitor.every``)."""
    if step % monitor.every != 0:
        return None
    model = _unwrap(model)
    flags = {m: m.training for m in model.modules()}
    try:
        with _preserved_rng():
            model.eval()
            return monitor.step(model, step)
    finally:
        for m, flag in flags.items():
            m.training = flag


def build_monitor(monitor: Any) -> Any:
    """``monitor`` itself, or what it returns when it is a function building one."""
    made = monitor
    if not hasattr(made, "every") and callable(made):
        made = made()
    if not (hasattr(made, "every") and hasattr(made, "step")):
        raise ConfigurationError(
            f"expected a SpectrumMonitor or a function returning one, got {type(made).__name__}"
        )
    return made


class _Measuring:
    """What both callbacks share: the monitor (built lazily) and the last step measured."""

    def __init__(self, monitor: Any, prefix: str) -> None:
        self._spec, self.prefix = monitor, prefix
        self._monitor: Any = None if _is_factory(monitor) else build_monitor(monitor)
        self._last: int | None = None

    @property
    def monitor(self) -> Any:
        """The :class:`~hesslab.train.SpectrumMonitor` (built when training starts if a
        function was given)."""
        if self._monitor is None:
            self._monitor = build_monitor(self._spec)
        return self._monitor

    def _measure(self, model: nn.Module, step: int) -> dict[str, float] | None:
        """Measure once per optimizer step (with gradient accumulation several batch ends
        share a ``step``)."""
        if step == self._last:
            return None
        self._last = step
        return measure_quietly(self.monitor, model, step)


def _is_factory(monitor: Any) -> bool:
    return not hasattr(monitor, "every") and callable(monitor)


def _scalars(values: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in values.items()}


def _log_keeping_flow(trainer: Any, control: Any, logs: dict[str, float]) -> None:
    """``trainer.log(logs)`` without cancelling the trainer's own log of this step.

    ``Trainer.log`` clears ``control.should_log``; called from ``on_step_end`` (after the
    flow callback set it) that dropped the step's loss log, and under DDP, where only rank
    0 logs, rank 0 then skipped the loss ``all_gather`` the other ranks ran: a collective
    mismatch that crashed gloo (``tests/test_integrations_ddp.py``).
    """
    should_log = control.should_log
    trainer.log(logs)
    control.should_log = trainer.control.should_log = should_log


def _make_hf() -> type:
    try:
        from transformers import TrainerCallback
    except ImportError as e:  # pragma: no cover - exercised without transformers
        raise ConfigurationError(
            "HFSpectrumCallback needs transformers: pip install 'hesslab[hf]'"
        ) from e

    class HFSpectrumCallback(_Measuring, TrainerCallback):
        """Hugging Face ``TrainerCallback`` running a :class:`SpectrumMonitor`.

        Measures after optimizer step ``state.global_step`` when it is a multiple of
        ``monitor.every``. With the trainer known (:meth:`attach`, or ``trainer=``) the
        values go through ``trainer.log``, so every reporting integration the trainer is
        configured with (TensorBoard, W&B, ...) and ``trainer.state.log_history`` get them
        under ``prefix`` (default ``"hessian/"``); without it, only the log history.

        Args:
            monitor: the :class:`~hesslab.train.SpectrumMonitor` (its data is the fixed
                analysis set), or a function returning one, called at ``on_train_begin``
                (under DDP: build it there with ``distributed=True`` and this rank's shard).
            trainer: the ``Trainer`` (recommended; see :meth:`attach`).
            prefix: prefix of the logged keys.
        """

        def __init__(self, monitor: Any, trainer: Any = None, prefix: str = "hessian/"):
            _Measuring.__init__(self, monitor, prefix)
            self.trainer = trainer

        @classmethod
        def attach(cls, trainer: Any, monitor: Any, prefix: str = "hessian/") -> Any:
            """Create the callback for ``trainer`` and add it (``trainer.add_callback``)."""
            cb = cls(monitor, trainer=trainer, prefix=prefix)
            trainer.add_callback(cb)
            return cb

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any):
            self.monitor  # noqa: B018 (built now, on every rank, after the group exists)
            return control

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw):
            if model is None:
                return control
            step = int(state.global_step)
            values = self._measure(model, step)
            if values and state.is_world_process_zero:
                logs = _scalars(values, self.prefix)
                if self.trainer is not None:
                    _log_keeping_flow(self.trainer, control, logs)
                else:
                    state.log_history.append({**logs, "step": step})
            return control

        def on_train_end(self, args: Any, state: Any, control: Any, **kw):
            self.monitor.close()
            return control

    return HFSpectrumCallback


def _make_lightning() -> type:
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError as e:  # pragma: no cover - exercised without lightning
            raise ConfigurationError(
                "LightningSpectrumCallback needs lightning: pip install 'hesslab[lightning]'"
            ) from e

    class LightningSpectrumCallback(_Measuring, Callback):
        """Lightning ``Callback`` running a :class:`SpectrumMonitor` after optimizer steps.

        Measures right after an optimizer step when ``trainer.global_step`` is a multiple
        of ``monitor.every`` (once per step under gradient accumulation) and logs the
        values to every logger of the trainer (``logger.log_metrics``) on rank 0.

        Args:
            monitor: the :class:`~hesslab.train.SpectrumMonitor`, or a function returning
                one, called in ``setup`` (under DDP: build it there with ``distributed=True``
                and this rank's shard; Lightning creates the process group inside ``fit``).
            prefix: prefix of the logged keys.
        """

        def __init__(self, monitor: Any, prefix: str = "hessian/") -> None:
            _Measuring.__init__(self, monitor, prefix)

        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            if stage == "fit":
                self.monitor  # noqa: B018 (built now, on every rank, after the group exists)

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self._last = int(trainer.global_step)  # measure after optimizer steps only

        def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any, **kw: Any):
            step = int(trainer.global_step)
            values = self._measure(pl_module, step)
            if values and trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.log_metrics(_scalars(values, self.prefix), step=step)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.monitor.close()

    return LightningSpectrumCallback


_MAKERS = {"HFSpectrumCallback": _make_hf, "LightningSpectrumCallback": _make_lightning}
_MADE: dict[str, type] = {}


def __getattr__(name: str) -> type:
    if name in _MAKERS:
        if name not in _MADE:
            _MADE[name] = _MAKERS[name]()
        return _MADE[name]
    raise AttributeError(f"module 'hesslab.integrations' has no attribute {name!r}")
