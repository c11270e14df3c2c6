"""Live evaluation: multi-step rollouts with tools on held-out questions, and the figures that describe them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from swirl_lightning.core.trajectory import Example, Trajectory

if TYPE_CHECKING:
    from swirl_lightning.judging.base import StepJudge
    from swirl_lightning.rollout.conversation import RolloutSettings


def summarize(trajectories: Sequence[Trajectory], step_judge_id: str | None = None) -> dict[str, Any]:
    """Figures over finished trajectories: accuracy, steps, invalid actions, tool errors, GOOD rate.

    ``step_judge_id`` picks whose judgements count for ``step_good_rate`` (any judge when ``None``);
    the rate is ``None`` when no step was judged. A judge failure is no verdict: it is left out of the rate.
    """
    steps = [step for t in trajectories for step in t.steps]
    tool_steps = [s for s in steps if s.action.kind == "tool"]
    judged = [
        j for s in steps for j in s.judgements if (step_judge_id is None or j.judge == step_judge_id) and not j.failed
    ]
    scored = [t.outcome for t in trajectories if t.outcome is not None]
    n = len(trajectories)
    return {
        "trajectories": n,
        "accuracy": sum(scored) / len(scored) if scored else None,
        "answered_rate": sum(t.final_answer is not None for t in trajectories) / n if n else None,
        "steps_mean": len(steps) / n if n else None,
        "steps_histogram": dict(sorted(Counter(len(t.steps) for t in trajectories).items())),
        "valid_action_rate": sum(s.action.kind != "invalid" for s in steps) / len(steps) if steps else None,
        "invalid_action_rate": sum(s.action.kind == "invalid" for s in steps) / len(steps) if steps else None,
        "invalid_reasons": dict(Counter(s.action.reason for s in steps if s.action.kind == "invalid").most_common(8)),
        "tool_calls": len(tool_steps),
        "tool_error_rate": sum(s.tool_error for s in tool_steps) / len(tool_steps) if tool_steps else None,
        "step_good_rate": sum(j.verdict == "GOOD" for j in judged) / len(judged) if judged else None,
        "finish_reasons": dict(Counter(t.metadata.get("finish_reason", "?") for t in trajectories)),
    }


def evaluate(
    engine,
    examples: Iterable[Example],
    settings: RolloutSettings,
    *,
    num_samples: int = 1,
    step_judge: StepJudge | None = None,
) -> tuple[dict[str, Any], list[Trajectory]]:
    """Roll out the policy live on ``examples`` and summarise.

    ``engine`` is a :class:`~swirl_lightning.rollout.engine.GenerationEngine` (or a scripted policy);
    ``step_judge``, when given, judges every step so that ``step_good_rate`` is filled in. Returns the summary
    and the trajectories, in question order.
    """
    from swirl_lightning.rollout.conversation import conversations

    examples = list(examples)
    finished: list[Trajectory] = []
    engine.run(conversations(examples, num_samples, settings), lambda c: finished.append(c.trajectory))
    order = {example.id: i for i, example in enumerate(examples)}
    finished.sort(key=lambda t: (order[t.example_id], t.sample_index))
    judge_id = None
    if step_judge is not None:
        from swirl_lightning.judging.steps import judge_trajectories

        judge_trajectories(finished, step_judge, {e.id: e for e in examples}, cache=None, progress=False)
        judge_id = step_judge.judge_id
    return summarize(finished, judge_id), finished
