"""The multi-step loop: generate a turn -> parse its action -> run the tool -> append the result, until
an answer or the action cap.

:class:`RolloutConversation` is one (example, sample) pair driven by a generation engine
(:class:`swirl_lightning.rollout.engine.GenerationEngine`, or :class:`swirl_lightning.testing.ScriptedPolicy`
in tests). Token ids go in and come out unchanged: the prompt is rendered once with the chat template,
each turn's sampled ids are stored, and each tool result is rendered to ids once and appended, so the
stored trajectory is exactly the token sequence the policy saw.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from swirl_lightning.core import prompts
from swirl_lightning.core.config import TaskConfig, ToolsConfig
from swirl_lightning.core.tool_executor import ToolExecutor
from swirl_lightning.core.tools import Episode, Tool, tool_tags
from swirl_lightning.core.trajectory import Example, Step, Trajectory, parse_action
from swirl_lightning.rollout.inflight import InFlightToolCalls


class ChatRenderer:
    """Renders prompts and tool-result turns to token ids with a tokenizer's chat template."""

    _A, _U = "\x00ASSISTANT\x00", "\x00USER\x00"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": self._A}, {"role": "user", "content": self._U}],
            tokenize=False,
            add_generation_prompt=True,
        )
        after_action = text[text.index(self._A) + len(self._A) :]
        self._before, self._after = after_action.split(self._U)
        self._eos_text = tokenizer.eos_token or ""

    def prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Ids of the prompt messages followed by the first assistant header."""
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def observation_ids(self, content: str, turn_ended_with_eos: bool) -> list[int]:
        """Ids that close the model's turn, carry ``content`` as a user turn, and open the next assistant turn."""
        before = self._before
        if turn_ended_with_eos and self._eos_text and before.startswith(self._eos_text):
            before = before[len(self._eos_text) :]  # the model already sampled the end-of-turn token
        return self.tokenizer.encode(before + content + self._after, add_special_tokens=False)


@dataclass
class RolloutSettings:
    """What every conversation of a rollout shares: the tools, the action cap, the prompt framing, the scoring."""

    tools: Mapping[str, Tool]
    """Tools by name."""
    executor: ToolExecutor
    max_actions: int
    renderer: ChatRenderer | None = None
    """``None`` for scripted policies that work on text only (no token ids are recorded)."""
    example_turns: Sequence[dict[str, str]] = ()
    """The task's example turns (few-shot), put before the question."""
    policy_name: str = ""
    outcome: Callable[[str | None, str], float | None] | None = None
    """Scores a final answer against the gold answer (1.0 right, 0.0 wrong)."""
    in_flight: InFlightToolCalls | None = None
    """Where each tool call is marked while it runs (``swirl generate``: a rollout that kills the run is not retried)."""

    @classmethod
    def for_task(cls, task: TaskConfig, tools: ToolsConfig, *, renderer: ChatRenderer | None = None,
                 policy_name: str = "") -> RolloutSettings:
        """The settings of rollouts on ``task`` with ``tools``: the task's default tools, action cap, example turns
        and outcome judge unless the configs say otherwise; each tool plugin gets its ``tools.plugins`` options."""
        from swirl_lightning.core.tasks import get_task
        from swirl_lightning.core.tools import collect_tools, select_tools
        from swirl_lightning.judging.base import make_outcome_judge

        spec = get_task(task.name)
        # Each plugin gets its options from the run's config; the worker process forked for the calls holds the tools
        # built with them, and a `--processes N` worker or a torchrun rank builds its own from the same config.
        registered = collect_tools(options=tools.plugins)
        selected = select_tools(registered, tools.names if tools.names is not None else (list(spec.tools) or None))
        turns = spec.example_turns({tool.name: tool.tag for tool in selected.values()}) if task.few_shot else []
        executor = ToolExecutor(selected, tools)
        return cls(tools=selected, executor=executor,
                   max_actions=task.max_actions or spec.max_actions, renderer=renderer, example_turns=turns,
                   policy_name=policy_name, outcome=make_outcome_judge(spec.outcome_judge).score)

    @property
    def stop_strings(self) -> list[str]:
        """Where a model turn ends: the closing tag of any tool, or of the answer."""
        return [f"</{tool.tag}>" for tool in self.tools.values()] + ["</answer>"]

    def prompt(self, question: str) -> list[dict[str, str]]:
        """The chat messages before the first action."""
        return prompts.build_prompt(question, self.tools.values(), self.max_actions, self.example_turns)


