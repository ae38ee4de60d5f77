"""A small model zoo with seeded, device-independent initialisation."""

from hesslab.models import zoo
from hesslab.models.zoo import *  # noqa: F403  (the public names, listed once in zoo.__all__)

__all__: list[str] = []
__all__ += zoo.__all__
