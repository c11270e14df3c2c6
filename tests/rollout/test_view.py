"""The one view of a trajectory (rollout/view.py) and its text and Markdown renderings."""

from swirl_lightning.core.trajectory import Action, Judgement, Step, Trajectory
from swirl_lightning.rollout.view import (
    summary_table_markdown,
    trajectory_summary,
    trajectory_view,
    view_markdown,
    view_text,
)


def trajectory(outcome: float | None = 0.0) -> Trajectory:
    return Trajectory(
        example_id="q-1", sample_index=2,
        prompt=[{"role": "system", "content": "S"}, {"role": "user", "content": "Example?"},
                {"role": "assistant", "content": "A"}, {"role": "user", "content": "How much is\n3 x 4?"}],
        steps=[
            Step("I multiply. <calc>3*4</calc>", Action("tool", tool="calculator", tag="calc", query="3*4"),
                 observation="3*4 -> 12", judgements=[Judgement("ref", "GOOD", 1.0)]),
            Step("hmm <calc>3/0</calc>", Action("tool", tool="calculator", tag="calc", query="3/0"),
                 observation="3/0 -> error: division by zero", tool_error=True,
                 judgements=[Judgement("ref", "BAD", 0.0), Judgement("lm", "GOOD", 0.7)]),
            Step("no tag here", Action("invalid", reason="no action"), observation="That turn had no valid action."),
            Step("So <answer>13</answer>", Action("answer", tag="answer", answer="13")),
        ],
        final_answer="13", outcome=outcome, gold_answer="12", metadata={"finish_reason": "answer"},
    )


def test_the_view_splits_each_step_into_thinking_action_result_and_verdict():
    view = trajectory_view(trajectory())
    assert view["question"] == "How much is\n3 x 4?"  # the last user turn, not the worked example
    assert (view["gold_answer"], view["final_answer"], view["result"]) == ("12", "13", "wrong")
    assert (view["steps"], view["tool_calls"], view["tool_errors"], view["invalid_actions"]) == (4, 2, 1, 1)
    assert view["verdict"] == "some BAD"  # one judge said BAD on step 2
    first, second, invalid, answer = view["step_views"]
    assert (first["thinking"], first["query"], first["result"], first["verdict"]) == ("I multiply.", "3*4", "12", "GOOD")
    assert second["tool_error"] and second["result"] == "error: division by zero" and second["verdict"] == "BAD"
    assert invalid["thinking"] == "no tag here" and invalid["invalid_reason"] == "no action"
    assert invalid["result"] == "That turn had no valid action."
    assert (answer["thinking"], answer["answer"], answer["verdict"]) == ("So", "13", None)
    assert trajectory_summary(trajectory()) == {k: v for k, v in view.items() if k != "step_views"}


def test_verdict_and_result_facets():
    t = trajectory(outcome=1.0)
    assert trajectory_summary(t)["result"] == "correct"
    t.outcome = None
    assert trajectory_summary(t)["result"] == "not scored"
    for step in t.steps:
        step.judgements = [Judgement("ref", "GOOD", 1.0)]
    assert trajectory_summary(t)["verdict"] == "all GOOD"
    t.steps[0].judgements = []
    assert trajectory_summary(t)["verdict"] == "not judged"


def test_text_and_markdown_render_the_same_view():
    view = trajectory_view(trajectory())
    text, markdown = view_text(view), view_markdown(view)
    for rendered in (text, markdown):
        for part in ("q-1", "How much is", "3 x 4?", "12", "13", "I multiply.", "division by zero", "no action",
                     "ref BAD 0.00, lm GOOD 0.70"):
            assert part in rendered, (part, rendered)
    assert "gold answer: 12" in text and "gold answer: `12`" in markdown
    # Questions and thinking are block quotes (they wrap), never indented code blocks.
    assert "> How much is\n> 3 x 4?" in markdown and "\n    " not in markdown
    table = summary_table_markdown([trajectory_summary(trajectory())])
    assert "| q-1 | 2 | wrong | 4 | `13` | `12` | some BAD | 1 | 1 |" in table
