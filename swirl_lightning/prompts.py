"""Versioned prompt templates in the paper's format.

The system turn lists one tag per registered tool plus ``<answer>``; each model turn is optional
thinking then exactly one action; a tool result comes back as a user turn ``QUERY -> RESULT``.
Bump :data:`PROMPT_VERSION` whenever the text changes: it is stored in every trajectory's metadata and
in judgement cache keys, so old and new runs never mix silently.
"""

from __future__ import annotations

from collections.abc import Iterable

from .tools import Tool

PROMPT_VERSION = "swirl-v1"

_SYSTEM = """You answer questions in steps, using tools. In each turn, think briefly, then write exactly one action:
{actions}
After a tool call, its result comes back as "QUERY -> RESULT". Use at most {max_queries} tool calls, never repeat a query, and answer in a few words (for math, just the number)."""

_ANSWER_LINE = "- <answer>...</answer>: your final answer."

# Few-shot examples are written by hand, not drawn from a data set, so they never leak into evaluation.
FEW_SHOT: dict[str, list[dict[str, str]]] = {
    "math_exp": [
        {"role": "user", "content": "A shop sells pens at $3 each. Tom buys 4 pens and pays with a $20 bill. How much change does he get?"},
        {"role": "assistant", "content": "First the cost of the pens. <math_exp>3*4</math_exp>"},
        {"role": "user", "content": "3*4 -> 12"},
        {"role": "assistant", "content": "Now the change from $20. <math_exp>20-12</math_exp>"},
        {"role": "user", "content": "20-12 -> 8"},
        {"role": "assistant", "content": "He gets $8 back. <answer>8</answer>"},
    ],
    "search_query": [
        {"role": "user", "content": "In which country was the composer of the opera Rusalka born?"},
        {"role": "assistant", "content": "I need the composer of Rusalka first. <search_query>Rusalka opera composer</search_query>"},
        {"role": "user", "content": "Rusalka opera composer -> Rusalka (opera): Rusalka is an opera by Antonín Dvořák."},
        {"role": "assistant", "content": "Now where Dvořák was born. <search_query>Antonín Dvořák birthplace</search_query>"},
        {"role": "user", "content": "Antonín Dvořák birthplace -> Antonín Dvořák: Antonín Dvořák was a Czech composer, born in Nelahozeves, Bohemia."},
        {"role": "assistant", "content": "Nelahozeves is in today's Czech Republic. <answer>Czech Republic</answer>"},
    ],
}


def system_prompt(tools: Iterable[Tool], max_queries: int) -> str:
    """The system turn: one line per tool (tag and description) plus the answer line."""
    lines = [f"- <{tool.tag}>...</{tool.tag}>: {tool.name}. {tool.description}".rstrip() for tool in tools]
    return _SYSTEM.format(actions="\n".join(lines + [_ANSWER_LINE]), max_queries=max_queries)


def build_prompt(question: str, tools: Iterable[Tool], max_steps: int, few_shot: bool = True) -> list[dict[str, str]]:
    """Chat messages before the first action: system turn, optional few-shot turns, the question."""
    tools = list(tools)
    messages = [{"role": "system", "content": system_prompt(tools, max_queries=max(1, max_steps - 1))}]
    if few_shot:
        for tool in tools:
            messages.extend(FEW_SHOT.get(tool.tag, []))
    messages.append({"role": "user", "content": question})
    return messages


def observation(query: str, result: str) -> str:
    """The user turn that carries a tool result back to the model."""
    return f"{query} -> {result}"


def corrective_note(reason: str, tags: Iterable[str]) -> str:
    """The reply to a turn without one valid action.

    It names the tags in words and holds no literal placeholder such as ``<math_exp>EXPRESSION</math_exp>``:
    small models copy such placeholders verbatim.
    """
    names = ", ".join(sorted(set(tags) | {"answer"}))
    return f"That turn had no valid action ({reason}). Write exactly one action, using one of these tags: {names}."
