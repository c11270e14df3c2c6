"""The ``swirl`` objective (the paper's step-wise RL) and its hyperparameters (``model.swirl``: :class:`SwirlConfig`).

The algorithm choices in one place:

- For each state of the batch, G actions are sampled with the current policy (``sampling``: one model turn each,
  no tool runs) and scored by the step ``judge``: the reward of an action is the judge's score.
- A judge failure (a served judge with no verdict) is no reward, never a 0: the sample is left out of the batch
  (not packed, no advantage, not in its group's baseline), counted (``judge/failures``), and the run stops above
  ``judge.max_failure_rate``. A state with no judged sample is left out; a batch with none makes no update (with
  several processes, a zero-loss one, so that every process takes part in each gradient exchange).
- Advantage = reward - the group's mean reward (or the leave-one-out mean), optionally divided by the group's
  standard deviation; a group whose G rewards are equal teaches nothing and gets zero advantages.
- Logged per batch (at the optimizer step it started from): the reward (mean, spread, by step index), the GOOD
  rate of the sampled actions (the judge's verdicts), the advantages, the loss and its parts, the gradient norm.
- Loss: token-level policy gradient, summed over action tokens and divided by the batch's action tokens, plus an
  optional k3 KL penalty to the initial policy (the warm start: the LoRA adapter disabled, or a frozen copy).
- On-policy by default (one update per sampled batch); with ``ppo_epochs > 1`` the batch gives several updates
  with ratio clipping against the sampling policy's log-probs.
- ``[s, a_1..a_G]`` is packed into one row (4D mask, restarted positions), so one forward pass per state gives
  every action's log-probs.
- It samples with the policy's sampler and judges with the step judge of :class:`~.base.ObjectiveParts`, through
  :mod:`swirl_lightning.training.action_rewards`, as the reward probe does: the probe measures the reward trained on.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import Tensor

from swirl_lightning.core.trajectory import State
from swirl_lightning.training.action_rewards import good_verdicts, judge_usage, judged_rewards
from swirl_lightning.training.loss import group_advantages, swirl_loss
from swirl_lightning.training.micro_batches import plan_micro_batches, take_rows
from swirl_lightning.training.objectives.base import Objective, ObjectiveParts, PreparedBatch, Rewards
from swirl_lightning.training.packing import batch_groups, pack_group


@dataclass
class SwirlConfig:
    """The ``swirl`` objective's update (its actions are sampled with ``sampling`` and scored by ``judge``)."""

    group_size: int = 4
    """Actions G sampled per state."""
    advantage: Literal["mean", "leave_one_out"] = "mean"
    """Baseline: the group's mean reward, or the mean of the other G-1."""
    normalize_std: bool = False
    """Divide advantages by the group's reward standard deviation."""
    kl_beta: float = 0.0
    """Weight of the k3 KL penalty to the initial policy; 0 for none."""
    clip_eps: float = 0.2
    """Ratio clipping range, active when ``ppo_epochs > 1``."""
    ppo_epochs: int = 1
    """Optimizer updates per sampled batch."""

    def __post_init__(self) -> None:
        # Checked when the command line is parsed, before any model loads.
        for name, valid, expected in (("group_size", self.group_size >= 1, "a positive integer"),
                                      ("ppo_epochs", self.ppo_epochs >= 1, "a positive integer"),
                                      ("kl_beta", self.kl_beta >= 0, ">= 0"), ("clip_eps", self.clip_eps > 0, "> 0")):
            if not valid:
                raise ValueError(f"swirl.{name}: expected {expected}, got {getattr(self, name)}")


