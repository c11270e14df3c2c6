"""The objectives that train on stored trajectories, one row each: ``sft`` and ``offline``.

All K actions of a trajectory are scored in one forward pass (every state is a prefix of the trajectory); neither
objective samples or judges while training, and each batch gives one update.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from swirl_lightning.core.trajectory import Trajectory
from swirl_lightning.training.loss import offline_loss, sft_loss
from swirl_lightning.training.micro_batches import plan_micro_batches, take_rows
from swirl_lightning.training.objectives.base import Objective, ObjectiveParts, PreparedBatch, Rewards
from swirl_lightning.training.sequences import TrainingBatch, action_weights


class SftObjective(Objective):
    """The paper's baseline: negative log-likelihood of the stored actions, mean over action tokens."""

    name = "sft"

    def prepare(self, parts: ObjectiveParts, batch: TrainingBatch) -> PreparedBatch:
        return PreparedBatch(batch, size=len(batch.example_ids), tokens=batch.num_tokens,
                             metrics={"train/action_tokens": float((batch.segment_ids > 0).sum())})

    def micro_batches(self, data: TrainingBatch, max_tokens: int) -> list[tuple[Any, int]]:
        """Whole trajectory rows per pass, each pass cut to its longest row."""
        lengths = data.attention_mask.sum(dim=1).tolist()
        plan = plan_micro_batches(lengths, max_tokens)
        if len(plan) == 1:
            return [(data, int((data.segment_ids > 0).sum()))]
        passes = []
        for rows in plan:
            length = max(lengths[r] for r in rows)
            part = dataclasses.replace(
                data, input_ids=take_rows(data.input_ids, rows, length),
                attention_mask=take_rows(data.attention_mask, rows, length),
                segment_ids=take_rows(data.segment_ids, rows, length), weights=take_rows(data.weights, rows),
                step_index=take_rows(data.step_index, rows), example_ids=[data.example_ids[r] for r in rows],
                num_tokens=sum(lengths[r] for r in rows))
            passes.append((part, int((part.segment_ids > 0).sum())))
        return passes

    def loss(self, parts: ObjectiveParts, prepared: PreparedBatch) -> tuple[Tensor, dict[str, float | Tensor]]:
        batch = prepared.data
        logprobs, entropy = parts.policy.score(batch.input_ids, batch.attention_mask, batch.segment_ids)
        return sft_loss(logprobs, batch.segment_ids), {"train/entropy": entropy}


class OfflineObjective(SftObjective):
    """Stored actions weighted by a judged reward (or an advantage over the question's mean): ``data.train.reward``
    and ``data.train.weighting`` choose the weights, which the rows carry."""

    name = "offline"

    @classmethod
    def weights(cls, trajectories: Sequence[Trajectory], reward: str, weighting: str) -> list[list[float]]:
        return action_weights(trajectories, reward, weighting)

    def prepare(self, parts: ObjectiveParts, batch: TrainingBatch) -> PreparedBatch:
        prepared = super().prepare(parts, batch)
        present = batch.step_index >= 0
        prepared.rewards = Rewards(batch.weights[present], batch.step_index[present])
        return prepared

    def loss(self, parts: ObjectiveParts, prepared: PreparedBatch) -> tuple[Tensor, dict[str, float | Tensor]]:
        batch = prepared.data
        logprobs, entropy = parts.policy.score(batch.input_ids, batch.attention_mask, batch.segment_ids)
        return offline_loss(logprobs, batch.segment_ids, batch.weights), {"train/entropy": entropy}
