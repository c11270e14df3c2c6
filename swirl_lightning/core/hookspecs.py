"""The plugin API: hooks a ``swirl_lightning`` plugin may implement.

A plugin is a module (or object) with functions marked ``@swirl_lightning.hookimpl``, made
discoverable through an entry point in the ``swirl_lightning`` group::

    [project.entry-points.swirl_lightning]
    my_tools = "my_package.plugin"

This API is fixed; changing it breaks third-party plugins. A hook may gain an argument (``register_tools`` gained
``options``): an implementation names only the arguments it uses, so older plugins keep working.
"""

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("swirl_lightning")


@hookspec
def register_tools(register: Callable[..., None], options: dict[str, Any]) -> None:
    """Register tools the policy may call.

    Call ``register(fn)`` or ``register(fn, name=..., tag=...)``. ``fn`` takes one ``str`` (the text
    inside the tool's tag) and returns a ``str`` (the result shown to the model). The name defaults
    to ``fn.__name__``, the description to ``fn``'s docstring, and the tag to the name: the model
    calls the tool by writing ``<TAG>input</TAG>``. ``register(fn, warm_up=setup)`` also passes a
    no-argument ``setup`` that the executor calls once, without the call timeout, before the tool's first
    call (load an index or a model there, not inside a timed call). ``register(fn, takes_episode=True)`` makes the
    executor call ``fn(query, episode)`` instead, with the :class:`swirl_lightning.core.tools.Episode` the call
    belongs to (the example's ``example_id``, ``source`` and ``metadata``), or ``None`` for a call outside any
    episode (``swirl tools call`` without ``--episode``); its ``warm_up`` then gets the first call's episode
    (``setup(episode)``), so that it prepares what that call needs.

    ``options`` is this plugin's own mapping of the run's ``tools.plugins`` (``tools.plugins.mcp`` for the plugin
    whose entry point is named ``mcp``; ``{}`` when the run gives none): the same in every process of the run, tool
    workers and ``swirl tools list/call`` included. An implementation may leave the argument out (pluggy passes only
    the arguments it names): that plugin takes no options, and a run that gives it some is refused. Raise
    ``ValueError`` for a bad option, naming its key and what was expected: for a plugin given options, anything its
    hook raises stops the run with that message (a plugin given none is skipped with a warning instead).
    """


@hookspec
def register_judges(register: Callable[..., None]) -> None:
    """Register step or outcome judges.

    Call ``register(factory, name=...)``. ``factory(**options)`` returns an object with every part of
    :class:`swirl_lightning.judging.base.StepJudge` or :class:`swirl_lightning.judging.base.OutcomeJudge`
    (subclass ``StepJudgeBase`` or ``OutcomeJudgeBase`` for the defaults of all but ``judge_id`` and the judging
    method). A factory declares its options as a class attribute ``Options``, a dataclass deriving from
    :class:`swirl_lightning.judging.options.JudgeOptions` (typed fields with attribute docstrings, shown by
    ``swirl judges list``); a config's ``judge.options`` are checked against it before the judge is built. A plain
    factory without one is checked against its signature.
    """


@hookspec
def register_tasks(register: Callable[..., None]) -> None:
    """Register tasks (data sets with their scoring).

    Call ``register(task)`` with an instance of a :class:`swirl_lightning.core.tasks.Task` subclass; configs name
    it by ``task.name``. Adding a task is one such class: loading, default tools and action cap, outcome judge,
    example turns, and optionally gold data for the ``reference`` judge and for warm-start trajectories.
    """


@hookspec
def register_objectives(register: Callable[..., None]) -> None:
    """Register training objectives.

    Call ``register(cls)`` with a subclass of :class:`swirl_lightning.training.objectives.Objective`; configs name it
    by ``cls.name`` (``model.objective``). The objective gets the policy that scores and samples, the step judge and
    the reference policy (:class:`swirl_lightning.training.objectives.ObjectiveParts`), and returns a loss and its
    metrics; the trainer does the backward pass, the optimizer step and the logging. Its hyperparameters are the
    fields of its ``Config`` dataclass, given as ``model.objective_options``.
    """
