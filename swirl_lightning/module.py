"""The LightningModule: a causal LM policy trained with ``sft``, ``offline`` or ``swirl``, validated live.

- ``sft`` / ``offline``: one forward pass per trajectory row scores all its actions (see :mod:`.data`);
  the loss is :func:`~swirl_lightning.loss.sft_loss` or :func:`~swirl_lightning.loss.offline_loss`.
- ``swirl``: for each state of the batch, G actions are sampled with the current policy (one model turn
  each, no tool runs), scored by the step judge, and turned into group advantages; ``[s, a_1..a_G]`` is
  packed into one row (:func:`~swirl_lightning.packing.pack_group`) so one forward pass per state gives
  every action's log-probs for :func:`~swirl_lightning.loss.swirl_loss`. With ``ppo_epochs > 1`` the batch
  gives several updates with ratio clipping; the optional KL term compares with the initial policy (the
  base model with the LoRA adapter disabled, or a frozen copy when all weights train).
- Validation, test and predict roll the policy out live with tools on held-out questions
  (:func:`~swirl_lightning.evaluation.evaluate`) and log accuracy, steps, tool errors, invalid actions,
  the step judge's GOOD rate, and sample trajectories as text for TensorBoard.

Only the logits of positions that predict an action token are computed (:class:`ActionScorer`), so the
vocabulary projection costs memory for action tokens alone. Under ``ModelParallelStrategy`` each decoder
layer and the whole policy are sharded with FSDP2 ``fully_shard`` over the data-parallel mesh.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn

from .data import Objective, TaskConfig
from .sequences import State, TrainingBatch
from .evaluation import trajectory_markdown
from .loss import group_advantages, offline_loss, sft_loss, swirl_loss
from .packing import batch_groups, pack_group
from .policy import ActionScorer, cast_safetensors, load_trainable_policy, shard_with_fsdp2
from .trajectory import Example, Step, Trajectory, parse_action
from .train_config import EvaluationConfig, OptimizerConfig, PolicyConfig, SwirlConfig


@dataclass
class SwirlBatch:
    """One ``swirl`` batch after sampling and judging, ready for one or more updates."""

    samples: list[list[tuple[list[int], str]]]
    """G (token ids, text) actions per state."""
    rewards: Tensor
    """[N, G] the judge's scores."""
    advantages: Tensor
    """[N, G] rewards minus the group baseline (column g-1 = action g, as ``loss.swirl_loss`` reads them)."""
    step_index: Tensor
    """[N, G] the step index of each state."""
    inputs: dict[str, Tensor]
    """The packed groups: ``input_ids``, ``attention_mask`` (4D), ``segment_ids``, ``position_ids``, ``logit_index``."""
    reference_logprobs: Tensor | None
    tokens: int
    """Real (non-padding) tokens of the packed rows."""
    sampled_tokens: int
    sampling_seconds: float


class _OneTurn:
    """A conversation of one model turn from a given state: what the engine samples for ``swirl``."""

    def __init__(self, state_ids: list[int], seed: int):
        self.state_ids, self.seed = state_ids, seed
        self.token_ids: list[int] = []
        self.text = ""

    def prompt_ids(self) -> list[int]:
        return self.state_ids

    def on_turn_end(self, token_ids: list[int], text: str, finish_reason: str) -> None:
        self.token_ids, self.text = list(token_ids), text

    def on_context_full(self) -> None:
        pass


