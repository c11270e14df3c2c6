"""Live evaluation with a scripted policy: accuracy, steps, tool errors, invalid actions, GOOD rate."""

from swirl_lightning.core.tool_executor import ToolExecutor
from swirl_lightning.core.trajectory import Example
from swirl_lightning.judging.base import StepJudgeBase
from swirl_lightning.judging.outcome import NumericJudge
from swirl_lightning.rollout.conversation import RolloutSettings
from swirl_lightning.rollout.evaluation import evaluate
from swirl_lightning.testing import ScriptedPolicy, make_tool


def calculator(query: str) -> str:
    """Adds `a+b`."""
    a, b = query.split("+")
    return str(int(a) + int(b))


class EveryToolStepIsGood(StepJudgeBase):
    judge_id = "fake"

    def judge_steps(self, items):
        return [self.judgement(float(step.action.kind == "tool")) for _, step in items]


def script(messages):
    question, first_turn = messages[1]["content"], len(messages) == 2  # [system, question, ...]
    if question == "3+3?":
        return "no idea"  # invalid, every turn
    if first_turn:
        return "<math_exp>1+1</math_exp>" if question == "1+1?" else "<math_exp>2+x</math_exp>"  # the second fails
    return "<answer>" + messages[-1]["content"].rpartition(" -> ")[2] + "</answer>"


def test_evaluate_summarises_live_rollouts():
    tools = {"calculator": make_tool(calculator, tag="math_exp")}
    examples = [Example("a", "1+1?", "2", "t"), Example("b", "2+2?", "4", "t"), Example("c", "3+3?", "6", "t")]
    settings = RolloutSettings(tools=tools, executor=ToolExecutor(tools), max_actions=2, outcome=NumericJudge().score)
    summary, trajectories = evaluate(ScriptedPolicy(script), examples, settings, step_judge=EveryToolStepIsGood())
    assert [t.example_id for t in trajectories] == ["a", "b", "c"]
    assert [t.final_answer for t in trajectories] == ["2", "Error: ValueError: invalid literal for int() with base 10: 'x'", None]
    assert summary["accuracy"] == 1 / 3
    assert summary["steps_mean"] == 2.0  # a: tool + answer; b: tool + answer; c: two invalid turns
    assert summary["tool_calls"] == 2 and summary["tool_error_rate"] == 0.5
    assert summary["invalid_action_rate"] == 2 / 6
    assert summary["step_good_rate"] == 2 / 6
    assert summary["finish_reasons"] == {"answer": 2, "max_actions": 1}
