"""The multi-step loop with a scripted policy: tools, answers, caps, invalid actions, failing tools."""

import time

import pytest

from swirl_lightning.testing import make_tool, rollout_once


def add(query: str) -> str:
    """Add two integers written as `a+b`."""
    a, b = query.split("+")
    return str(int(a) + int(b))


def broken(query: str) -> str:
    """Always fails."""
    raise RuntimeError("backend down")


def hangs(query: str) -> str:
    """Never returns in time."""
    time.sleep(30)
    return "late"


TOOLS = {
    "add": make_tool(add, tag="math_exp"),
    "broken": make_tool(broken, tag="broken_tool"),
    "hangs": make_tool(hangs, tag="slow_tool"),
}


def test_tool_call_result_becomes_next_user_turn():
    trajectory = rollout_once("2+3?", ["Add them. <math_exp>2+3</math_exp>", "<answer>5</answer>"], TOOLS, gold="5")
    first, second = trajectory.steps
    assert first.action.kind == "tool" and first.action.tool == "add" and first.action.query == "2+3"
    assert first.observation == "2+3 -> 5" and not first.tool_error
    # The second turn saw the tool result as the last user message.
    messages = trajectory.messages(upto_step=1)
    assert messages[-1] == {"role": "user", "content": "2+3 -> 5"}
    assert second.action.kind == "answer" and trajectory.final_answer == "5"
    assert trajectory.metadata["finish_reason"] == "answer"


def test_answer_ends_the_trajectory_at_once():
    trajectory = rollout_once("q", ["<answer>7</answer>", "<math_exp>1+1</math_exp>"], TOOLS)
    assert len(trajectory.steps) == 1
    assert trajectory.steps[0].observation is None
    assert trajectory.final_answer == "7"


def test_max_actions_cuts_off_without_answer():
    trajectory = rollout_once("q", ["<math_exp>1+1</math_exp>"], TOOLS, max_actions=3)
    assert len(trajectory.steps) == 3
    assert trajectory.final_answer is None
    assert trajectory.metadata["finish_reason"] == "max_actions"


def test_invalid_action_gets_corrective_note_and_goes_on():
    trajectory = rollout_once("q", ["I am not sure.", "<math_exp>1+1</math_exp><answer>2</answer>", "<answer>2</answer>"], TOOLS)
    no_action, two_actions, answer = trajectory.steps
    assert no_action.action.kind == "invalid" and no_action.action.reason == "no action"
    assert two_actions.action.kind == "invalid" and "2 actions" in two_actions.action.reason
    # The corrective note names the tags but holds no placeholder tag a small model would copy.
    assert "math_exp" in no_action.observation and "<" not in no_action.observation
    assert answer.action.kind == "answer"


def test_tool_that_raises_becomes_an_error_observation():
    trajectory = rollout_once("q", ["<broken_tool>x</broken_tool>", "<answer>?</answer>"], TOOLS)
    step = trajectory.steps[0]
    assert step.tool_error
    assert step.observation == "x -> Error: RuntimeError: backend down"
    assert trajectory.final_answer == "?"


def test_tool_that_hangs_times_out_and_rollout_goes_on():
    started = time.perf_counter()
    trajectory = rollout_once("q", ["<slow_tool>x</slow_tool>", "<answer>done</answer>"], TOOLS, timeout_s=0.2)
    assert time.perf_counter() - started < 5
    step = trajectory.steps[0]
    assert step.tool_error and "timed out after 0.2 s" in step.observation
    assert trajectory.final_answer == "done"


@pytest.mark.parametrize("text, reason", [("<foo>1</foo>", "unknown tag <foo>"), ("<math_exp>1+", "unclosed tag <math_exp>"),
                                          ("<answer> </answer>", "empty <answer>")])
def test_invalid_reasons_are_recorded(text, reason):
    trajectory = rollout_once("q", [text, "<answer>x</answer>"], TOOLS)
    assert trajectory.steps[0].action.reason == reason