@dataclass
class SwirlBatch:
    """One ``swirl`` batch after sampling and judging, ready for one or more updates."""

    samples: list[list[tuple[list[int], str]]]
    """G (token ids, text) actions per state."""
    rewards: Tensor
    """[N, G] the judge's scores, NaN where the judge failed."""
    valid: Tensor
    """[N, G] whether the judge scored the sample (the packed rows hold only these)."""
    good: Tensor
    """[N, G] whether the judge's verdict is GOOD (its score against its threshold; False where it failed)."""
    advantages: Tensor
    """[N', G] per packed row (the N' states with a judged sample): the advantages of its judged samples in order
    (column g-1 = the g-th judged action, as ``loss.swirl_loss`` reads them), then zeros."""
    step_index: Tensor
    """[N, G] the step index of each state."""
    inputs: dict[str, Tensor] | None
    """The packed groups: ``input_ids``, ``attention_mask`` (4D), ``segment_ids``, ``position_ids``, ``logit_index``;
    ``None`` when the judge failed on every sample (no update)."""
    reference_logprobs: Tensor | None
    nothing_judged: bool
    """The judge failed on every sample: no update (with several processes, a zero-loss one over all samples)."""
    tokens: int
    """Real (non-padding) tokens of the packed rows."""
    sampled_tokens: int
    sampling_seconds: float
    policy_staleness: int = 0
    """Optimizer steps between the weights that sampled the actions and those being updated (vLLM syncs every
    ``engine.sync_every`` steps; 0 in process)."""
    old_logprobs: Tensor | None = None
    """The sampling policy's log-probs, kept by the first update (in each micro-batch's own batch): the later ones'
    ratios are taken against them."""
    row_lengths: list[int] = field(default_factory=list)
    """The real (non-padding) length of each packed row."""


