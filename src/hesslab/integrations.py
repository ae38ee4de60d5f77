"""The spectrum monitor inside the trainers people use: Hugging Face and Lightning.

Both callbacks run a :class:`~hesslab.train.SpectrumMonitor` every ``monitor.every``
optimizer steps on the fixed analysis data the monitor was built with, and hand the
values to the trainer's own loggers (TensorBoard, W&B, CSV, whatever it is configured
with) as well as to the monitor's sinks. They never change the training run: the model
is measured functionally (its parameters, buffers and ``.grad`` are not touched), its
train/eval flag is restored, and the global RNG states (CPU and CUDA) are saved and
restored around each measurement, so a run with the callback ends with bit-identical
weights (``tests/test_integrations.py``). Under the trainers' DDP, build the monitor
with ``distributed=True`` and this rank's shard of the analysis data: every rank
measures collectively, rank 0 logs.

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

__all__ = ["HFSpectrumCallback", "LightningSpectrumCallback", "measure_quietly"]  # noqa: F822 (lazy)


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


def _scalars(values: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in values.items()}


def _make_hf() -> type:
    try:
        from transformers import TrainerCallback
    except ImportError as e:  # pragma: no cover - exercised without transformers
        raise ConfigurationError(
            "HFSpectrumCallback needs transformers: pip install 'hesslab[hf]'"
        ) from e

    class HFSpectrumCallback(TrainerCallback):
        """Hugging Face ``TrainerCallback`` running a :class:`SpectrumMonitor`.

        Measures after optimizer step ``state.global_step`` when it is a multiple of
        ``monitor.every``. With the trainer known (:meth:`attach`, or ``trainer=``) the
        values go through ``trainer.log``, so every reporting integration the trainer is
        configured with (TensorBoard, W&B, ...) and ``trainer.state.log_history`` get them
        under ``prefix`` (default ``"hessian/"``); without it, only the log history.

        Args:
            monitor: the :class:`~hesslab.train.SpectrumMonitor` (its data is the fixed
                analysis set).
            trainer: the ``Trainer`` (recommended; see :meth:`attach`).
            prefix: prefix of the logged keys.
        """

        def __init__(self, monitor: Any, trainer: Any = None, prefix: str = "hessian/"):
            self.monitor, self.trainer, self.prefix = monitor, trainer, prefix

        @classmethod
        def attach(cls, trainer: Any, monitor: Any, prefix: str = "hessian/") -> Any:
            """Create the callback for ``trainer`` and add it (``trainer.add_callback``)."""
            cb = cls(monitor, trainer=trainer, prefix=prefix)
            trainer.add_callback(cb)
            return cb

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw):
            if model is None:
                return control
            step = int(state.global_step)
            values = measure_quietly(self.monitor, model, step)
            if values and state.is_world_process_zero:
                logs = _scalars(values, self.prefix)
                if self.trainer is not None:
                    self.trainer.log(logs)
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

    class LightningSpectrumCallback(Callback):
        """Lightning ``Callback`` running a :class:`SpectrumMonitor` after optimizer steps.

        Measures when ``trainer.global_step`` is a multiple of ``monitor.every`` and logs
        the values to every logger of the trainer (``logger.log_metrics``) on rank 0.

        Args:
            monitor: the :class:`~hesslab.train.SpectrumMonitor`.
            prefix: prefix of the logged keys.
        """

        def __init__(self, monitor: Any, prefix: str = "hessian/") -> None:
            self.monitor, self.prefix = monitor, prefix

        def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any, **kw: Any):
            step = int(trainer.global_step)
            values = measure_quietly(self.monitor, pl_module, step)
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
