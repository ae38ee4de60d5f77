"""The one rule for randomness: every random choice comes from a ``torch.Generator``.

STYLE rule 2: randomness is an argument. Every public function that draws random numbers
takes ``generator=`` and resolves it with :func:`resolve_generator`, so ``None`` means the
same thing everywhere.
"""

from __future__ import annotations

import torch

from hesslab.errors import ConfigurationError

__all__ = ["resolve_generator"]


def resolve_generator(
    generator: torch.Generator | None = None, *, seed: int | None = None, required: bool = False
) -> torch.Generator:
    """Return the generator a function draws from.

    Args:
        generator: a ``torch.Generator`` (returned as is, its state is advanced by the
            caller's draws), or ``None``.
        seed: with ``generator=None``, the seed of a new CPU generator (for functions whose
            own ``seed=`` argument stands for the generator).
        required: with ``generator=None`` and no ``seed``, raise instead of creating one
            (for functions whose result is meaningless without a reproducible seed).

    Returns:
        ``generator``; else a new CPU generator seeded with ``seed``; else a new CPU
        generator seeded from OS entropy (a fresh ``torch.Generator()`` always starts
        from the same default seed, so unseeded calls would all draw the same numbers).

    Raises:
        ConfigurationError: ``generator`` is not a ``torch.Generator``, or it is ``None``
            with ``required=True`` and no ``seed``.
    """
    if generator is None:
        if seed is not None:
            return torch.Generator().manual_seed(int(seed))
        if required:
            raise ConfigurationError(
                "pass generator=torch.Generator().manual_seed(...) (randomness is an argument)"
            )
        generator = torch.Generator()
        generator.seed()
        return generator
    if not isinstance(generator, torch.Generator):
        raise ConfigurationError(
            f"generator must be a torch.Generator, got {type(generator).__name__}; "
            "create one with torch.Generator().manual_seed(0)"
        )
    return generator
