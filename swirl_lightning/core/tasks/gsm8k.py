"""GSM8K (grade-school math, MIT licence): the task, its seeded validation split, and gold data from the worked
solutions: the intermediate values a good calculator step computes, and reference trajectories (each
``<<expr=result>>`` annotation becomes one calculator step) for an ``sft`` warm start.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

from swirl_lightning.core.answers import decimal_places, exact_number, normalise_number, parse_number, round_half_up
from swirl_lightning.core.prompts import observation_result
from swirl_lightning.core.tasks import DataPath, Task, data_dir, read_records, text_field
from swirl_lightning.core.trajectory import Action, Example, FormatError, Step, Trajectory

_FINAL_ANSWER_RE = re.compile(r"^####[ \t]*(.*?)[ \t]*$", re.MULTILINE)
# No '<' or '>' inside, so a nested annotation matches its innermost part and leaves stray markers.
_ANNOTATION_RE = re.compile(r"<<([^<>]*)>>")
_STRAY_MARKER_RE = re.compile(r"<<|>>")

GSM8K_VALIDATION_SIZE = 500
"""Questions of GSM8K train held out as the ``validation`` split (500 since the learning benchmark needed the power;
the first 200 of the same seeded order were the split before, so those 200 are still in it)."""


class Gsm8kTask(Task):
    """GSM8K with the calculator: ``train`` and ``validation`` are the two parts of :func:`gsm8k_split`; ``full``
    is the whole packaged file. The outcome is an exact number match."""

    name = "gsm8k"
    splits = ("train", "validation", "full")
    max_actions = 10
    tools = ("calculator",)
    outcome_judge = "numeric"
    # Written by hand, not drawn from the data set, so it never leaks into evaluation.
    few_shot = [
        {"role": "user",
         "content": "A shop sells pens at $3 each. Tom buys 4 pens and pays with a $20 bill. How much change does he get?"},
        {"role": "assistant", "content": "First the cost of the pens. <{calculator}>3*4</{calculator}>"},
        {"role": "user", "content": "3*4 -> 12"},
        {"role": "assistant", "content": "Now the change from $20. <{calculator}>20-12</{calculator}>"},
        {"role": "user", "content": "20-12 -> 8"},
        {"role": "assistant", "content": "He gets $8 back. <answer>8</answer>"},
    ]

    def load(self, split: str, limit: int | None = None, path: DataPath | None = None) -> list[Example]:
        examples = load_gsm8k(path)
        if split != "full":
            train, validation = gsm8k_split(examples)
            examples = train if split == "train" else validation
        return examples[:limit] if limit is not None else examples

    def reference_values(self, example: Example) -> tuple[str, ...]:
        return reference_values(_solution(example))

    def reference_trajectory(self, example: Example, prompt: list[dict[str, str]],
                             tool_tags: Mapping[str, str]) -> Trajectory:
        # The annotations' expressions are Python expressions too (400 of 400 sampled reproduce in a Python tool), so a
        # run with a tool named python instead of the calculator gets the same steps as calls of that tool.
        tool = next((name for name in ("calculator", "python") if name in tool_tags), None)
        if tool is None:
            raise ValueError("gsm8k reference trajectories call the calculator tool (or a tool named python); neither "
                             "is among the task's tools")
        return gsm8k_reference_trajectory(example, prompt, tool_tag=tool_tags[tool], tool_name=tool)


def load_gsm8k(path: DataPath | None = None, limit: int | None = None) -> list[Example]:
    """GSM8K problems (the packaged train file by default).

    Gold = the number after the final ``#### `` line, commas removed. ``metadata["solution"]`` keeps the
    whole worked answer. Ids are ``gsm8k-<file stem>-<0-based line index>``, e.g. ``gsm8k-train-0``.
    """
    path = data_dir() / "gsm8k" / "train.jsonl" if path is None else path
    stem = Path(str(path)).stem
    examples = []
    for where, index, record in read_records(path, limit):
        question = text_field(record, "question", where)
        solution = text_field(record, "answer", where)
        finals = _FINAL_ANSWER_RE.findall(solution)
        if not finals:
            raise FormatError(f"{where}: field 'answer': expected a final line '#### <number>', found none")
        gold = normalise_number(finals[-1])
        if gold is None:
            raise FormatError(f"{where}: field 'answer': expected a number after '####', got {finals[-1]!r:.60}")
        examples.append(Example(f"gsm8k-{stem}-{index}", question, gold, "gsm8k", {"solution": solution}))
    return examples


def gsm8k_split(examples: list[Example], val_size: int = GSM8K_VALIDATION_SIZE,
                seed: int = 0) -> tuple[list[Example], list[Example]]:
    """Deterministic (train, validation) split.

    The ids are sorted, shuffled with ``random.Random(seed)`` (an integer seed gives the same sequence
    on every platform), and the first ``val_size`` go to validation. Both lists keep the input order.
    The result depends only on the set of ids, so the same file always gives the same split.
    """
    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):
        raise ValueError("examples: ids must be unique to split deterministically")
    if not 0 <= val_size <= len(ids):
        raise ValueError(f"val_size: expected 0..{len(ids)}, got {val_size}")
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    held_out = set(order[:val_size])
    return [e for e in examples if e.id not in held_out], [e for e in examples if e.id in held_out]


def _solution(example: Example | None) -> str:
    solution = example.metadata.get("solution") if example is not None else None
    if not isinstance(solution, str):
        what = example.id if example is not None else "?"
        raise ValueError(f"example {what}: expected metadata['solution'] (the worked GSM8K answer); load with load_gsm8k")
    return solution


def _annotations(body: str) -> Iterator[tuple[re.Match, str, str] | tuple[re.Match, None, None]]:
    """Each ``<<expr=result>>`` of a solution with its expression and result; (match, None, None) for a malformed
    one (no ``=``, more than one, or an empty side)."""
    for match in _ANNOTATION_RE.finditer(body):
        expr, _, result = (part.strip() for part in match.group(1).partition("="))
        if not expr or not result or "=" in result:
            yield match, None, None
        else:
            yield match, expr, result


def reference_values(solution: str) -> tuple[str, ...]:
    """The intermediate values of a GSM8K worked solution: every annotation result and the final answer.

    Numbers in the solution's prose are not used: they are mostly numbers copied from the question, so a step
    that restates one is no progress.
    """
    found = [result for _, _, result in _annotations(solution) if result is not None] + _FINAL_ANSWER_RE.findall(solution)
    return tuple(v for v in found if parse_number(v) is not None)


# ----------------------------------------------------------------------------------------------------
# Reference trajectories


def _without_markers(text: str, skipped: list[str]) -> str:
    """``text`` without leftover ``<<``/``>>`` markers, each recorded in ``skipped``."""
    skipped.extend(_STRAY_MARKER_RE.findall(text))
    return _STRAY_MARKER_RE.sub("", text)


def _turn(thinking: str, tag: str, body: str) -> str:
    action = f"<{tag}>{body}</{tag}>"
    return f"{thinking} {action}" if thinking else action


def gsm8k_reference_trajectory(
    example: Example,
    prompt_messages: list[dict[str, str]] | None = None,
    *,
    tool_tag: str,
    tool_name: str = "calculator",
) -> Trajectory:
    """Turn a GSM8K worked solution into a multi-step trajectory with calculator calls.

    Each ``<<expr=result>>`` annotation becomes one step: the solution text since the previous
    annotation (trimmed) then ``<TAG>expr</TAG>`` (the calculator's tag), with the observation ``"expr -> result"``
    (the annotated result). The final ``#### N`` line becomes the answer step: the remaining text then
    ``<answer>N</answer>`` with N the example's gold answer.

    Malformed annotations never raise: one without ``=``, with more than one ``=``, or with an empty
    side is dropped (markup and content) and its text kept in ``metadata["skipped_annotations"]``; stray
    ``<<``/``>>`` markers (unclosed or nested annotations) are removed from the text and recorded there
    too. ``metadata["annotations"]`` counts the calculator steps made.

    The prompt defaults to one user message holding the question.
    """
    solution = _solution(example)
    finals = list(_FINAL_ANSWER_RE.finditer(solution))
    body = solution[: finals[-1].start()] if finals else solution
    steps: list[Step] = []
    skipped: list[str] = []
    pending = ""  # solution text since the last calculator step
    position = 0
    for match, expr, result in _annotations(body):
        pending += _without_markers(body[position : match.start()], skipped)
        position = match.end()
        if expr is None:
            skipped.append(match.group(0))
            continue
        action = Action(kind="tool", tool=tool_name, tag=tool_tag, query=expr)
        text = _turn(pending.strip(), tool_tag, expr)
        steps.append(Step(text=text, action=action, observation=f"{expr} -> {result}"))
        pending = ""
    pending += _without_markers(body[position:], skipped)
    answer = Action(kind="answer", tag="answer", answer=example.answer)
    steps.append(Step(text=_turn(pending.strip(), "answer", example.answer), action=answer))
    prompt = [dict(m) for m in prompt_messages] if prompt_messages else [{"role": "user", "content": example.question}]
    return Trajectory(
        example_id=example.id,
        sample_index=0,
        prompt=prompt,
        steps=steps,
        final_answer=example.answer,
        outcome=1.0,
        gold_answer=example.answer,
        metadata={"source": "gsm8k-reference", "annotations": len(steps) - 1, "skipped_annotations": skipped},
    )


# ----------------------------------------------------------------------------------------------------
# Checking reference steps against a calculator


def verify_reference_steps(
    trajectories: Iterable[Trajectory], calculate: Callable[[str], str], tool_name: str = "calculator"
) -> dict[str, Any]:
    """Re-run every ``tool_name`` step through ``calculate`` and compare with the annotated result.

    A step is *reproduced* when the values agree within relative 1e-6 (``exact``), or when the
    calculator's value rounded to the annotated result's own decimal places equals it (``rounded``;
    e.g. ``10/3=3.33``, ``100/3=33``). Failures are grouped by cause:

    - ``annotation_not_numeric``: the annotated result is not a number;
    - ``calculator_error``: ``calculate`` raised or returned no number;
    - ``annotation_rounded``: within one unit of the annotation's last digit (truncated or mis-rounded);
    - ``annotation_wrong``: any other disagreement.

    Returns ``steps``, ``reproduced``, ``reproduced_exact``, ``reproduced_rounded``, ``rate``,
    ``failure_counts`` and ``failures`` (cause -> list of ``{example_id, step_index, expr, annotated,
    calculated}``).
    """
    counts = {"trajectories": 0, "steps": 0, "reproduced_exact": 0, "reproduced_rounded": 0}
    failures: dict[str, list[dict[str, Any]]] = {}
    for trajectory in trajectories:
        counts["trajectories"] += 1
        for index, step in enumerate(trajectory.steps):
            if step.action.kind != "tool" or step.action.tool != tool_name or step.action.query is None:
                continue
            counts["steps"] += 1
            expr = step.action.query
            annotated = observation_result(step.observation)
            try:
                calculated = str(calculate(expr))
            except Exception as err:  # noqa: BLE001 - a broken tool is one of the causes being measured
                calculated = f"{type(err).__name__}: {err}"
            cause = _compare(annotated, calculated)
            if cause in ("exact", "rounded"):
                counts[f"reproduced_{cause}"] += 1
                continue
            failure = {"example_id": trajectory.example_id, "step_index": index, "expr": expr,
                       "annotated": annotated, "calculated": calculated}
            failures.setdefault(cause, []).append(failure)
    reproduced = counts["reproduced_exact"] + counts["reproduced_rounded"]
    return {
        **counts,
        "reproduced": reproduced,
        "rate": reproduced / counts["steps"] if counts["steps"] else 1.0,
        "failure_counts": {cause: len(items) for cause, items in sorted(failures.items())},
        "failures": failures,
    }


def _compare(annotated: str, calculated: str) -> str:
    expected, value = exact_number(annotated), exact_number(calculated)
    if expected is None:
        return "annotation_not_numeric"
    if value is None:
        return "calculator_error"
    if abs(value - expected) <= Fraction(1, 10**6) * abs(expected) + Fraction(1, 10**9):
        return "exact"
    places = decimal_places(annotated)  # the annotation's last digit: 0.01 for 3.33, 1 for 33
    if round_half_up(value, places) == expected:
        return "rounded"
    return "annotation_rounded" if abs(value - expected) < Fraction(1, 10**places) else "annotation_wrong"
