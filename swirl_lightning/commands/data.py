"""``swirl data reference``, ``worlds``, ``show`` and ``stats``: make gold trajectories and worlds, read trajectory
files. The questions are the ``task`` group and the tools the ``tools`` group, as ``swirl generate`` takes them; the
file written is ``--output`` and the file read ``--input``, as in ``swirl filter``."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Literal

from swirl_lightning.core.config import TaskConfig, ToolsConfig, parse_config
from swirl_lightning.core.tasks.worlds.generator import WorldSettings

EXIT_OK, EXIT_USAGE = 0, 2


@dataclass
class DataReferenceConfig:
    """A task's gold reference trajectories (GSM8K: worked solutions as calculator steps + answer)."""

    output: str
    """Where the trajectories go (JSONL)."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """The questions: a task with reference trajectories (``gsm8k``, ``worlds``), its split, slice and data, and the
    prompt's framing (``task.few_shot``), as a rollout on them has it."""
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    """The tools whose tags the trajectories write, and which check GSM8K's calculator steps."""
    overwrite: bool = False
    """Replace an existing output."""


@dataclass
class DataWorldsConfig:
    """Write generated worlds of one split to a folder: questions.jsonl, corpus.jsonl, world.json (task worlds)."""

    output: str
    """The folder to write (``--task.name worlds --task.data_path`` reads it)."""
    split: Literal["train", "validation", "test"] = "validation"
    """The split whose seed range the worlds come from."""
    worlds: int = 50
    """How many worlds."""
    first: int = 0
    """Index of the first world in the split's range."""
    world: WorldSettings = field(default_factory=WorldSettings)
    """The knobs of each world (people, places, questions, hops, ...)."""
    overwrite: bool = False
    """Replace the files of an existing world folder."""

    def __post_init__(self) -> None:
        if self.worlds < 1 or self.first < 0:
            raise ValueError(f"worlds: expected 1 or more from a first index >= 0, got {self.worlds} from {self.first}")


@dataclass
class DataShowConfig:
    """Print trajectories step by step: question, gold answer, each step's thinking, action, result and verdicts."""

    input: str
    """Trajectory JSONL."""
    count: int = 3
    """How many trajectories to print (the first ones)."""


@dataclass
class DataStatsConfig:
    """Summary figures of a trajectory JSONL (accuracy, steps, invalid actions, ...) as JSON."""

    input: str
    """Trajectory JSONL."""
    step_judge: str | None = None
    """Judge id whose verdicts count for the GOOD rate; any judge's when null."""


def reference_main(argv: list[str]) -> int:
    """``swirl data reference``: write a task's reference trajectories with the rollout's prompt; for GSM8K, report
    the calculator check."""
    from swirl_lightning.core import prompts
    from swirl_lightning.core.tasks import get_task, load_task
    from swirl_lightning.core.tasks.gsm8k import verify_reference_steps
    from swirl_lightning.core.trajectory import write_jsonl
    from swirl_lightning.rollout.conversation import RolloutSettings

    config = parse_config(DataReferenceConfig, argv, "swirl data reference", only_own_groups=True)
    if os.path.lexists(config.output) and not config.overwrite:
        raise FileExistsError(f"{config.output} exists: pass --overwrite true to replace it, or choose another "
                              "--output")
    task = get_task(config.task.name)
    settings = RolloutSettings.for_task(config.task, config.tools)
    tags = {tool.name: tool.tag for tool in settings.tools.values()}
    trajectories = []
    for example in load_task(config.task.name, config.task.split, config.task.limit, offset=config.task.offset,
                             path=config.task.data_path):
        trajectory = task.reference_trajectory(example, settings.prompt(example.question), tags)
        if trajectory is None:
            print(f"swirl data reference: task {config.task.name!r} has no reference trajectories", file=sys.stderr)
            return EXIT_USAGE
        trajectory.metadata["prompt_version"] = prompts.PROMPT_VERSION
        trajectories.append(trajectory)
    write_jsonl(config.output, trajectories)
    steps = sum(len(t.steps) for t in trajectories)
    print(f"wrote {len(trajectories)} reference trajectories ({steps} steps) to {config.output}")
    if "calculator" in settings.tools:
        with settings.executor as executor:
            check = verify_reference_steps(trajectories, lambda text: executor.run("calculator", text).output)
        print(f"calculator reproduces {check['reproduced']} of {check['steps']} annotated results "
              f"({100 * check['rate']:.2f}%)")
    return EXIT_OK


def worlds_main(argv: list[str]) -> int:
    """``swirl data worlds``: write generated worlds of one split to a folder that ``--task.name worlds
    --task.data_path`` reads."""
    from swirl_lightning.core.tasks.worlds import CORPUS_FILE, QUESTIONS_FILE, SETTINGS_FILE, write_worlds

    config = parse_config(DataWorldsConfig, argv, "swirl data worlds")
    existing = [name for name in (QUESTIONS_FILE, CORPUS_FILE, SETTINGS_FILE)
                if os.path.lexists(os.path.join(config.output, name))]
    if existing and not config.overwrite:
        raise FileExistsError(f"{config.output} holds {', '.join(existing)}: pass --overwrite true to replace them, or "
                              "choose another --output")
    world = config.world
    settings = WorldSettings(**{**vars(world), "hops": tuple(world.hops)})  # a YAML list arrives as a list
    record = write_worlds(config.output, config.split, config.worlds, settings, first=config.first)
    worlds = f"{record['worlds']} {config.split} world" + ("s" if record["worlds"] != 1 else "")
    print(f"wrote {worlds} (seeds {record['seeds'][0]}..{record['seeds'][1] - 1}): "
          f"{record['questions']} questions, {record['articles']} articles in {config.output}")
    return EXIT_OK


def show_main(argv: list[str]) -> int:
    """``swirl data show FILE``: print trajectories as a reader would want them (the view the TensorBoard dashboard
    draws, as text)."""
    from swirl_lightning.core.trajectory import Trajectory, read_jsonl
    from swirl_lightning.rollout.view import trajectory_view, view_text

    config = parse_config(DataShowConfig, argv, "swirl data show", positional=("input",))
    for i, trajectory in enumerate(read_jsonl(config.input, Trajectory)):
        if i >= config.count:
            break
        print(view_text(trajectory_view(trajectory)) + "\n")
    return EXIT_OK


def stats_main(argv: list[str]) -> int:
    """``swirl data stats FILE``: print :func:`swirl_lightning.rollout.evaluation.summarize` of the file as JSON."""
    from swirl_lightning.core.trajectory import read_trajectories
    from swirl_lightning.rollout.evaluation import summarize

    config = parse_config(DataStatsConfig, argv, "swirl data stats", positional=("input",))
    print(json.dumps(summarize(read_trajectories(config.input), config.step_judge), indent=2, allow_nan=False))
    return EXIT_OK