class SwirlObjective(Objective):
    """Step-wise RL: fresh actions at stored states, judged, policy gradient on group advantages (module docstring)."""

    name = "swirl"
    trains_on = "states"
    automatic_optimization = False  # it samples, then may update several times per batch
    Config = SwirlConfig

    def __init__(self, config: SwirlConfig | None = None) -> None:
        super().__init__(config or SwirlConfig())

    @property
    def updates_per_batch(self) -> int:
        return self.config.ppo_epochs

    @property
    def needs_reference(self) -> bool:
        return self.config.kl_beta > 0

    def sample_batch(self, parts: ObjectiveParts, states: list[State]) -> SwirlBatch:
        """Sample G actions per state (a new seed each step and rank), judge them, compute advantages, pack rows."""
        config, policy = self.config, parts.policy
        started = time.perf_counter()
        samples, sampled_version = policy.sample(states, config.group_size, parts.step * 7919 + parts.rank)
        sampling_seconds = time.perf_counter() - started
        rewards = judged_rewards(parts.judge, policy.action_tags, states, samples, parts.failures)
        valid = ~torch.isnan(rewards)
        good = good_verdicts(parts.judge, rewards)
        advantages = group_advantages(rewards, config.advantage, config.normalize_std, valid=valid)
        # Judge failures are left out of the batch: only judged samples are packed, each row's advantages in order.
        rows = [n for n in range(len(states)) if valid[n].any()]
        nothing_judged = not rows
        if nothing_judged and parts.world_size > 1:  # every rank takes part in the backward pass: all, advantages 0
            rows, valid = list(range(len(states))), torch.ones_like(valid)
            advantages = torch.zeros_like(rewards)
        groups = [pack_group(cast("list[int]", states[n].token_ids), [ids for (ids, _), ok in zip(samples[n], valid[n]) if ok],
                             dtype=policy.mask_dtype()) for n in rows]
        row_advantages = torch.zeros(len(rows), rewards.shape[1])
        for row, n in enumerate(rows):
            row_advantages[row, : int(valid[n].sum())] = advantages[n][valid[n]]
        inputs, reference_logprobs = None, None
        if groups:
            packed = batch_groups(groups, policy.pad_token_id)
            inputs = {name: getattr(packed, name).to(policy.device)
                      for name in ("input_ids", "attention_mask", "segment_ids", "position_ids", "logit_index")}
            if config.kl_beta > 0:
                with torch.no_grad(), parts.reference() as reference:
                    reference_logprobs, _ = reference(**inputs)
        step_index = torch.tensor([s.step_index for s in states]).unsqueeze(1).expand_as(rewards)
        return SwirlBatch(samples, rewards, ~torch.isnan(rewards), good, row_advantages.to(policy.device), step_index,
                          inputs, reference_logprobs, nothing_judged,
                          tokens=sum(len(group.input_ids) for group in groups),
                          sampled_tokens=sum(len(ids) for group in samples for ids, _ in group),
                          sampling_seconds=sampling_seconds, policy_staleness=policy.version - sampled_version,
                          row_lengths=[len(group.input_ids) for group in groups])

    def prepare(self, parts: ObjectiveParts, states: list[State]) -> PreparedBatch:
        batch = self.sample_batch(parts, states)
        # The judge's failures in this batch and over the run, and its usage (apart from the policy's figures).
        metrics: dict[str, float | Tensor] = {"judge/failures": float((~batch.valid).sum()),
                                              "judge/failure_rate": parts.failures.rate}
        metrics.update({f"judge/{name}": value for name, value in judge_usage(parts.judge).items()})
        if batch.inputs is None:  # the judge failed on every sample: nothing to learn from
            return PreparedBatch(batch, size=len(states), tokens=0, updates=0, metrics=metrics)
        metrics.update({"train/sampled_tokens_per_s": batch.sampled_tokens / max(batch.sampling_seconds, 1e-9),
                        "train/policy_staleness": float(batch.policy_staleness),
                        "train/action_tokens": float((batch.inputs["segment_ids"] > 0).sum())})
        rewards = None
        if not batch.nothing_judged:
            judged = batch.valid[batch.valid.any(dim=1)].sum(dim=1, keepdim=True).to(batch.advantages.device)
            advantages = batch.advantages[torch.arange(batch.advantages.shape[1], device=judged.device) < judged]
            metrics.update({"train/advantage_std": advantages.std(correction=0),
                            "train/advantage_abs_mean": advantages.abs().mean()})
            rewards = Rewards(batch.rewards[batch.valid], batch.step_index[batch.valid], batch.good[batch.valid])
        return PreparedBatch(batch, size=len(states), tokens=batch.tokens, updates=self.config.ppo_epochs,
                             metrics=metrics, rewards=rewards)

    def micro_batches(self, data: SwirlBatch, max_tokens: int) -> list[tuple[Any, int]]:
        """Whole packed groups per pass; each pass keeps its own sampling-policy log-probs across the updates."""
        if data.inputs is None:
            return [(data, 0)]
        plan = plan_micro_batches(data.row_lengths, max_tokens)
        if len(plan) == 1:
            return [(data, int((data.inputs["segment_ids"] > 0).sum()))]
        passes = []
        for rows in plan:
            length = max(data.row_lengths[r] for r in rows)
            inputs = {name: take_rows(value, rows, length, (2, 3) if name == "attention_mask" else (1,))
                      for name, value in data.inputs.items()}
            reference = None if data.reference_logprobs is None else take_rows(data.reference_logprobs, rows, length)
            part = dataclasses.replace(data, inputs=inputs, advantages=take_rows(data.advantages, rows),
                                       reference_logprobs=reference, row_lengths=[data.row_lengths[r] for r in rows])
            passes.append((part, int((inputs["segment_ids"] > 0).sum())))
        return passes

    def loss(self, parts: ObjectiveParts, prepared: PreparedBatch) -> tuple[Tensor, dict[str, float | Tensor]]:
        """The loss of a prepared batch under the current weights: the first update keeps the sampling policy's
        log-probs (its ratio is 1), the later ones clip their ratios against them."""
        config, batch = self.config, prepared.data
        logprobs, entropy = parts.policy.score(**batch.inputs)
        loss, stats = swirl_loss(logprobs, batch.inputs["segment_ids"], batch.advantages, batch.old_logprobs,
                                 batch.reference_logprobs, config.kl_beta, config.clip_eps)
        if batch.old_logprobs is None:
            batch.old_logprobs = logprobs.detach()
        metrics = {f"train/{name}": stats[name] for name in ("policy_loss", "kl", "clip_fraction", "ratio_mean")}
        metrics["train/entropy"] = entropy
        return loss * 0 if batch.nothing_judged else loss, metrics
