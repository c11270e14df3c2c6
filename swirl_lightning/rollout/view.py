"""One trajectory as a reader sees it: one structured view, several outputs.

:func:`trajectory_view` turns a :class:`~swirl_lightning.core.trajectory.Trajectory` into a JSON-ready dict: the
question, the gold answer, the outcome, and each step split into its thinking, its action (tool call, answer, or
why it is invalid), the tool's result and the judges' verdicts. Everything that shows a trajectory renders this
view, so they all show the same thing:

- :func:`view_text`: plain text, for ``swirl data show``;
- :func:`view_markdown`: Markdown, for TensorBoard's text tab (live evaluation);
- the Trajectories dashboard of the ``swirl-tensorboard`` plugin serves the view as JSON and draws it as HTML.

:func:`trajectory_summary` is the view without its steps (one row of a list), with the facets a list is filtered
by: ``result`` (correct / wrong / not scored), ``verdict`` (all GOOD / some BAD / not judged), ``tool_errors``,
``invalid_actions`` and ``steps``.
"""

from __future__ import annotations

import re
from typing import Any

from swirl_lightning.core.prompts import OBSERVATION_SEPARATOR
from swirl_lightning.core.trajectory import Step, Trajectory

GOOD, BAD = "GOOD", "BAD"


def question_of(trajectory: Trajectory) -> str:
    """The question: the last user turn of the prompt (earlier user turns are the task's worked examples)."""
    return next((m["content"] for m in reversed(trajectory.prompt) if m["role"] == "user"), "")


def result_of(trajectory: Trajectory) -> str:
    """``correct`` (outcome 1), ``wrong`` (below 1) or ``not scored``."""
    if trajectory.outcome is None:
        return "not scored"
    return "correct" if trajectory.outcome >= 1 else "wrong"


def step_verdict(step: Step) -> str | None:
    """``BAD`` if any judge said BAD, ``GOOD`` if every judge said GOOD, ``None`` when no judge saw the step."""
    verdicts = {j.verdict for j in step.judgements}
    if not verdicts:
        return None
    return BAD if BAD in verdicts else GOOD


def verdict_of(trajectory: Trajectory) -> str:
    """``some BAD`` if a step was judged BAD, ``all GOOD`` if every step was judged GOOD, else ``not judged``."""
    verdicts = [step_verdict(step) for step in trajectory.steps]
    if BAD in verdicts:
        return "some BAD"
    if verdicts and all(v == GOOD for v in verdicts):
        return "all GOOD"
    return "not judged"


def _thinking(step: Step) -> str:
    """The turn's text without its action element (the whole text of an invalid turn)."""
    if step.action.kind == "invalid" or not step.action.tag:
        return step.text.strip()
    tag = re.escape(step.action.tag)
    return re.sub(rf"<{tag}>.*?</{tag}>", "", step.text, count=1, flags=re.DOTALL).strip()


def _result(step: Step) -> str | None:
    """What came back: the tool's result without the ``QUERY -> `` echo, or the note after an invalid turn."""
    if step.observation is None:
        return None
    echo = f"{step.action.query}{OBSERVATION_SEPARATOR}"
    if step.action.kind == "tool" and step.action.query is not None and step.observation.startswith(echo):
        return step.observation[len(echo):]
    return step.observation


def step_view(index: int, step: Step) -> dict[str, Any]:
    """One step: ``index`` (from 1), ``kind``, ``thinking``, the action's fields, ``result`` and ``verdicts``."""
    action = step.action
    return {
        "index": index,
        "kind": action.kind,
        "thinking": _thinking(step),
        "tool": action.tool,
        "tag": action.tag,
        "query": action.query,
        "answer": action.answer,
        "invalid_reason": action.reason if action.kind == "invalid" else None,
        "result": _result(step),
        "tool_error": bool(step.tool_error),
        "verdict": step_verdict(step),
        "verdicts": [{"judge": j.judge, "verdict": j.verdict, "score": j.score} for j in step.judgements],
        "reward": step.reward,
        "text": step.text,
    }


def trajectory_summary(trajectory: Trajectory) -> dict[str, Any]:
    """The view of a trajectory without its steps: what one row of a list shows and is filtered by."""
    tool_steps = [s for s in trajectory.steps if s.action.kind == "tool"]
    return {
        "example_id": trajectory.example_id,
        "sample_index": trajectory.sample_index,
        "question": question_of(trajectory),
        "gold_answer": trajectory.gold_answer,
        "final_answer": trajectory.final_answer,
        "outcome": trajectory.outcome,
        "result": result_of(trajectory),
        "verdict": verdict_of(trajectory),
        "finish_reason": trajectory.metadata.get("finish_reason"),
        "steps": len(trajectory.steps),
        "tool_calls": len(tool_steps),
        "tool_errors": sum(bool(s.tool_error) for s in tool_steps),
        "invalid_actions": sum(s.action.kind == "invalid" for s in trajectory.steps),
    }


