"""Live evaluation with a scripted policy: accuracy, steps, tool errors, invalid actions, GOOD rate."""

from swirl_lightning.answers import NumericJudge
from swirl_lightning.evaluation import evaluate
from swirl_lightning.testing import ScriptedPolicy, make_tool
from swirl_lightning.trajectory import Example, Judgement


def calculator(query: str) -> str:
    """Adds `a+b`."""
    a, b = query.split("+")
    return str(int(a) + int(b))


class EveryToolStepIsGood:
    judge_id = "fake"
    prompt_version = "v0"

    def judge_steps(self, items):
        return [Judgement(self.judge_id, "GOOD" if i.step.action.kind == "tool" else "BAD", 1.0) for i in items]


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
    summary, trajectories = evaluate(ScriptedPolicy(script), examples, tools, max_steps=2, outcome=NumericJudge(),
                                     few_shot=False, step_judge=EveryToolStepIsGood())
    assert [t.example_id for t in trajectories] == ["a", "b", "c"]
    assert [t.final_answer for t in trajectories] == ["2", "Error: ValueError: invalid literal for int() with base 10: 'x'", None]
    assert summary["accuracy"] == 1 / 3
    assert summary["steps_mean"] == 2.0  # a: tool + answer; b: tool + answer; c: two invalid turns
    assert summary["tool_calls"] == 2 and summary["tool_error_rate"] == 0.5
    assert summary["invalid_action_rate"] == 2 / 6
    assert summary["step_good_rate"] == 2 / 6
    assert summary["finish_reasons"] == {"answer": 2, "max_steps": 1}
