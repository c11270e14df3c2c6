"""The built-in tasks' plugin: registers them through the same ``register_tasks`` hook a third party implements.

:func:`~swirl_lightning.core.tasks.available_tasks` loads this module by name, so that the package's ``__init__``
(the :class:`~swirl_lightning.core.tasks.Task` base and the registry) imports no task while each task imports it.
"""

from __future__ import annotations

from collections.abc import Callable

from swirl_lightning import hookimpl
from swirl_lightning.core.tasks.gsm8k import Gsm8kTask
from swirl_lightning.core.tasks.hotpotqa import HotpotQATask
from swirl_lightning.core.tasks.jsonl import JsonlTask
from swirl_lightning.core.tasks.worlds import WorldsTask


@hookimpl
def register_tasks(register: Callable[..., None]) -> None:
    """Register the built-in tasks."""
    for task in (Gsm8kTask(), HotpotQATask(), JsonlTask(), WorldsTask()):
        register(task)