class SwirlModule(L.LightningModule):
    """Trains a causal LM policy with ``sft``, ``offline`` or ``swirl``; validates with live rollouts."""

    # Config instances as defaults (never mutated): LightningCLI shows their fields as the options' defaults.
    def __init__(
        self,
        policy: PolicyConfig = PolicyConfig(),
        objective: Objective = "sft",
        optimizer: OptimizerConfig = OptimizerConfig(),
        swirl: SwirlConfig = SwirlConfig(),
        evaluation: EvaluationConfig = EvaluationConfig(),
        task: TaskConfig = TaskConfig(),
    ):
        """
        Args:
            policy: The model, LoRA, quantization and checkpointing.
            objective: ``sft`` (NLL of the actions), ``offline`` (judged-reward-weighted NLL) or ``swirl``
                (online step-level RL).
            optimizer: Optimizer and schedule.
            swirl: Settings of the ``swirl`` objective.
            evaluation: Live rollouts of validation, test and predict.
            task: Task, tools and prompt format (the CLI links it to ``data.task``).
        """
        super().__init__()
        if objective not in ("sft", "offline", "swirl"):
            raise ValueError(f"objective: expected sft, offline or swirl, got {objective!r}")
        if policy.quantize != "none" and policy.lora_r <= 0:
            raise ValueError("policy.quantize needs LoRA (policy.lora_r > 0): quantized weights cannot be trained")
        if policy.quantize != "none" and policy.adapter:
            raise ValueError("policy.adapter with policy.quantize: export the merged model first, then quantize it")
        if swirl.group_size < 1 or swirl.ppo_epochs < 1:
            raise ValueError("swirl.group_size and swirl.ppo_epochs must be at least 1")
        self.save_hyperparameters()
        self.policy_config, self.objective, self.optimizer_config = policy, objective, optimizer
        self.swirl_config, self.evaluation_config, self.task = swirl, evaluation, task
        # swirl samples and may update several times per batch: it steps the optimizer itself.
        self.automatic_optimization = objective != "swirl"
        # With LoRA, checkpoints hold the trained weights only; the frozen base is reloaded from `policy.name`.
        self.strict_loading = policy.lora_r <= 0
        from .models import load_tokenizer

        self.tokenizer = load_tokenizer(policy.name)
        self.scorer: ActionScorer | None = None
        self.reference: ActionScorer | None = None
        self._cache: dict[str, Any] = {}
        self._eval_trajectories: list[Trajectory] = []
        self._batch_started = 0.0
        self._batch_tokens = 0
        self._fsdp_initialized = False

    # -- model set-up ---------------------------------------------------------------------------

    def configure_model(self) -> None:
        if self.scorer is not None:
            return
        lm = self._load_policy()
        if self.objective == "swirl" and self.swirl_config.kl_beta > 0 and self.policy_config.lora_r <= 0:
            self.reference = ActionScorer(copy.deepcopy(lm)).requires_grad_(False)
        self.scorer = ActionScorer(lm)
        if self._device_mesh is not None:
            self._shard(self._device_mesh)

    def _load_policy(self) -> nn.Module:
        device = self.trainer.strategy.root_device if self._trainer is not None else self.device
        return load_trainable_policy(self.policy_config, device)

    def _shard(self, device_mesh) -> None:
        if self.policy_config.quantize != "none":
            raise ValueError("policy.quantize cannot be combined with FSDP2 sharding")
        shard_with_fsdp2([self.scorer, self.reference], device_mesh)

    def configure_optimizers(self):
        config = self.optimizer_config
        params = [p for p in self.scorer.parameters() if p.requires_grad]
        if config.name == "adamw8bit":
            import bitsandbytes as bnb

            optimizer = bnb.optim.AdamW8bit(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1) if self._trainer is not None else 1
        if self.objective == "swirl":
            total *= self.swirl_config.ppo_epochs

        def factor(step: int) -> float:
            if step < config.warmup_steps:
                return (step + 1) / config.warmup_steps
            progress = min((step - config.warmup_steps) / max(total - config.warmup_steps, 1), 1.0)
            if config.schedule == "cosine":
                return 0.5 * (1.0 + math.cos(math.pi * progress))
            return 1.0 - progress if config.schedule == "linear" else 1.0

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        clip = gradient_clip_val or self.optimizer_config.max_grad_norm
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def on_fit_start(self) -> None:
        from torch.distributed.tensor import DTensor

        params = list(self.scorer.parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        sharded = [p for p in params if isinstance(p, DTensor) and any(pl.is_shard() for pl in p.placements)]
        line = (f"[rank {self.global_rank}/{self.trainer.world_size}] {type(self.trainer.strategy).__name__}: "
                f"{trainable:,} of {sum(p.numel() for p in params):,} parameters trainable")
        if sharded:
            local = sum(p.to_local().numel() for p in sharded)
            line += (f"; {len(sharded)} of {len(params)} parameter tensors sharded ({sharded[0].placements[0]}), "
                     f"local shards hold {local:,} of {sum(p.numel() for p in sharded):,} elements")
        print(line, flush=True)

    # -- training -------------------------------------------------------------------------------

    def training_step(self, batch: TrainingBatch | list[State], batch_idx: int) -> Tensor | None:
        if self.objective == "swirl":
            return self._swirl_step(batch)
        logprobs, entropy = self.scorer(batch.input_ids, batch.attention_mask, batch.segment_ids)
        if self.objective == "sft":
            loss = sft_loss(logprobs, batch.segment_ids)
        else:
            loss = offline_loss(logprobs, batch.segment_ids, batch.weights)
            present = batch.step_index >= 0
            self._log_rewards(batch.weights[present], batch.step_index[present])
        self._batch_tokens = batch.num_tokens
        size = len(batch.example_ids)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/entropy", entropy, batch_size=size)
        self.log("train/action_tokens", float((batch.segment_ids > 0).sum()), batch_size=size)
        return loss

    def prepare_swirl_batch(self, states: list[State]) -> SwirlBatch:
        """Sample G actions per state, judge them, compute advantages and pack ``[s, a_1..a_G]`` rows."""
        config = self.swirl_config
        started = time.perf_counter()
        samples = self.sample_actions(states)
        sampling_seconds = time.perf_counter() - started
        rewards = self.score_actions(states, samples)
        advantages = group_advantages(rewards, config.advantage, config.normalize_std)
        groups = [pack_group(s.state_ids, [ids for ids, _ in group], dtype=self._mask_dtype())
                  for s, group in zip(states, samples)]
        packed = batch_groups(groups, self.tokenizer.pad_token_id)
        inputs = {name: getattr(packed, name).to(self.device)
                  for name in ("input_ids", "attention_mask", "segment_ids", "position_ids", "logit_index")}
        reference_logprobs = None
        if config.kl_beta > 0:
            with torch.no_grad(), self._reference() as reference:
                reference_logprobs, _ = reference(**inputs)
        step_index = torch.tensor([s.step_index for s in states]).unsqueeze(1).expand_as(rewards)
        return SwirlBatch(samples, rewards, advantages.to(self.device), step_index, inputs, reference_logprobs,
                          tokens=sum(len(group.input_ids) for group in groups),
                          sampled_tokens=sum(len(ids) for group in samples for ids, _ in group),
                          sampling_seconds=sampling_seconds)

    def swirl_objective(self, batch: SwirlBatch, old_logprobs: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The ``swirl`` loss of a prepared batch under the current weights, and its stats (``logprobs`` included)."""
        config = self.swirl_config
        logprobs, entropy = self.scorer(**batch.inputs)
        loss, stats = swirl_loss(logprobs, batch.inputs["segment_ids"], batch.advantages, old_logprobs,
                                 batch.reference_logprobs, config.kl_beta, config.clip_eps)
        return loss, {**stats, "entropy": entropy, "logprobs": logprobs.detach()}

    def _swirl_step(self, states: list[State]) -> Tensor:
        batch = self.prepare_swirl_batch(states)
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        old_logprobs = None  # the sampling policy's: with it the ratio is 1 on the first update
        for _ in range(self.swirl_config.ppo_epochs):
            loss, stats = self.swirl_objective(batch, old_logprobs)
            old_logprobs = stats["logprobs"] if old_logprobs is None else old_logprobs
            optimizer.zero_grad()
            self.manual_backward(loss)
            self.configure_gradient_clipping(optimizer)
            optimizer.step()
            scheduler.step()
        self._batch_tokens = batch.tokens
        size = len(states)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for name in ("entropy", "policy_loss", "kl", "clip_fraction", "ratio_mean"):
            self.log(f"train/{name}", stats[name], batch_size=size)
        self.log("train/action_tokens", float(stats["action_tokens"]), batch_size=size)
        self.log("train/sampled_tokens_per_s", batch.sampled_tokens / max(batch.sampling_seconds, 1e-9), batch_size=size)
        self.log("train/advantage_std", batch.advantages.std(correction=0), batch_size=size)
        self.log("train/advantage_abs_mean", batch.advantages.abs().mean(), batch_size=size)
        self._log_rewards(batch.rewards.flatten(), batch.step_index.flatten())
        return loss.detach()

    def sample_actions(self, states: list[State], group_size: int | None = None,
                       seed: int | None = None) -> list[list[tuple[list[int], str]]]:
        """G sampled actions (token ids, text) per state: one model turn each, current policy, no tools.

        The run seed is ``seed``, default a new one per optimizer step (and rank), so every step draws afresh.
        """
        from .generation import GenerationEngine, SamplingConfig

        config = self.swirl_config
        group_size = group_size or config.group_size
        conversations = [
            _OneTurn(s.state_ids, zlib.crc32(f"{s.example_id}\x00{s.step_index}\x00{g}".encode()) & 0x7FFFFFFF)
            for s in states for g in range(group_size)
        ]
        longest = max(len(s.state_ids) for s in states)
        sampling = SamplingConfig(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                  top_p=config.top_p, batch_size=config.sampling_batch_size,
                                  max_context_tokens=longest + config.max_new_tokens + 1,
                                  seed=self.global_step * 7919 + self.global_rank if seed is None else seed)
        with self._generation_mode() as lm:
            engine = GenerationEngine(lm, self.tokenizer, sampling, stop_strings=self._stop_strings())
            engine.run(conversations, lambda conversation: None)
        return [[(c.token_ids, c.text) for c in conversations[i * group_size : (i + 1) * group_size]]
                for i in range(len(states))]

    @torch.no_grad()
    def probe_rewards(self, states: list[State], samples: int, seed: int) -> Tensor:
        """Rewards ``[N, samples]`` of fresh actions sampled at ``states`` with a fixed seed (see :mod:`.probe`)."""
        return self.score_actions(states, self.sample_actions(states, samples, seed))

    def score_actions(self, states: list[State], samples: list[list[tuple[list[int], str]]]) -> Tensor:
        """Rewards ``[N states, G]`` from the configured step judge."""
        from .tools import tool_tags

        judge = self._judge("swirl_judge", self.swirl_config.judge, self.swirl_config.judge_options)
        tags = tool_tags(self._tools())
        flat_states = [s for s, group in zip(states, samples) for _ in group]
        texts = [text for group in samples for _, text in group]
        actions = [parse_action(text, tags) for text in texts]
        messages = [s.state_messages for s in flat_states]
        if hasattr(judge, "score_actions"):
            if getattr(judge, "needs_example", False):
                examples = [s.example for s in flat_states]
                if any(e is None for e in examples):
                    raise ValueError(f"judge {judge.judge_id} needs each state's question; set data.task to the task "
                                     "the trajectories answer")
                scores = judge.score_actions(messages, texts, examples, actions=actions)
            else:
                scores = judge.score_actions(messages, texts, actions=actions)
        else:
            from .judges import StepToJudge

            items = [StepToJudge(m, Step(text=t, action=a), s.example)
                     for m, t, a, s in zip(messages, texts, actions, flat_states)]
            scores = [j.score for j in judge.judge_steps(items)]
        return torch.tensor(scores, dtype=torch.float32).view(len(states), -1)

    def _log_rewards(self, rewards: Tensor, step_index: Tensor) -> None:
        rewards = rewards.detach().float().cpu()
        self.log("train/reward_mean", rewards.mean(), batch_size=len(rewards))
        self.log("train/reward_std", rewards.std(correction=0), batch_size=len(rewards))
        for k in sorted(set(step_index.tolist())):
            self.log(f"train/reward_by_step/{k}", rewards[step_index.cpu() == k].mean(), batch_size=len(rewards))
        writer = self._tensorboard()
        if writer is not None and self.global_step % max(self.trainer.log_every_n_steps, 1) == 0:
            writer.add_histogram("train/reward", rewards, self.global_step)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        elapsed = time.perf_counter() - self._batch_started
        self.log("train/tokens_per_s", self._batch_tokens / max(elapsed, 1e-9))
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])

    # -- generation helpers -----------------------------------------------------------------------

    def _mask_dtype(self) -> torch.dtype:
        device_type = self.device.type
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return next(p.dtype for p in self.scorer.parameters() if p.is_floating_point())

    @contextlib.contextmanager
    def _reference(self):
        """The frozen initial policy: the adapter disabled (LoRA), or the frozen copy."""
        if self.reference is not None:
            self.reference.eval()  # only while in use: Lightning expects train mode everywhere between steps
            try:
                yield self.reference
            finally:
                self.reference.train()
        else:
            with self.scorer.lm.disable_adapter():
                yield self.scorer

    @contextlib.contextmanager
    def _generation_mode(self):
        """The causal LM in eval mode with whole (unsharded) weights, for sampling outside the training graph.

        Under FSDP2 every rank gathers every layer once, up front, and keeps it until the end: ranks then
        decode different numbers of tokens without waiting for each other.
        """
        from torch.distributed.fsdp import FSDPModule

        was_training = self.scorer.training
        self.scorer.eval()
        sharded = isinstance(self.scorer, FSDPModule)
        modules = [m for m in self.scorer.modules() if isinstance(m, FSDPModule)] if sharded else []
        if sharded and not self._fsdp_initialized:
            with torch.no_grad():  # FSDP2 must see a forward through its root before any layer runs alone
                ids = torch.zeros((1, 2), dtype=torch.long, device=self.device)
                self.scorer(ids, torch.ones_like(ids), torch.tensor([[0, 1]], device=self.device))
            self._fsdp_initialized = True
        if sharded:
            self.scorer.set_reshard_after_forward(False)
            for module in modules:
                module.unshard()
        try:
            yield self.scorer.causal_lm
        finally:
            if sharded:
                for module in modules:
                    module.reshard()
                self.scorer.set_reshard_after_forward(True)
                self.scorer.set_reshard_after_forward(False, recurse=False)  # FSDP2's own choice for the root
            self.scorer.train(was_training)

    def _tools(self) -> dict[str, Any]:
        if "tools" not in self._cache:
            self._cache["tools"] = self.task.load_tools()
        return self._cache["tools"]

    def _stop_strings(self) -> list[str]:
        return [f"</{tool.tag}>" for tool in self._tools().values()] + ["</answer>"]

    def _judge(self, key: str, name: str | None, options: dict[str, Any]):
        if name is None:
            return None
        if key not in self._cache:
            from .judges import make_judge

            self._cache[key] = make_judge(name, **options)
        return self._cache[key]

    # -- live evaluation ------------------------------------------------------------------------

    def rollout(self, examples: list[Example]) -> list[Trajectory]:
        """Roll the current policy out with tools on ``examples`` (judged by the evaluation step judge)."""
        from .evaluation import evaluate
        from .generation import GenerationEngine, SamplingConfig
        from .judges import make_judge, outcome_for_task
        from .rollout import ChatRenderer

        config = self.evaluation_config
        sampling = SamplingConfig(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                  top_p=config.top_p, batch_size=config.batch_size,
                                  max_context_tokens=config.max_context_tokens, seed=config.seed)
        step_judge = self._judge("eval_judge", config.step_judge, config.judge_options)
        with self._generation_mode() as lm:
            engine = GenerationEngine(lm, self.tokenizer, sampling, stop_strings=self._stop_strings())
            _, trajectories = evaluate(
                engine, examples, self._tools(), max_steps=self.task.steps_cap(),
                outcome=make_judge(outcome_for_task(self.task.name)), renderer=ChatRenderer(self.tokenizer),
                num_samples=config.num_samples, step_judge=step_judge, tool_timeout_s=config.tool_timeout_s,
                few_shot=self.task.few_shot, policy_name=self.policy_config.name)
        return trajectories

    def _start_evaluation(self) -> None:
        self._eval_trajectories = []

    def _evaluation_step(self, examples: list[Example]) -> None:
        self._eval_trajectories.extend(self.rollout(examples))

    def _gathered_trajectories(self) -> list[Trajectory]:
        """This epoch's trajectories of every process, once each (distributed samplers repeat questions)."""
        trajectories = self._eval_trajectories
        if torch.distributed.is_available() and torch.distributed.is_initialized() and self.trainer.world_size > 1:
            parts: list[list[Trajectory] | None] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, trajectories)
            trajectories = [t for part in parts for t in part]
        unique = {t.key: t for t in trajectories}
        return [unique[key] for key in sorted(unique)]

    def _finish_evaluation(self, stage: str) -> dict[str, Any]:
        from .evaluation import summarize

        trajectories = self._gathered_trajectories()
        judge = self._cache.get("eval_judge")
        summary = summarize(trajectories, judge.judge_id if judge is not None else None)
        metrics = {f"{stage}/accuracy": summary["accuracy"] or 0.0}
        for name in ("steps_mean", "tool_error_rate", "invalid_action_rate", "step_good_rate", "answered_rate"):
            if summary[name] is not None:
                metrics[f"{stage}/{name}"] = float(summary[name])
        if not self.trainer.sanity_checking:
            # Every rank holds the same gathered figures; syncing averages equal values and keeps Lightning quiet.
            self.log_dict(metrics, batch_size=max(len(trajectories), 1), sync_dist=True)
            log_dir = self.trainer.log_dir  # a collective call: every rank asks, once
            if self.global_rank == 0:
                figures = ", ".join(f"{name.split('/')[1]} {value:.3f}" for name, value in metrics.items())
                print(f"{stage} at step {self.global_step} ({len(trajectories)} rollouts): {figures}", flush=True)
                if log_dir:
                    from .trajectory import write_jsonl

                    # The rollouts themselves, for reading or re-scoring later (TensorBoard shows a few).
                    rollouts = Path(log_dir) / "rollouts"
                    rollouts.mkdir(parents=True, exist_ok=True)
                    write_jsonl(rollouts / f"{stage}-step{self.global_step:06d}.jsonl", trajectories)
            writer = self._tensorboard()
            if writer is not None and self.global_rank == 0 and self.evaluation_config.log_trajectories > 0:
                shown = trajectories[: self.evaluation_config.log_trajectories]
                writer.add_text(f"{stage}/trajectories", "\n\n---\n\n".join(map(trajectory_markdown, shown)),
                                self.global_step)
        self._eval_trajectories = []
        return summary

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()

    def validation_step(self, batch: list[Example], batch_idx: int) -> None:
        self._evaluation_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val")

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()

    def test_step(self, batch: list[Example], batch_idx: int) -> None:
        self._evaluation_step(batch)

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test")

    def on_predict_epoch_start(self) -> None:
        self._start_evaluation()

    def predict_step(self, batch: list[Example], batch_idx: int) -> list[Trajectory]:
        trajectories = self.rollout(batch)
        self._eval_trajectories.extend(trajectories)
        return trajectories

    def on_predict_epoch_end(self) -> None:
        from .trajectory import write_jsonl

        trajectories = self._gathered_trajectories()
        log_dir = self.trainer.log_dir  # a collective call: every rank asks, once
        if self.global_rank == 0:
            path = Path(self.evaluation_config.predictions or Path(log_dir or ".") / "predictions.jsonl")
            path.parent.mkdir(parents=True, exist_ok=True)
            write_jsonl(path, trajectories)
            print(f"wrote {len(trajectories)} trajectories to {path}", flush=True)
        self._eval_trajectories = []

    # -- checkpoints and export -----------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from torch.distributed.fsdp import FSDPModule

        if self.policy_config.lora_r > 0 and not isinstance(self.scorer, FSDPModule):
            trained = {f"scorer.{n}" for n, p in self.scorer.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trained}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("state_dict")
        unknown = set(saved) - set(self.state_dict()) if isinstance(saved, dict) else set()
        if unknown:
            raise ValueError(f"checkpoint holds {len(unknown)} weights this policy lacks, e.g. {sorted(unknown)[:3]}; "
                             "was it trained with another policy or LoRA setting?")

    def on_fit_end(self) -> None:
        from torch.distributed.fsdp import FSDPModule

        if not self.policy_config.export:
            return
        log_dir = self.trainer.log_dir  # a collective call: every rank asks, once
        if isinstance(self.scorer, FSDPModule):
            print("export skipped under FSDP2: convert the sharded checkpoint instead", flush=True)
        elif self.global_rank == 0 and (self.policy_config.export_dir or log_dir):
            self.export(self.policy_config.export_dir or Path(log_dir) / "export")

    def export(self, directory: str | Path) -> Path:
        """Save the policy in Hugging Face format: the LoRA adapter, or the whole model; plus the tokenizer."""
        directory = Path(directory)
        lm = self.scorer.lm
        if self.policy_config.adapter and self.policy_config.lora_r > 0:
            lm = copy.deepcopy(lm).merge_and_unload()  # the adapter applies to the merged warm start: save both
        adapter_only = lm is self.scorer.lm and self.policy_config.lora_r > 0
        lm.save_pretrained(directory)
        if adapter_only and self.policy_config.export_dtype:
            cast_safetensors(directory / "adapter_model.safetensors", getattr(torch, self.policy_config.export_dtype))
        if adapter_only:
            # The base as the user named it (an alias or a hub id), not this machine's cache folder.
            config_path = directory / "adapter_config.json"
            adapter_config = json.loads(config_path.read_text())
            adapter_config["base_model_name_or_path"] = self.policy_config.name
            config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
        self.tokenizer.save_pretrained(directory)
        (directory / "swirl_export.json").write_text(json.dumps(
            {"base_model": self.policy_config.name, "merged_adapter": self.policy_config.adapter,
             "adapter_only": adapter_only, "objective": self.objective}, indent=2) + "\n")
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if getattr(datamodule, "train_trajectories", None):
            # What the policy was trained on, so that a later evaluation can prove it never saw its questions.
            ids = sorted({t.example_id for t in datamodule.train_trajectories})
            (directory / "training_questions.txt").write_text("\n".join(ids) + "\n")
        print(f"exported the policy to {directory}", flush=True)
        return directory

    def _tensorboard(self):
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        return None
