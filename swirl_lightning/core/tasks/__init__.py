"""Tasks: where questions come from, how answers are scored, and what gold data judges may use.

A :class:`Task` bundles everything one data set needs: loading its splits, its default tools and action cap, the
outcome judge that scores a final answer, its hand-written example turns for the prompt, and (optionally) gold
reference data for judges: the values a good step may compute, and whole reference trajectories for a warm
start. Adding a task is one file: subclass :class:`Task` and register an instance through the
``register_tasks`` hook, as the built-in ``gsm8k``, ``hotpotqa``, ``jsonl`` and ``worlds`` do (:mod:`.gsm8k`,
:mod:`.hotpotqa`, :mod:`.jsonl`, :mod:`.worlds`, registered by :mod:`.default_plugins`).

Data ships inside the package (``swirl_lightning/data/<task>/``, each with its licence). Loaders report a bad
line as a :class:`~swirl_lightning.core.trajectory.FormatError` naming ``file:line`` and what was expected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any, ClassVar

from swirl_lightning.core.prompts import observation_result
from swirl_lightning.core.safe_load import LoadError, loads_json
from swirl_lightning.core.trajectory import Example, FormatError, Trajectory

try:
    from importlib.resources.abc import Traversable
except ImportError:  # Python 3.10
    from importlib.abc import Traversable

DataPath = str | os.PathLike | Traversable


class Task:
    """A task: questions, outcome scoring, tools, prompt examples and gold data for judges. Subclass it.

    ``few_shot`` turns name tools by ``{tool name}`` where the tag goes (``<{calculator}>3*4</{calculator}>``):
    the tag a tool is called by belongs to its plugin, so the prompt fills it in (:meth:`example_turns`).
    """

    name: ClassVar[str]
    """The name configs use (``task.name``)."""
    splits: ClassVar[tuple[str, ...]] = ("train", "validation")
    """Split names :meth:`load` accepts."""
    max_actions: ClassVar[int] = 5
    """Default most actions per rollout."""
    tools: ClassVar[tuple[str, ...]] = ()
    """Default tool names; empty means every registered tool."""
    outcome_judge: ClassVar[str] = "qa_em"
    """Registered outcome judge that scores a final answer against the gold answer."""
    few_shot: ClassVar[list[dict[str, str]]] = []
    """Hand-written example turns (user, assistant, ...) put before the question when ``task.few_shot`` is on."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "max_steps" in vars(cls):  # the old name would be silently ignored: the task would get the default cap
            raise TypeError(f"{cls.__name__}.max_steps: renamed max_actions (the most actions per rollout)")

    def load(self, split: str, limit: int | None = None, path: DataPath | None = None) -> list[Example]:
        """The examples of ``split`` (at most ``limit``); ``path`` replaces the packaged file."""
        raise NotImplementedError

    def reference_values(self, example: Example) -> Sequence[str] | None:
        """Values a good step may compute (e.g. a worked solution's intermediate results), or ``None`` when the
        task has no such gold data. The ``reference`` judge needs them."""
        return None

    def reference_progress(self, example: Example, result: str) -> frozenset[Any]:
        """The pieces of gold data a tool result reaches (the ``reference`` judge calls a tool step GOOD when it
        reaches one that no earlier result of its state reached). By default the one gold value the result's number
        equals (:meth:`reference_values`); a task whose gold data are not numbers overrides it. Raises
        ``ValueError`` when the task has no gold data."""
        from swirl_lightning.core.answers import matches_reference, parse_number

        values = self.reference_values(example)
        if values is None:
            raise ValueError(f"example {example.id}: task {self.name!r} has no reference values for the reference "
                             "judge (it has no worked solutions); use another step judge")
        value = parse_number(result)
        return frozenset({value}) if value is not None and any(matches_reference(value, v) for v in values) else frozenset()

    def reference_trajectory(self, example: Example, prompt: list[dict[str, str]],
                             tool_tags: Mapping[str, str]) -> Trajectory | None:
        """A gold trajectory for ``example`` (for an ``sft`` warm start), or ``None`` when the task has none.
        ``tool_tags`` maps tool names to the tags they are called by."""
        return None

    def example_turns(self, tool_tags: Mapping[str, str]) -> list[dict[str, str]]:
        """:attr:`few_shot` with each ``{tool name}`` replaced by that tool's tag; turns naming a tool that is not
        in ``tool_tags`` are left out with their whole example."""
        try:
            return [{**turn, "content": turn["content"].format_map(tool_tags)} for turn in self.few_shot]
        except KeyError:
            return []

    def check_split(self, split: str) -> None:
        """A clear error for a split this task does not have."""
        if split not in self.splits:
            raise ValueError(f"split for task {self.name!r}: expected one of {', '.join(self.splits)}, got {split!r}")


