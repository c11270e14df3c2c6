"""The training objectives as small classes behind one interface: ``sft``, ``offline`` and ``swirl``.

An :class:`Objective` says what its batches hold (``rows``: whole trajectories, all K actions scored in one pass;
``states``: the states before actions) and turns a batch into an update. Adding an objective is one class here,
registered in :data:`OBJECTIVES`; the losses themselves are pure torch in :mod:`.loss`.

``swirl`` (the paper's step-wise RL), the algorithm choices in one place:

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
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import torch
from torch import Tensor

from swirl_lightning.core.trajectory import State, Step, Trajectory, parse_action
from swirl_lightning.judging.steps import FailureBudget
from swirl_lightning.training.loss import group_advantages, offline_loss, sft_loss, swirl_loss
from swirl_lightning.training.packing import batch_groups, pack_group
from swirl_lightning.training.sequences import TrainingBatch, action_weights

if TYPE_CHECKING:
    from swirl_lightning.training.module import SwirlModule


class Objective:
    """One training objective. ``training_step`` gets the module (its policy, optimizer and logger) and a batch."""

    name: ClassVar[str]
    trains_on: ClassVar[Literal["rows", "states"]] = "rows"
    """``rows``: one token row per trajectory with per-action weights; ``states``: the distinct states."""
    automatic_optimization: ClassVar[bool] = True
    """False when the objective steps the optimizer itself."""

    def weights(self, trajectories: Sequence[Trajectory], reward: str, weighting: str) -> list[list[float]]:
        """Per-action weights of each trajectory (``rows`` objectives)."""
        return [[1.0] * len(t.steps) for t in trajectories]

    def training_step(self, module: SwirlModule, batch: Any) -> Tensor:
        """The loss of one batch (or, without automatic optimization, the update itself)."""
        raise NotImplementedError


class SftObjective(Objective):
    """The paper's baseline: negative log-likelihood of the stored actions, mean over action tokens."""

    name = "sft"

    def training_step(self, module: SwirlModule, batch: TrainingBatch) -> Tensor:
        logprobs, entropy = module.scorer(batch.input_ids, batch.attention_mask, batch.segment_ids)
        loss = sft_loss(logprobs, batch.segment_ids)
        check_finite(loss, module.global_step)
        module.log_row_batch(batch, loss, entropy)
        return loss


class OfflineObjective(Objective):
    """Stored actions weighted by a judged reward (or an advantage over the question's mean)."""

    name = "offline"

    def weights(self, trajectories: Sequence[Trajectory], reward: str, weighting: str) -> list[list[float]]:
        return action_weights(trajectories, reward, weighting)

    def training_step(self, module: SwirlModule, batch: TrainingBatch) -> Tensor:
        logprobs, entropy = module.scorer(batch.input_ids, batch.attention_mask, batch.segment_ids)
        loss = offline_loss(logprobs, batch.segment_ids, batch.weights)
        check_finite(loss, module.global_step)
        present = batch.step_index >= 0
        module.log_rewards(batch.weights[present], batch.step_index[present])
        module.log_row_batch(batch, loss, entropy)
        return loss


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


