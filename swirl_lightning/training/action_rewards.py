"""Fresh actions judged at their states: the ``swirl`` reward and the reward probe's, through one sampler and one
judge.

A judge failure is no reward, never a 0: its reward is NaN, and the failure is counted in the run's
:class:`~swirl_lightning.judging.steps.FailureBudget`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from swirl_lightning.core.trajectory import State, Step, parse_action
from swirl_lightning.judging.base import GOOD, StepJudge, verdict_for
from swirl_lightning.judging.steps import FailureBudget, action_rewards


def judged_rewards(judge: StepJudge, action_tags: dict[str, str], states: Sequence[State],
                   samples: Sequence[Sequence[tuple[list[int], str]]], failures: FailureBudget | None) -> Tensor:
    """Rewards ``[N states, G]``: ``judge``'s score of each sampled action at its state, NaN for a judge failure
    (counted in ``failures``, which stops the run above its rate)."""
    items = [(state, Step(text=text, action=parse_action(text, action_tags)))
             for state, group in zip(states, samples) for _, text in group]
    scores = action_rewards(judge, items, failures)
    return torch.tensor([float("nan") if r is None else r for r in scores], dtype=torch.float32).view(len(states), -1)


def good_verdicts(judge: StepJudge, rewards: Tensor) -> Tensor:
    """The judge's verdict on each scored action: GOOD when its score reaches the judge's threshold."""
    return torch.tensor([verdict_for(r, judge.threshold) == GOOD for r in rewards.flatten().tolist()]).view_as(rewards)


def judge_usage(judge: StepJudge) -> dict[str, float]:
    """What the judge counts of its own use (requests, retries, tokens, the estimated cost), when it counts it."""
    usage = judge.usage
    if usage is None:
        return {}
    return {name: float(value) for name, value in usage.as_dict().items()
            if value is not None and name not in ("judgements", "failures")}
