"""Training: a small trainer (later: monitors, noise-injecting optimizers, regularizers)."""

from hesslab.train.fit import Callback, FitResult, evaluate, fit, resolve_loss

__all__ = ["Callback", "FitResult", "evaluate", "fit", "resolve_loss"]