# ----------------------------------------------------------------------------------------------------
# The registry

DEFAULT_PLUGIN = "swirl_lightning.core.tasks.default_plugins"
"""The plugin of the built-in tasks, loaded by name (as llm loads its ``default_plugins``): each task module imports
this package, so this package must not import them."""


def available_tasks(pm: Any = None) -> dict[str, Task]:
    """Task name -> task, from every plugin's ``register_tasks`` (the built-ins always included).

    A plugin whose hook raises is skipped with a warning naming its distribution; two registrations of one name
    are an error naming both.
    """
    from swirl_lightning.core.plugins import collect_registrations

    def check(task: Any, name: str | None, owner: str) -> tuple[str, Task]:
        task_name = name or getattr(task, "name", None)
        if not isinstance(task, Task) or not task_name:
            raise ValueError(f"{owner}: register(task) expects a swirl_lightning.core.tasks.Task instance with a name")
        return task_name, task

    return collect_registrations("register_tasks", check, builtin=DEFAULT_PLUGIN, pm=pm)


def get_task(name: str, pm: Any = None) -> Task:
    """The registered task ``name``; a clear error naming the known ones otherwise."""
    tasks = available_tasks(pm)
    if name not in tasks:
        raise ValueError(f"task: expected one of {', '.join(sorted(tasks))}, got {name!r}")
    return tasks[name]


def load_task(name: str, split: str = "train", limit: int | None = None, *, offset: int = 0,
              path: DataPath | None = None) -> list[Example]:
    """Examples ``offset`` to ``offset + limit`` of task ``name``'s ``split``; ``path`` replaces the packaged file."""
    task = get_task(name)
    task.check_split(split)
    examples = task.load(split, None if limit is None else offset + limit, path)
    return examples[offset:]


# ----------------------------------------------------------------------------------------------------
# Reading data files


def data_dir() -> Traversable:
    """The folder of the packaged data sets."""
    return files("swirl_lightning") / "data"


def read_records(path: DataPath, limit: int | None) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Yield (``file:line``, 0-based line index, record) for each non-blank line, up to ``limit`` records.

    Each line is read within the bounds of :func:`~swirl_lightning.core.safe_load.loads_json` (nesting, unique keys,
    finite numbers); a file without a record is an error, as data is expected.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit: expected a non-negative integer or None, got {limit}")
    source = Path(path) if isinstance(path, (str, os.PathLike)) else path
    count = 0
    with source.open("r", encoding="utf-8") as fh:
        for index, line in enumerate(fh):
            if limit is not None and count >= limit:
                return
            if not line.strip():
                continue
            where = f"{source}:{index + 1}"
            try:
                record = loads_json(line)
            except json.JSONDecodeError as err:
                raise FormatError(f"{where}: not valid JSON: {err}") from None
            except LoadError as err:
                raise FormatError(f"{where}: {err}") from None
            if not isinstance(record, dict):
                raise FormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
            count += 1
            yield where, index, record
    if count == 0 and limit != 0:
        raise FormatError(f"{source}: no records: the file is empty; expected one JSON object per line")


def titles_brought(result: str, titles: Sequence[str]) -> frozenset[str]:
    """The titles among ``titles`` whose article a search result holds: paragraphs rendered ``title: text``, apart by
    blank lines (the gold data a search step reaches, for tasks whose gold data are articles)."""
    hits = observation_result(result).split("\n\n")
    return frozenset(title for title in titles if any(hit.startswith(f"{title}: ") for hit in hits))


def text_field(record: dict[str, Any], name: str, where: str, *, numbers: bool = False) -> str:
    """``record[name]`` as a non-empty string (a number too, with ``numbers``), or a FormatError naming it."""
    value = record.get(name)
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        got = "missing" if name not in record else f"got {value!r:.60}"
        raise FormatError(f"{where}: field {name!r}: expected a non-empty string, {got}")
    return value