def trajectory_view(trajectory: Trajectory) -> dict[str, Any]:
    """The whole view: :func:`trajectory_summary` plus ``step_views`` (one :func:`step_view` per step)."""
    return {**trajectory_summary(trajectory),
            "step_views": [step_view(k, step) for k, step in enumerate(trajectory.steps, start=1)]}


def _verdicts_text(step: dict[str, Any]) -> str:
    # A failed judgement (a served judge that gave no verdict) has no score.
    return ", ".join(f"{v['judge']} {v['verdict']}" + ("" if v["score"] is None else f" {v['score']:.2f}")
                     for v in step["verdicts"]) or "not judged"


def _action_text(step: dict[str, Any]) -> str:
    if step["kind"] == "tool":
        return f"{step['tool']} <{step['tag']}>{step['query']}</{step['tag']}>"
    if step["kind"] == "answer":
        return f"answer {step['answer']!r}"
    return f"invalid: {step['invalid_reason']}"


def _header(view: dict[str, Any]) -> str:
    outcome = "" if view["outcome"] is None else f" ({view['outcome']:g})"
    return (f"{view['example_id']} #{view['sample_index']}: {view['result']}{outcome}, {view['steps']} steps, "
            f"finish {view['finish_reason'] or '?'}, {view['verdict']}")


def view_text(view: dict[str, Any]) -> str:
    """A view as plain text (``swirl data show``)."""
    lines = [f"== {_header(view)}", "question:", _indent(view["question"], "   "),
             f"gold answer: {view['gold_answer'] if view['gold_answer'] is not None else '(not recorded)'}",
             f"final answer: {view['final_answer'] if view['final_answer'] is not None else '(none)'}"]
    for step in view["step_views"]:
        flags = " TOOL ERROR" if step["tool_error"] else ""
        lines.append(f"  {step['index']}. {_action_text(step)}  [{_verdicts_text(step)}]{flags}")
        if step["thinking"]:
            lines.append("     thinking: " + _indent(step["thinking"], "               ").lstrip())
        if step["result"] is not None:
            label = "result" if step["kind"] == "tool" else "note"
            lines.append(f"     {label}: " + _indent(step["result"], "             ").lstrip())
    return "\n".join(lines)


def _quote(text: str) -> str:
    return "\n".join("> " + line if line.strip() else ">" for line in (text or "").splitlines() or [""])


def _code(text: str | None) -> str:
    text = "" if text is None else str(text).replace("\n", " ")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def view_markdown(view: dict[str, Any]) -> str:
    """A view as Markdown (TensorBoard's text tab): the question and every thinking as wrapping block quotes, the
    actions and results inline, each step with its verdicts."""
    gold = _code(view["gold_answer"]) if view["gold_answer"] is not None else "(not recorded)"
    answer = _code(view["final_answer"]) if view["final_answer"] is not None else "(none)"
    lines = [f"**{_header(view)}**", "", _quote(view["question"]), "",
             f"gold answer: {gold} · final answer: {answer}", ""]
    for step in view["step_views"]:
        flags = " · **tool error**" if step["tool_error"] else ""
        lines += [f"**step {step['index']}** ({step['kind']}) · {_verdicts_text(step)}{flags}", ""]
        if step["thinking"]:
            lines += [_quote(step["thinking"]), ""]
        if step["kind"] == "tool":
            lines += [f"call {step['tool']} {_code(step['query'])} → {_code(step['result'])}", ""]
        elif step["kind"] == "answer":
            lines += [f"answer {_code(step['answer'])}", ""]
        else:
            lines += [f"invalid: {step['invalid_reason']}", ""]
    return "\n".join(lines)


def summary_table_markdown(summaries: list[dict[str, Any]]) -> str:
    """Rows of :func:`trajectory_summary` as one Markdown table (every rollout of an evaluation, one line each)."""
    lines = ["| question | sample | result | steps | final answer | gold answer | verdict | tool errors | invalid |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in summaries:
        cells = [row["example_id"], row["sample_index"], row["result"], row["steps"], _code(row["final_answer"]),
                 _code(row["gold_answer"]), row["verdict"], row["tool_errors"], row["invalid_actions"]]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in (text or "").splitlines()) or prefix
