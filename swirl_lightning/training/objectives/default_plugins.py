"""The built-in objectives' plugin: registers them through the same ``register_objectives`` hook a third party
implements.

:func:`~swirl_lightning.training.objectives.base.available_objectives` loads this module by name, so that the registry
imports no objective while each objective imports the registry's module.
"""

from __future__ import annotations

from collections.abc import Callable

from swirl_lightning import hookimpl
from swirl_lightning.training.objectives.rows import OfflineObjective, SftObjective
from swirl_lightning.training.objectives.swirl import SwirlObjective


@hookimpl
def register_objectives(register: Callable[..., None]) -> None:
    """Register the built-in objectives."""
    register(SftObjective)
    register(OfflineObjective)
    register(SwirlObjective)
