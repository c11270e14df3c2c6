"""The ``reference`` step judge: a step is GOOD when it reaches gold data the state did not have yet.

A departure from the paper for tasks with gold data: a tool step is GOOD when its result reaches a piece of the
task's gold data (:meth:`~swirl_lightning.core.tasks.Task.reference_progress`) that no earlier tool result of the
same state reached: for GSM8K a value of the worked solution (the result of any ``<<expr=result>>`` annotation, or
the final ``#### N``), for generated worlds an article of the question's gold path. An answer step is GOOD when the
task's outcome judge scores it right; an invalid step is BAD. A result that brings nothing new is BAD, so RL on this
reward cannot gain by repeating a right call. The paper's judge is gold-free; this one reads the gold data, which
makes it cheap and strong on a CPU, where a 135M-parameter judge is no judge (benchmarks/README.md, judge agreement).

A freshly sampled action (the ``swirl`` reward: no tool ran during training) has no observation: the judge runs the
call itself, through the same wrapper a rollout uses, with the tool the action names and the state's episode, the
tool built with the run's plugin options (:meth:`ReferenceJudge.configure_tools`). It needs each state's example
(``needs_example``) and finds the task by the example's ``source``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from swirl_lightning.core.config import ToolsConfig
from swirl_lightning.core.prompts import OBSERVATION_SEPARATOR, observation_result
from swirl_lightning.core.tasks import Task, get_task
from swirl_lightning.core.tool_executor import ToolExecutor
from swirl_lightning.core.tools import Episode, Tool
from swirl_lightning.core.trajectory import Example, Judgement, State, Step
from swirl_lightning.judging.base import OutcomeJudge, StepJudgeBase, make_outcome_judge
from swirl_lightning.judging.options import JudgeOptions

REFERENCE_VERSION = "reference-v2"  # v2: a value the state already had is no progress


@dataclass(frozen=True)
class ReferenceOptions(JudgeOptions):
    """Options of the ``reference`` judge (its tools come from the run's ``tools`` group)."""

    timeout_s: float = 10.0
    """Seconds a sampled tool call the judge runs itself may take."""

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"judge.options.timeout_s: expected seconds > 0, got {self.timeout_s}")

    def judge_id(self) -> str:
        return ReferenceJudge.judge_id


class ReferenceJudge(StepJudgeBase):
    """Step judge from the task's gold reference values (see the module docstring).

    ``tools`` are the tools a sampled call may name (default: every registered tool, found on first use);
    a call to a tool it does not have scores 0.
    """

    Options = ReferenceOptions
    judge_id = "reference"
    prompt_version = REFERENCE_VERSION
    cacheable = False  # a few regexes: cheaper than the cache
    needs_example = True

    def __init__(self, tools: Mapping[str, Tool] | None = None, timeout_s: float = 10.0) -> None:
        self._tools = dict(tools) if tools is not None else None
        self._executor: ToolExecutor | None = None
        self.timeout_s = timeout_s
        self.tool_options: dict[str, dict[str, Any]] = {}  # tools.plugins, when the tools are found on first use

    def configure_tools(self, tools: ToolsConfig) -> None:
        """Build the tools a sampled call may name as the run's rollouts build them: with its ``tools.plugins``
        options (``swirl fit`` and ``swirl validate`` call this with the run's ``tools`` group)."""
        self.tool_options = dict(tools.plugins)

    def _run(self, tool: str, query: str, episode: Episode | None = None) -> str | None:
        """The result of a sampled tool call in ``episode`` (what a tool that takes its episode gets), or ``None``
        when it fails or the tool is unknown."""
        if self._executor is None:
            if self._tools is None:
                from swirl_lightning.core.tools import collect_tools

                self._tools = collect_tools(options=self.tool_options)
            self._executor = ToolExecutor(self._tools, ToolsConfig(timeout_s=self.timeout_s))
        if tool not in self._executor.tools:
            return None
        result = self._executor.run(tool, query, episode)
        return None if result.error is not None else result.output

    @staticmethod
    def _task(example: Example | None) -> Task:
        if example is None:
            raise ValueError("the reference judge needs each state's example (with its gold data): name the task")
        return get_task(example.source)

    def score_step(self, state: State, step: Step) -> float:
        """1.0 or 0.0 for one step: a recorded one (its observation holds the tool result) or a sampled one."""
        action, task = step.action, self._task(state.example)
        assert state.example is not None  # _task raised otherwise
        if action.kind == "answer":
            score = _outcome_judge(task.outcome_judge).score(action.answer, state.example.answer)
            return float(score is not None and score >= 1.0)
        if action.kind == "invalid" or step.tool_error:
            return 0.0
        result: str | None
        if step.observation is not None:
            result = observation_result(step.observation)
        else:
            episode = Episode.of(state.example) if state.example is not None else None
            result = self._run(action.tool or "", action.query or "", episode)
        if result is None:
            return 0.0
        return float(bool(task.reference_progress(state.example, result) - earlier_progress(state, task)))

    def judge_steps(self, items: Sequence[tuple[State, Step]]) -> list[Judgement]:
        return [self.judgement(self.score_step(state, step)) for state, step in items]


@functools.cache
def _outcome_judge(name: str) -> OutcomeJudge:
    return make_outcome_judge(name)


def earlier_progress(state: State, task: Task) -> frozenset[Any]:
    """The gold data the tool results already in a state reached: the ``QUERY -> RESULT`` turns after its first
    action (the last ``step_index`` assistant turns; a few-shot prompt's example turns come before them)."""
    if state.step_index == 0:
        return frozenset()
    assistant_turns = [i for i, message in enumerate(state.messages) if message["role"] == "assistant"]
    first_action = assistant_turns[-state.step_index] if len(assistant_turns) >= state.step_index else 0
    reached: set[Any] = set()
    for message in state.messages[first_action:]:
        if message["role"] == "user" and OBSERVATION_SEPARATOR in message["content"]:
            assert state.example is not None  # the reference judge's states carry their example
            reached |= task.reference_progress(state.example, observation_result(message["content"]))
    return frozenset(reached)
