"""Versioned prompt templates in the paper's format.

The system turn lists one tag per registered tool plus ``<answer>``; a task may add example turns (its
``few_shot``, with each tool's tag filled in); each model turn is optional
thinking then exactly one action; a tool result comes back as a user turn ``QUERY -> RESULT``.
Bump :data:`PROMPT_VERSION` whenever the text changes: it is stored in every trajectory's metadata and
in judgement cache keys, so old and new runs never mix silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from swirl_lightning.core.tools import Tool

PROMPT_VERSION = "swirl-v1"

_SYSTEM = """You answer questions in steps, using tools. In each turn, think briefly, then write exactly one action:
{actions}
After a tool call, its result comes back as "QUERY -> RESULT". Use at most {max_queries} tool calls, never repeat a query, and answer in a few words (for math, just the number)."""  # noqa: E501 - the prompt's text, verbatim

_ANSWER_LINE = "- <answer>...</answer>: your final answer."

def system_prompt(tools: Iterable[Tool], max_queries: int) -> str:
    """The system turn: one line per tool (tag and description) plus the answer line."""
    lines = [f"- <{tool.tag}>...</{tool.tag}>: {tool.name}. {tool.description}".rstrip() for tool in tools]
    return _SYSTEM.format(actions="\n".join(lines + [_ANSWER_LINE]), max_queries=max_queries)


def build_prompt(question: str, tools: Iterable[Tool], max_actions: int,
                 example_turns: Sequence[dict[str, str]] = ()) -> list[dict[str, str]]:
    """Chat messages before the first action: system turn, the task's example turns (few-shot), the question."""
    tools = list(tools)
    messages = [{"role": "system", "content": system_prompt(tools, max_queries=max(1, max_actions - 1))}]
    messages.extend(dict(turn) for turn in example_turns)
    messages.append({"role": "user", "content": question})
    return messages


OBSERVATION_SEPARATOR = " -> "
"""Between the query and the result in the user turn that carries a tool result back (``QUERY -> RESULT``)."""


def observation(query: str, result: str) -> str:
    """The user turn that carries a tool result back to the model."""
    return f"{query}{OBSERVATION_SEPARATOR}{result}"


def observation_result(text: str | None) -> str:
    """The RESULT of a ``QUERY -> RESULT`` turn (the whole text when it has no separator; ``""`` for ``None``)."""
    return (text or "").rpartition(OBSERVATION_SEPARATOR)[2]


def corrective_note(reason: str, tags: Iterable[str]) -> str:
    """The reply to a turn without one valid action.

    It names the tags in words and holds no literal placeholder such as ``<TAG>EXPRESSION</TAG>``:
    small models copy such placeholders verbatim.
    """
    names = ", ".join(sorted(set(tags) | {"answer"}))
    return f"That turn had no valid action ({reason}). Write exactly one action, using one of these tags: {names}."
