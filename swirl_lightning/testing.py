"""Fakes for tests, here and in plugin authors' own suites: a scripted policy, tools, a task, a judge, a tiny model,
and :func:`registered` to plug them in for one ``with`` block.

Example: run a tool through a full rollout without any model::

    from swirl_lightning.testing import ScriptedPolicy, rollout_once, make_tool
    tools = {"calculator": make_tool(lambda q: str(eval(q)), name="calculator", tag="math_exp")}
    trajectory = rollout_once("What is 2+3?", ["<math_exp>2+3</math_exp>", "<answer>5</answer>"], tools)
    assert trajectory.steps[0].observation == "2+3 -> 5"
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence

from swirl_lightning.core.tasks import Task
from swirl_lightning.core.tool_executor import ToolExecutor
from swirl_lightning.core.tools import Tool, describe
from swirl_lightning.core.trajectory import Example, Judgement, State, Step, Trajectory
from swirl_lightning.judging.base import StepJudgeBase

Script = Callable[[list[dict[str, str]]], str] | Sequence[str]


class ScriptedPolicy:
    """An engine whose turns come from a script instead of a model.

    ``script`` is either a list of turn texts (the same for every conversation; turns past its end
    repeat the last one) or a function from the conversation's chat messages so far to the next turn.
    It drives conversations one at a time with the same calls a real engine makes, text only.
    """

    def __init__(self, script: Script):
        from swirl_lightning.rollout.engine import GenerationStats

        self.script = script
        self.turns_played = 0
        self.stats = GenerationStats()  # stays at zero: no model, no tokens (what `swirl generate` reports)

    def next_turn(self, messages: list[dict[str, str]], turn: int) -> str:
        self.turns_played += 1
        if callable(self.script):
            return self.script(messages)
        return self.script[min(turn, len(self.script) - 1)]

    def run(self, conversations: Iterable, on_finished: Callable) -> None:
        """Play each conversation to its end, calling ``on_finished`` after each."""
        for conversation in conversations:
            conversation.prompt_ids()
            turn = 0
            while True:
                text = self.next_turn(conversation.messages(), turn)
                turn += 1
                if conversation.on_turn_end([], text, "stop") is None:
                    break
            on_finished(conversation)


def make_tool(fn: Callable[[str], str], name: str | None = None, tag: str | None = None,
              warm_up: Callable[[], object] | None = None) -> Tool:
    """A :class:`Tool` from a function, as if a plugin had registered it (distribution ``None``)."""
    name = name or fn.__name__
    return Tool(name=name, tag=tag or name, description=describe(fn), fn=fn, distribution=None, version="",
                warm_up=warm_up)


def rollout_once(
    question: str,
    script: Script,
    tools: Mapping[str, Tool],
    *,
    max_steps: int = 5,
    gold: str = "",
    timeout_s: float = 5.0,
) -> Trajectory:
    """Roll out one scripted conversation and return its trajectory."""
    from swirl_lightning.rollout.conversation import RolloutConversation, RolloutSettings

    settings = RolloutSettings(tools=tools, executor=ToolExecutor(tools, timeout_s=timeout_s), max_steps=max_steps,
                               policy_name="scripted")
    conversation = RolloutConversation(Example("q0", question, gold, "test"), 0, settings, seed=0)
    ScriptedPolicy(script).run([conversation], lambda c: None)
    return conversation.trajectory


def tiny_model_and_tokenizer(seed: int = 0, **config_overrides):
    """A randomly initialised 2-layer Llama with the SmolLM2 tokenizer and chat template (fp32, eval)."""
    import torch
    from transformers import LlamaForCausalLM

    from swirl_lightning.core.models import load_tokenizer, tiny_llama_config, SMOLLM2_ALIAS

    tokenizer = load_tokenizer(SMOLLM2_ALIAS)
    torch.manual_seed(seed)
    config = tiny_llama_config(len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                               **config_overrides)
    return LlamaForCausalLM(config).eval(), tokenizer


class ListTask(Task):
    """A task whose questions are given as a list: a throwaway task for tests (register it with
    :func:`registered`)."""

    def __init__(self, name: str, examples: Sequence[Example], tools: tuple[str, ...] = (), outcome_judge: str = "qa_em",
                 max_steps: int = 3) -> None:
        self.name, self.examples, self.tools, self.outcome_judge, self.max_steps = (
            name, list(examples), tools, outcome_judge, max_steps)

    def load(self, split: str, limit: int | None = None, path=None) -> list[Example]:
        return self.examples[:limit]


class ConstantJudge(StepJudgeBase):
    """A step judge that gives every valid step the same score (invalid ones 0): a throwaway judge for tests."""

    def __init__(self, score: float = 1.0) -> None:
        self.score, self.judge_id = score, f"constant:{score:g}"

    def judge_steps(self, items: Sequence[tuple[State, Step]]) -> list[Judgement]:
        return [self.judgement(0.0 if step.action.kind == "invalid" else self.score) for _, step in items]


@contextlib.contextmanager
def registered(*, tasks: Sequence[Task] = (), judges: Mapping[str, Callable] = {}, tools: Sequence[Tool] = ()):
    """Register throwaway tasks, judges (name -> factory) and tools as a plugin for the duration of a ``with``
    block, in this process, then unregister them."""
    import swirl_lightning
    from swirl_lightning.core.plugins import get_plugin_manager

    class Plugin:
        @swirl_lightning.hookimpl
        def register_tasks(self, register):
            for task in tasks:
                register(task)

        @swirl_lightning.hookimpl
        def register_judges(self, register):
            for name, factory in judges.items():
                register(factory, name=name)

        @swirl_lightning.hookimpl
        def register_tools(self, register):
            for tool in tools:
                register(tool.fn, name=tool.name, tag=tool.tag, warm_up=tool.warm_up)

    manager, plugin = get_plugin_manager(), Plugin()
    manager.register(plugin, name=f"swirl-testing-{id(plugin)}")
    try:
        yield plugin
    finally:
        manager.unregister(plugin)
