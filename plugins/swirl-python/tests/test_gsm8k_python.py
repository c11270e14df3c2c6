"""GSM8K with the Python tool: reference trajectories call it, and it reproduces the worked solutions' annotations."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from swirl_lightning.core.tasks import get_task, load_task
from swirl_lightning.core.tasks.gsm8k import verify_reference_steps
from swirl_python import python


def test_reference_trajectories_call_the_python_tool_when_it_replaces_the_calculator() -> None:
    task = get_task("gsm8k")
    (example,) = load_task("gsm8k", "train", 1)
    trajectory = task.reference_trajectory(example, [{"role": "user", "content": example.question}],
                                           {"python": "python"})
    actions = [step.action for step in trajectory.steps]
    assert [action.tool for action in actions[:-1]] == ["python", "python"] and actions[-1].kind == "answer"
    assert trajectory.steps[0].text.endswith("<python>48/2</python>")


def test_the_python_tool_reproduces_the_annotated_results() -> None:
    examples = load_task("gsm8k", "train", 12)
    task = get_task("gsm8k")
    trajectories = [task.reference_trajectory(e, None, {"python": "python"}) for e in examples]
    check = verify_reference_steps(trajectories, python, tool_name="python")
    assert check["steps"] >= 30 and check["rate"] == 1.0, check
    assert Fraction(Decimal(python("48/2"))) == 24
