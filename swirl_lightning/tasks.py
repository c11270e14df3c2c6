"""Tasks: the packaged data sets (GSM8K, HotPotQA, any JSONL), their per-task defaults, and GSM8K
reference trajectories built from the worked solutions.

Data ships inside the package (``swirl_lightning/data/<task>/``, each with its licence). Every loader
returns :class:`~swirl_lightning.trajectory.Example` records and reports a bad line as a
:class:`~swirl_lightning.trajectory.FormatError` naming ``file:line`` and what was expected.

GSM8K has no validation split here; :func:`gsm8k_split` holds out a fixed, seeded part of train.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from importlib.resources import files
from pathlib import Path
from typing import Any

from swirl_lightning.trajectory import Action, Example, FormatError, Step, Trajectory

try:
    from importlib.resources.abc import Traversable
except ImportError:  # Python 3.10
    from importlib.abc import Traversable

DataPath = str | os.PathLike | Traversable


def data_dir() -> Traversable:
    """The folder of the packaged data sets."""
    return files("swirl_lightning") / "data"


def _records(path: DataPath, limit: int | None) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Yield (``file:line``, 0-based line index, record) for each non-blank line, up to ``limit`` records."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit: expected a non-negative integer or None, got {limit}")
    source = Path(path) if isinstance(path, (str, os.PathLike)) else path
    count = 0
    with source.open("r", encoding="utf-8") as fh:
        for index, line in enumerate(fh):
            if limit is not None and count >= limit:
                return
            if not line.strip():
                continue
            where = f"{source}:{index + 1}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise FormatError(f"{where}: not valid JSON: {err}") from None
            if not isinstance(record, dict):
                raise FormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
            count += 1
            yield where, index, record


def _text_field(record: dict[str, Any], name: str, where: str, *, numbers: bool = False) -> str:
    value = record.get(name)
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        got = "missing" if name not in record else f"got {value!r:.60}"
        raise FormatError(f"{where}: field {name!r}: expected a non-empty string, {got}")
    return value


_NUMBER_RE = re.compile(r"-?(\d+(\.\d*)?|\.\d+)")
_FINAL_ANSWER_RE = re.compile(r"^####[ \t]*(.*?)[ \t]*$", re.MULTILINE)


def normalise_number(text: str) -> str | None:
    """``"1,000"`` -> ``"1000"``: the number with thousands separators removed, or ``None`` if not a number."""
    cleaned = text.strip().replace(",", "")
    return cleaned if _NUMBER_RE.fullmatch(cleaned) else None


# ----------------------------------------------------------------------------------------------------
# Loaders


def load_gsm8k(path: DataPath | None = None, limit: int | None = None) -> list[Example]:
    """GSM8K problems (the packaged train file by default).

    Gold = the number after the final ``#### `` line, commas removed. ``metadata["solution"]`` keeps the
    whole worked answer. Ids are ``gsm8k-<file stem>-<0-based line index>``, e.g. ``gsm8k-train-0``.
    """
    path = data_dir() / "gsm8k" / "train.jsonl" if path is None else path
    stem = Path(str(path)).stem
    examples = []
    for where, index, record in _records(path, limit):
        question = _text_field(record, "question", where)
        solution = _text_field(record, "answer", where)
        finals = _FINAL_ANSWER_RE.findall(solution)
        if not finals:
            raise FormatError(f"{where}: field 'answer': expected a final line '#### <number>', found none")
        gold = normalise_number(finals[-1])
        if gold is None:
            raise FormatError(f"{where}: field 'answer': expected a number after '####', got {finals[-1]!r:.60}")
        examples.append(Example(f"gsm8k-{stem}-{index}", question, gold, "gsm8k", {"solution": solution}))
    return examples


HOTPOTQA_SPLITS = ("train", "dev")


def load_hotpotqa(split: str = "train", path: DataPath | None = None, limit: int | None = None) -> list[Example]:
    """HotPotQA questions in the HF distractor layout (``train`` or ``dev``, 300 each packaged).

    ``metadata`` holds ``supporting_titles`` (in order, de-duplicated), ``supporting_facts``
    (``[title, sentence id]`` pairs), ``type`` and ``level``; the context paragraphs are left out.
    """
    if path is None:
        if split not in HOTPOTQA_SPLITS:
            raise ValueError(f"split: expected one of {', '.join(HOTPOTQA_SPLITS)}, got {split!r}")
        path = data_dir() / "hotpotqa" / f"{split}.jsonl"
    examples = []
    for where, _, record in _records(path, limit):
        facts = record.get("supporting_facts") or {}
        if not isinstance(facts, dict) or len(facts.get("title", [])) != len(facts.get("sent_id", [])):
            raise FormatError(f"{where}: field 'supporting_facts': expected {{'title': [...], 'sent_id': [...]}} of equal length")
        titles = list(facts.get("title", []))
        metadata = {
            "supporting_titles": list(dict.fromkeys(titles)),
            "supporting_facts": [[t, s] for t, s in zip(titles, facts.get("sent_id", []))],
            "type": record.get("type"),
            "level": record.get("level"),
        }
        fields = (_text_field(record, name, where) for name in ("id", "question", "answer"))
        examples.append(Example(*fields, source="hotpotqa", metadata=metadata))
    return examples


def load_examples_jsonl(path: DataPath, limit: int | None = None, source: str = "jsonl") -> list[Example]:
    """User data: one ``{"id"?, "question", "answer"}`` object per line; other fields go to ``metadata``.

    A missing id becomes ``<file stem>-<0-based line index>``; a numeric answer becomes a string.
    Duplicate ids are an error.
    """
    stem = Path(str(path)).stem
    examples, seen = [], {}
    for where, index, record in _records(path, limit):
        example_id = _text_field(record, "id", where, numbers=True) if "id" in record else f"{stem}-{index}"
        if example_id in seen:
            raise FormatError(f"{where}: duplicate id {example_id!r} (first at line {seen[example_id]})")
        seen[example_id] = index + 1
        extras = {k: v for k, v in record.items() if k not in ("id", "question", "answer")}
        question = _text_field(record, "question", where)
        answer = _text_field(record, "answer", where, numbers=True)
        examples.append(Example(example_id, question, answer, source, extras))
    return examples


GSM8K_VALIDATION_SIZE = 500
"""Questions of GSM8K train held out as the ``validation`` split (500 since the learning benchmark needed the power;
the first 200 of the same seeded order were the split before, so those 200 are still in it)."""


def gsm8k_split(examples: list[Example], val_size: int = GSM8K_VALIDATION_SIZE, seed: int = 0) -> tuple[list[Example], list[Example]]:
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


# ----------------------------------------------------------------------------------------------------
# Task registry


@dataclass(frozen=True)
class TaskSpec:
    """A task a config can name by string, with the defaults the rollout uses for it."""

    name: str
    max_steps: int
    """Most model turns per trajectory."""
    tools: tuple[str, ...]
    """Names of the tools the task needs; empty means every registered tool."""
    outcome: str
    """Outcome judge id: ``numeric`` (number match) or ``qa`` (answer-span match)."""
    splits: tuple[str, ...]
    load: Callable[..., list[Example]] = field(repr=False, compare=False)
    """``load(split, limit, path)`` -> examples."""


def _load_gsm8k_task(split: str, limit: int | None, path: DataPath | None) -> list[Example]:
    examples = load_gsm8k(path)
    if split != "full":
        train, validation = gsm8k_split(examples)
        examples = train if split == "train" else validation
    return examples[:limit] if limit is not None else examples


def _load_hotpotqa_task(split: str, limit: int | None, path: DataPath | None) -> list[Example]:
    return load_hotpotqa("dev" if split == "validation" else split, path, limit)


def _load_jsonl_task(split: str, limit: int | None, path: DataPath | None) -> list[Example]:
    if path is None:
        raise ValueError("task 'jsonl': expected path=<file.jsonl> with {id?, question, answer} per line")
    return load_examples_jsonl(path, limit)


TASKS: dict[str, TaskSpec] = {
    # gsm8k: "train" and "validation" are the two parts of gsm8k_split(seed 0, 500 held out).
    "gsm8k": TaskSpec("gsm8k", 10, ("calculator",), "numeric", ("train", "validation", "full"), _load_gsm8k_task),
    # hotpotqa: "validation" is an alias of "dev", so configs can name the same split for every task.
    "hotpotqa": TaskSpec("hotpotqa", 5, ("search",), "qa", ("train", "dev", "validation"), _load_hotpotqa_task),
    # jsonl: the file is the data set; the split name is not used.
    "jsonl": TaskSpec("jsonl", 5, (), "qa", ("train", "validation"), _load_jsonl_task),
}


def load_task(name: str, split: str = "train", limit: int | None = None, *, path: DataPath | None = None) -> list[Example]:
    """Examples of task ``name`` (a key of :data:`TASKS`); ``path`` replaces the packaged file."""
    spec = TASKS.get(name)
    if spec is None:
        raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {name!r}")
    if split not in spec.splits:
        raise ValueError(f"split for task {name!r}: expected one of {', '.join(spec.splits)}, got {split!r}")
    return spec.load(split, limit, path)


# ----------------------------------------------------------------------------------------------------
# GSM8K reference trajectories

# No '<' or '>' inside, so a nested annotation matches its innermost part and leaves stray markers.
_ANNOTATION_RE = re.compile(r"<<([^<>]*)>>")
_STRAY_MARKER_RE = re.compile(r"<<|>>")


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
    tool_tag: str = "math_exp",
    tool_name: str = "calculator",
) -> Trajectory:
    """Turn a GSM8K worked solution into a multi-step trajectory with calculator calls.

    Each ``<<expr=result>>`` annotation becomes one step: the solution text since the previous
    annotation (trimmed) then ``<math_exp>expr</math_exp>``, with the observation ``"expr -> result"``
    (the annotated result). The final ``#### N`` line becomes the answer step: the remaining text then
    ``<answer>N</answer>`` with N the example's gold answer.

    Malformed annotations never raise: one without ``=``, with more than one ``=``, or with an empty
    side is dropped (markup and content) and its text kept in ``metadata["skipped_annotations"]``; stray
    ``<<``/``>>`` markers (unclosed or nested annotations) are removed from the text and recorded there
    too. ``metadata["annotations"]`` counts the calculator steps made.

    The prompt defaults to one user message holding the question.
    """
    solution = example.metadata.get("solution")
    if not isinstance(solution, str):
        raise ValueError(f"example {example.id}: expected metadata['solution'] (the worked GSM8K answer); load with load_gsm8k")
    finals = list(_FINAL_ANSWER_RE.finditer(solution))
    body = solution[: finals[-1].start()] if finals else solution
    steps: list[Step] = []
    skipped: list[str] = []
    pending = ""  # solution text since the last calculator step
    position = 0
    for match in _ANNOTATION_RE.finditer(body):
        pending += _without_markers(body[position : match.start()], skipped)
        position = match.end()
        expr, _, result = (part.strip() for part in match.group(1).partition("="))
        if not expr or not result or "=" in result:
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
        metadata={"source": "gsm8k-reference", "annotations": len(steps) - 1, "skipped_annotations": skipped},
    )


# ----------------------------------------------------------------------------------------------------
# Checking reference steps against a calculator


def _number(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip().replace(",", ""))
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


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
            annotated = (step.observation or "").rpartition(" -> ")[2]
            try:
                calculated = str(calculate(expr))
            except Exception as err:  # a broken tool is one of the causes being measured
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
    expected, value = _number(annotated), _number(calculated)
    if expected is None:
        return "annotation_not_numeric"
    if value is None:
        return "calculator_error"
    if abs(value - expected) <= Decimal("1e-6") * abs(expected) + Decimal("1e-9"):
        return "exact"
    unit = Decimal(1).scaleb(min(expected.as_tuple().exponent, 0))  # the annotation's last digit: 0.01 for 3.33
    try:
        if value.quantize(unit, rounding=ROUND_HALF_UP) == expected:
            return "rounded"
    except InvalidOperation:  # more digits than the decimal context holds: not a rounding question
        pass
    return "annotation_rounded" if abs(value - expected) < unit else "annotation_wrong"