class SwirlObjective(Objective):
    """Step-wise RL: fresh actions at stored states, judged, policy gradient on group advantages (module docstring)."""

    name = "swirl"
    trains_on = "states"
    automatic_optimization = False  # it samples, then may update several times per batch

    def __init__(self) -> None:
        self.failures: FailureBudget | None = None
        self.sampled_version = 0  # the policy version of the last actions sampled

    def rewards(self, module: SwirlModule, states: Sequence[State], samples: list[list[tuple[list[int], str]]]) -> Tensor:
        """Rewards ``[N states, G]``: the step judge's score of each sampled action at its state, NaN for a judge
        failure (counted in :attr:`failures`, which stops the run above ``judge.max_failure_rate``)."""
        from swirl_lightning.core.tools import tool_tags
        from swirl_lightning.judging.steps import action_rewards

        if self.failures is None:
            self.failures = FailureBudget.from_config(module.judge)
        tags = tool_tags(module.rollout_settings().tools)
        items = [(state, Step(text=text, action=parse_action(text, tags)))
                 for state, group in zip(states, samples) for _, text in group]
        scores = action_rewards(module.step_judge(), items, self.failures)
        return torch.tensor([float("nan") if r is None else r for r in scores], dtype=torch.float32).view(len(states), -1)

    def good(self, module: SwirlModule, rewards: Tensor) -> Tensor:
        """The judge's verdict on each scored action: GOOD when its score reaches the judge's threshold."""
        from swirl_lightning.judging.base import GOOD, verdict_for

        threshold = module.step_judge().threshold
        return torch.tensor([verdict_for(r, threshold) == GOOD for r in rewards.flatten().tolist()]).view_as(rewards)

    def sample(self, module: SwirlModule, states: Sequence[State], group_size: int,
               seed: int) -> list[list[tuple[list[int], str]]]:
        """``group_size`` fresh actions per state, drawn with run seed ``seed`` by the module's generation backend
        (whose policy version is kept in :attr:`sampled_version`)."""
        from swirl_lightning.training.policy import action_sampling, sample_actions

        sampling = action_sampling(dataclasses.replace(module.sampling, seed=seed), states)
        with module.generation_backend(sampling) as backend:
            samples = sample_actions(backend, states, group_size)
            self.sampled_version = backend.policy_version
        return samples

    def prepare(self, module: SwirlModule, states: list[State]) -> SwirlBatch:
        """Sample G actions per state (a new seed each step and rank), judge them, compute advantages, pack rows."""
        config = module.swirl
        started = time.perf_counter()
        samples = self.sample(module, states, config.group_size, module.global_step * 7919 + module.global_rank)
        sampling_seconds = time.perf_counter() - started
        rewards = self.rewards(module, states, samples)
        valid = ~torch.isnan(rewards)
        good = self.good(module, rewards)
        advantages = group_advantages(rewards, config.advantage, config.normalize_std, valid=valid)
        # Judge failures are left out of the batch: only judged samples are packed, each row's advantages in order.
        rows = [n for n in range(len(states)) if valid[n].any()]
        nothing_judged = not rows
        distributed = module._trainer is not None and module.trainer.world_size > 1
        if nothing_judged and distributed:  # every rank takes part in the backward pass: all samples, zero advantages
            rows, valid = list(range(len(states))), torch.ones_like(valid)
            advantages = torch.zeros_like(rewards)
        groups = [pack_group(cast("list[int]", states[n].token_ids), [ids for (ids, _), ok in zip(samples[n], valid[n]) if ok],
                             dtype=module.mask_dtype()) for n in rows]
        row_advantages = torch.zeros(len(rows), rewards.shape[1])
        for row, n in enumerate(rows):
            row_advantages[row, : int(valid[n].sum())] = advantages[n][valid[n]]
        inputs, reference_logprobs = None, None
        if groups:
            packed = batch_groups(groups, module.tokenizer.pad_token_id)
            inputs = {name: getattr(packed, name).to(module.device)
                      for name in ("input_ids", "attention_mask", "segment_ids", "position_ids", "logit_index")}
            if config.kl_beta > 0:
                with torch.no_grad(), module.reference_policy() as reference:
                    reference_logprobs, _ = reference(**inputs)
        step_index = torch.tensor([s.step_index for s in states]).unsqueeze(1).expand_as(rewards)
        return SwirlBatch(samples, rewards, ~torch.isnan(rewards), good, row_advantages.to(module.device), step_index,
                          inputs, reference_logprobs, nothing_judged, tokens=sum(len(group.input_ids) for group in groups),
                          sampled_tokens=sum(len(ids) for group in samples for ids, _ in group),
                          sampling_seconds=sampling_seconds,
                          policy_staleness=module.weights_step - self.sampled_version)

    def loss(self, module: SwirlModule, batch: SwirlBatch,
             old_logprobs: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of a prepared batch under the current weights, and its stats (``logprobs`` included)."""
        config = module.swirl
        assert batch.inputs is not None  # training_step returns before this when nothing was judged
        logprobs, entropy = module.scorer(**batch.inputs)
        loss, stats = swirl_loss(logprobs, batch.inputs["segment_ids"], batch.advantages, old_logprobs,
                                 batch.reference_logprobs, config.kl_beta, config.clip_eps)
        return loss, {**stats, "entropy": entropy, "logprobs": logprobs.detach()}

    def training_step(self, module: SwirlModule, states: list[State]) -> Tensor:
        batch = self.prepare(module, states)
        self.log_judge(module, batch, len(states))
        if batch.inputs is None:  # the judge failed on every sample: nothing to learn from
            module.batch_tokens = 0
            return torch.zeros((), device=module.device)
        optimizer, scheduler = module.optimizers(), module.lr_schedulers()
        old_logprobs = None  # the sampling policy's: with it the ratio is 1 on the first update
        for _ in range(module.swirl.ppo_epochs):
            loss, stats = self.loss(module, batch, old_logprobs)
            loss = loss * 0 if batch.nothing_judged else loss
            check_finite(loss, module.global_step)
            old_logprobs = stats["logprobs"] if old_logprobs is None else old_logprobs
            optimizer.zero_grad()
            module.manual_backward(loss)
            module.configure_gradient_clipping(optimizer)
            optimizer.step()
            scheduler.step()
        module.batch_tokens = batch.tokens
        size = len(states)
        figures = {"train/loss": loss, **{f"train/{name}": stats[name] for name in
                                          ("entropy", "policy_loss", "kl", "clip_fraction", "ratio_mean")},
                   "train/action_tokens": float(stats["action_tokens"]),
                   "train/sampled_tokens_per_s": batch.sampled_tokens / max(batch.sampling_seconds, 1e-9),
                   "train/policy_staleness": float(batch.policy_staleness)}
        if not batch.nothing_judged:
            judged = batch.valid[batch.valid.any(dim=1)].sum(dim=1, keepdim=True).to(batch.advantages.device)
            advantages = batch.advantages[torch.arange(batch.advantages.shape[1], device=judged.device) < judged]
            figures.update({"train/advantage_std": advantages.std(correction=0),
                            "train/advantage_abs_mean": advantages.abs().mean()})
        module.log_scalars(figures, batch_size=size, prog_bar=("train/loss",))
        if not batch.nothing_judged:
            module.log_rewards(batch.rewards[batch.valid], batch.step_index[batch.valid], batch.good[batch.valid])
        return loss.detach()

    def log_judge(self, module: SwirlModule, batch: SwirlBatch, size: int) -> None:
        """The judge's failures in this batch and over the run, and its usage (``judge/``, apart from the policy's
        ``train/`` figures): requests, retries, tokens and the estimated cost, when the judge counts them."""
        figures = {"judge/failures": float((~batch.valid).sum())}
        if self.failures is not None:
            figures["judge/failure_rate"] = self.failures.rate
        usage = getattr(module.step_judge(), "usage", None)
        if usage is not None:
            figures.update({f"judge/{name}": float(value) for name, value in usage.as_dict().items()
                            if value is not None and name not in ("judgements", "failures")})
        module.log_scalars(figures, batch_size=size)

    @torch.no_grad()
    def probe_rewards(self, module: SwirlModule, states: Sequence[State], samples: int, seed: int) -> Tensor:
        """Rewards ``[N, samples]`` of fresh actions sampled at ``states`` with a fixed seed (the reward probe)."""
        return self.rewards(module, states, self.sample(module, states, samples, seed))


def check_finite(loss: Tensor, step: int) -> None:
    """Stop before a non-finite loss reaches the weights: data out of range must not ruin a model silently."""
    if not torch.isfinite(loss):
        raise ValueError(f"the training loss is {loss.item()} at step {step}: the batch's rewards or weights are out "
                         "of range; the weights were not updated")


OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (SftObjective, OfflineObjective, SwirlObjective)}
"""Objective name (``model.objective``) -> class."""


def make_objective(name: str) -> Objective:
    """The objective named ``name``; a clear error naming the known ones otherwise."""
    if name not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {', '.join(OBJECTIVES)}, got {name!r}")
    return OBJECTIVES[name]()
