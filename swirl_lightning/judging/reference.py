"""The ``reference`` step judge: a step is GOOD when it reaches a value of the gold reference.

A departure from the paper for data with worked solutions (GSM8K): a tool step is GOOD when its numeric result
equals a value the task's gold data says a good step computes (:meth:`~swirl_lightning.core.tasks.Task.
reference_values`: for GSM8K the result of any ``<<expr=result>>`` annotation, or the final ``#### N``); an answer
step is GOOD when it equals the gold answer; an invalid step is BAD. A tool step whose value an earlier tool result
of the same state already gave is BAD: it adds nothing (without this rule, RL on this reward learns to repeat a right
calculation: in the 500-question benchmark, 133 of the step-pool arm's 369 GOOD held-out steps repeated an earlier
action, against 16 of 269 for the warm start). The paper's judge is gold-free; this one reads the gold solution,
which makes it cheap and strong on a CPU, where a 135M-parameter judge is no judge.

A freshly sampled action (the ``swirl`` reward: no tool ran during training) has no observation: the judge runs the
call itself, through the same wrapper a rollout uses, with the tool the action names. It needs each state's
example (``needs_example``) and finds the task by the example's ``source``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction

from swirl_lightning.core.answers import matches_reference, parse_number
from swirl_lightning.core.prompts import OBSERVATION_SEPARATOR, observation_result
from swirl_lightning.core.tool_executor import ToolExecutor
from swirl_lightning.core.tools import Tool
from swirl_lightning.core.trajectory import Example, Judgement, State, Step
from swirl_lightning.judging.base import StepJudgeBase
from swirl_lightning.judging.outcome import NumericJudge

REFERENCE_VERSION = "reference-v2"  # v2: a value the state already had is no progress


class ReferenceJudge(StepJudgeBase):
    """Step judge from the task's gold reference values (see the module docstring).

    ``tools`` are the tools a sampled call may name (default: every registered tool, found on first use);
    a call to a tool it does not have scores 0.
    """

    judge_id = "reference"
    prompt_version = REFERENCE_VERSION
    cacheable = False  # a few regexes: cheaper than the cache
    needs_example = True

    def __init__(self, tools: Mapping[str, Tool] | None = None, timeout_s: float = 10.0) -> None:
        self._tools = dict(tools) if tools is not None else None
        self._executor: ToolExecutor | None = None
        self.timeout_s = timeout_s

    def _run(self, tool: str, query: str) -> str | None:
        """The result of a sampled tool call, or ``None`` when it fails or the tool is unknown."""
        if self._executor is None:
            if self._tools is None:
                from swirl_lightning.core.tools import collect_tools

                self._tools = collect_tools()
            self._executor = ToolExecutor(self._tools, timeout_s=self.timeout_s)
        if tool not in self._executor.tools:
            return None
        result = self._executor.run(tool, query)
        return None if result.error is not None else result.output

    @staticmethod
    def _values(example: Example | None) -> Sequence[str]:
        from swirl_lightning.core.tasks import get_task

        if example is None:
            raise ValueError("the reference judge needs each state's example (with its gold data): name the task")
        values = get_task(example.source).reference_values(example)
        if values is None:
            raise ValueError(f"example {example.id}: task {example.source!r} has no reference values for the "
                             "reference judge (it has no worked solutions); use another step judge")
        return values

    def score_step(self, state: State, step: Step) -> float:
        """1.0 or 0.0 for one step: a recorded one (its observation holds the tool result) or a sampled one."""
        action = step.action
        if action.kind == "answer":
            if state.example is None:
                raise ValueError("the reference judge needs each state's example (with the gold answer)")
            return NumericJudge().score(action.answer, state.example.answer)
        if action.kind == "invalid" or step.tool_error:
            return 0.0
        if step.observation is not None:
            result = observation_result(step.observation)
        else:
            result = self._run(action.tool or "", action.query or "")
        value = parse_number(result)
        if value is None or value in earlier_results(state):
            return 0.0
        return float(any(matches_reference(value, r) for r in self._values(state.example)))

    def judge_steps(self, items: Sequence[tuple[State, Step]]) -> list[Judgement]:
        return [self.judgement(self.score_step(state, step)) for state, step in items]


def earlier_results(state: State) -> set[Fraction]:
    """The numeric values of the tool results already in a state: the ``QUERY -> RESULT`` turns after its first
    action (the last ``step_index`` assistant turns; a few-shot prompt's example turns come before them)."""
    if state.step_index == 0:
        return set()
    assistant_turns = [i for i, message in enumerate(state.messages) if message["role"] == "assistant"]
    first_action = assistant_turns[-state.step_index] if len(assistant_turns) >= state.step_index else 0
    values = set()
    for message in state.messages[first_action:]:
        if message["role"] == "user" and OBSERVATION_SEPARATOR in message["content"]:
            value = parse_number(observation_result(message["content"]))
            if value is not None:
                values.add(value)
    return values