class RolloutConversation:
    """One sampled multi-step answer to one example, driven turn by turn by an engine."""

    def __init__(self, example: Example, sample_index: int, settings: RolloutSettings, seed: int):
        self.example = example
        self.settings = settings
        self.seed = seed
        self._tags = tool_tags(settings.tools)
        self._started = time.time()
        self.trajectory = Trajectory(
            example_id=example.id,
            sample_index=sample_index,
            prompt=settings.prompt(example.question),
            gold_answer=example.answer,
            metadata={
                "policy": settings.policy_name,
                "prompt_version": prompts.PROMPT_VERSION,
                "max_actions": settings.max_actions,
                "seed": seed,
                "source": example.source,
            },
        )

    def prompt_ids(self) -> list[int]:
        if self.settings.renderer is None:
            return []
        ids = self.settings.renderer.prompt_ids(self.trajectory.prompt)
        self.trajectory.prompt_token_ids = ids
        return ids

    def messages(self) -> list[dict[str, str]]:
        """The conversation so far, as chat messages (for text-level policies)."""
        return self.trajectory.messages()

    def on_turn_end(self, token_ids: list[int], text: str, finish_reason: str, logprobs: list[float] | None = None,
                    policy_version: int | None = None) -> list[int] | None:
        action = parse_action(text, self._tags)
        step = Step(text=text, action=action, token_ids=token_ids or None, logprobs=logprobs or None,
                    policy_version=policy_version)
        self.trajectory.steps.append(step)
        if action.kind == "answer":
            self._finish("answer", action.answer)
            return None
        if action.kind == "tool":
            assert action.tool is not None and action.query is not None  # a tool call names both
            in_flight = self.settings.in_flight
            mark = (in_flight.call(self.example.id, self.trajectory.sample_index, action.tool) if in_flight is not None
                    else contextlib.nullcontext())
            with mark:
                result = self.settings.executor.run(action.tool, action.query, Episode.of(self.example))
            step.tool_error = result.error is not None
            step.observation = prompts.observation(action.query, result.output)
        else:
            step.observation = prompts.corrective_note(action.reason or "invalid", self._tags)
        if len(self.trajectory.steps) >= self.settings.max_actions:
            self._finish("max_actions", None)
            return None
        if self.settings.renderer is None:
            return []
        step.observation_token_ids = self.settings.renderer.observation_ids(step.observation, finish_reason == "eos")
        return step.observation_token_ids

    def on_context_full(self) -> None:
        self._finish("context_full", None)

    def on_failure(self, reason: str) -> None:
        """The rollout raised (building the prompt, a turn): recorded as ``failed`` with the reason, not retried."""
        from swirl_lightning.core.tool_executor import without_host_paths

        self.trajectory.metadata["failure"] = without_host_paths(reason)
        self._finish("failed", None)

    def _finish(self, reason: str, answer: str | None) -> None:
        trajectory = self.trajectory
        trajectory.final_answer = answer
        trajectory.metadata["finish_reason"] = reason
        trajectory.metadata["seconds"] = round(time.time() - self._started, 3)
        if self.settings.outcome is not None:
            trajectory.outcome = self.settings.outcome(answer, self.example.answer)
        return None


def sample_seed(example_id: str, sample_index: int) -> int:
    """A seed that depends only on the example and sample (stable across runs, ranks and batch sizes)."""
    import zlib

    return zlib.crc32(f"{example_id}\x00{sample_index}".encode()) & 0x7FFFFFFF


def conversations(
    examples: Iterable[Example], num_samples: int, settings: RolloutSettings, skip: AbstractSet[tuple[str, int]] = frozenset()
) -> Iterable[RolloutConversation]:
    """One conversation per (example, sample) pair not in ``skip``, lazily."""
    for example in examples:
        for k in range(num_samples):
            if (example.id, k) not in skip:
                yield RolloutConversation(example, k, settings, seed=sample_seed(example.id, k))
