"""Control rewards for learning experiments: judges that know nothing of the task.

If ``swirl`` trained with one of these gains as much as with a real judge, the gain does not come from the judge.

- ``random``: each step is GOOD with probability ``p``, drawn from a hash of the seed, the state and the step's text,
  so the same action at the same state gets the same score in every run (reproducible, and still uninformative).
- ``format``: every well-formed action (one tool call or one answer) is GOOD, an invalid one BAD: the reward of
  following the protocol and nothing more.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from swirl_lightning.core.trajectory import Judgement, State, Step
from swirl_lightning.judging.base import StepJudgeBase
from swirl_lightning.judging.options import JudgeOptions


@dataclass(frozen=True)
class RandomOptions(JudgeOptions):
    """Options of the ``random`` judge."""

    p: float = 0.5
    """The probability of GOOD, strictly between 0 and 1."""
    seed: int = 0
    """Another seed draws other verdicts for the same steps."""

    def __post_init__(self) -> None:
        if not 0 < self.p < 1:
            raise ValueError(f"judge.options.p: expected a probability strictly between 0 and 1, got {self.p!r}")

    def judge_id(self) -> str:
        return RandomJudge.judge_id


@dataclass(frozen=True)
class FormatOptions(JudgeOptions):
    """The ``format`` judge has no options."""

    def judge_id(self) -> str:
        return FormatJudge.judge_id


class RandomJudge(StepJudgeBase):
    """GOOD with probability ``p``, by a hash of (``seed``, state, step text): a reward that carries no signal."""

    Options = RandomOptions
    judge_id = "random"
    prompt_version = "random-v1"
    cacheable = False  # a hash: cheaper than the cache

    def __init__(self, p: float = 0.5, seed: int = 0) -> None:
        options = RandomOptions(p, seed)
        self.p, self.seed = float(options.p), int(options.seed)

    def score_step(self, state: State, step: Step) -> float:
        """1.0 or 0.0, fixed by the hash of the seed, the state's messages and the step's text."""
        key = json.dumps([self.seed, state.example_id, state.messages, step.text], sort_keys=True)
        draw = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
        return float(draw < self.p)

    def judge_steps(self, items: Sequence[tuple[State, Step]]) -> list[Judgement]:
        return [self.judgement(self.score_step(state, step)) for state, step in items]


class FormatJudge(StepJudgeBase):
    """GOOD for any well-formed action (a tool call or an answer), BAD for an invalid turn."""

    Options = FormatOptions
    judge_id = "format"
    prompt_version = "format-v1"
    cacheable = False

    def judge_steps(self, items: Sequence[tuple[State, Step]]) -> list[Judgement]:
        return [self.judgement(float(step.action.kind != "invalid")) for _, step in items]
