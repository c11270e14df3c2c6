"""The LightningModule: a causal LM policy trained with one :mod:`objective <.objectives>`, validated live.

- Training: the objective named by ``objective`` (``sft``, ``offline``, ``swirl`` or one a plugin registers) turns each
  batch into a loss and its metrics, given :class:`~.objectives.ObjectiveParts` (the policy that scores and samples, the
  judge, the reference policy), never this module; the module owns the loop: one :meth:`~.objectives.Objective.prepare`
  per batch, split into micro-batches of at most ``micro_batch_tokens`` tokens (:mod:`.micro_batches`), then per update
  a loss and a backward pass per micro-batch (each weighted by its share of the batch's action tokens), the optimizer
  step and the logging.
- Validation, test and predict roll the policy out live with tools on held-out questions; the
  :class:`~.callbacks.LiveEvaluation` callback (added by :meth:`configure_callbacks`) summarises and logs them. The
  :class:`~.export.PolicyExport` callback (added alike) saves the policy at the end of ``fit``.
- Training figures are written at the optimizer step the batch started from (:mod:`.scalars` says why not through
  Lightning's ``self.log``); the hyperparameters are logged by the CLI (the whole resolved config).
- Every sampling (``swirl``'s actions, the reward probe, live evaluation) goes through :meth:`generation_backend`: the
  in-process engine on the module's own weights, or a vLLM server (``engine.name: vllm``) that serves the LoRA adapter
  of the latest sync (:mod:`.weight_sync`); a managed server is stopped at teardown or when the process ends.
- The policy (:mod:`.policy`) is loaded in :meth:`configure_model`; only the logits of positions that predict an
  action token are computed. Under ``ModelParallelStrategy`` each decoder layer and the whole policy are sharded
  with FSDP2. With LoRA, checkpoints hold the trained weights only; the frozen base is reloaded from ``policy.name``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from functools import partial
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as L
import torch
from torch import Tensor

from swirl_lightning.core.config import EngineConfig, JudgeConfig, PolicyConfig, SamplingConfig, TaskConfig, ToolsConfig
from swirl_lightning.core.trajectory import Example, Trajectory
from swirl_lightning.rollout.backend import GenerationBackend
from swirl_lightning.training.callbacks import LiveEvaluation
from swirl_lightning.training.config import EvaluationConfig, ExportConfig, LoraConfig, OptimizerConfig
from swirl_lightning.training.export import PolicyExport
from swirl_lightning.training.micro_batches import backward_in_passes, check_token_budget
from swirl_lightning.training.objectives import ObjectiveParts, make_objective
from swirl_lightning.training.objectives.base import PreparedBatch, check_finite
from swirl_lightning.training.objectives.swirl import SwirlConfig
from swirl_lightning.training.policy import (
    ActionScorer,
    check_checkpoint_weights,
    describe_parameters,
    load_trainable_policy,
    shard_with_fsdp2,
    trained_weights,
)
from swirl_lightning.training.scalars import BatchScalars, gradient_norm, reward_figures
from swirl_lightning.training.trained_policy import TrainedPolicy, frozen_reference


class SwirlModule(L.LightningModule):
    """Trains a causal LM policy with a registered objective; validates with live rollouts."""

    # Config instances as defaults (never mutated): LightningCLI shows their fields as the options' defaults.
    def __init__(
        self,
        policy: PolicyConfig = PolicyConfig(),
        task: TaskConfig = TaskConfig(),
        sampling: SamplingConfig = SamplingConfig(),
        engine: EngineConfig = EngineConfig(),
        tools: ToolsConfig = ToolsConfig(),
        judge: JudgeConfig = JudgeConfig(),
        objective: str = "sft",
        lora: LoraConfig = LoraConfig(),
        gradient_checkpointing: bool | Literal["auto"] = "auto",
        micro_batch_tokens: int = 512,
        optimizer: OptimizerConfig = OptimizerConfig(),
        swirl: SwirlConfig = SwirlConfig(),
        evaluation: EvaluationConfig = EvaluationConfig(),
        export: ExportConfig = ExportConfig(),
        objective_options: dict[str, Any] | None = None,
    ):
        """
        Args:
            policy: The policy (the CLI links it to the shared ``policy`` group).
            task: The questions (linked to ``task``).
            sampling: How ``swirl`` samples its actions (linked to ``sampling``).
            engine: What samples: the in-process engine or a vLLM server (linked to ``engine``).
            tools: The tools of live evaluation (linked to ``tools``).
            judge: The ``swirl`` reward and the validation GOOD rate (linked to ``judge``).
            objective: ``sft`` (NLL of the actions), ``offline`` (judged-reward-weighted NLL), ``swirl`` (online
                step-level RL), or an objective a plugin registers (``register_objectives``).
            lora: Which weights train: LoRA (``lora.r > 0``, optionally on 4/8-bit weights) or all.
            gradient_checkpointing: Recompute each layer's activations in the backward pass: far less memory, about a
                third more compute. ``auto``: for passes of more than 1,024 tokens (rows x length) only.
            micro_batch_tokens: Tokens (rows x length) of one forward and backward pass: each batch is split into
                passes of whole rows under this budget (a longer row is a pass of its own), whose gradients add up to
                the batch's. Smaller passes keep fewer activations alive; on a GPU, larger ones use it better. 0: the
                whole batch in one pass.
            optimizer: Optimizer and schedule.
            swirl: The ``swirl`` update: group size, baseline, KL, clipping.
            evaluation: Live rollouts of validation, test and predict.
            export: The policy saved at the end of ``fit``.
            objective_options: The hyperparameters of a plugin's objective (the fields of its ``Config``); the
                built-in ``swirl`` takes ``swirl`` instead.
        """
        super().__init__()
        if lora.quantize != "none" and policy.adapter:
            raise ValueError("policy.adapter with lora.quantize: export the merged model first, then quantize it")
        typed_options = {"swirl": swirl}  # built-ins whose hyperparameters are a group of the module's (with --help)
        if objective_options and objective in typed_options:
            raise ValueError(f"model.objective_options: objective {objective!r} takes model.{objective} instead")
        self.objective = make_objective(objective, typed_options.get(objective, objective_options))
        # Not to the loggers: the CLI logs the whole resolved config (trainer included) with the val/* figures.
        self.save_hyperparameters(logger=False)
        self.policy, self.task, self.sampling, self.tools, self.judge = policy, task, sampling, tools, judge
        self.lora, self.gradient_checkpointing, self.optimizer_config = lora, gradient_checkpointing, optimizer
        self.swirl, self.evaluation, self.export_config = swirl, evaluation, export
        self.micro_batch_tokens = check_token_budget(micro_batch_tokens, "model.micro_batch_tokens")
        self.automatic_optimization = self.objective.automatic_optimization
        self.strict_loading = lora.r <= 0
        from swirl_lightning.core.models import check_adapter_dir, check_model_name, load_tokenizer
        from swirl_lightning.core.tools import tool_tags
        from swirl_lightning.judging.base import make_step_judge
        from swirl_lightning.judging.steps import FailureBudget
        from swirl_lightning.rollout.conversation import ChatRenderer, RolloutSettings
        from swirl_lightning.training.sampler import PolicySampler

        # Every name and path is checked here, before any weights load: a typo costs a second, not a model load.
        check_model_name(policy.name)
        if policy.adapter:
            check_adapter_dir(policy.adapter)
        self.tokenizer = load_tokenizer(policy.name)
        # The task's tools, step cap, prompt framing and outcome judge; the step judge of `judge`.
        self.rollout_settings = RolloutSettings.for_task(task, tools, renderer=ChatRenderer(self.tokenizer),
                                                         policy_name=policy.label)
        self.action_tags = tool_tags(self.rollout_settings.tools)
        self.sampler = PolicySampler(engine, policy, lora, self.tokenizer, self.rollout_settings.stop_strings,
                                     max(sampling.max_context_tokens, evaluation.sampling.max_context_tokens))
        self.step_judge = make_step_judge(judge.name, judge.options, tools=tools)
        self.judge_failures = FailureBudget.from_config(judge)  # the run's, in training (the swirl rewards)
        self.scorer: ActionScorer = None  # type: ignore[assignment]  # built by configure_model, before any use
        self.reference: ActionScorer | None = None
        self.batch_tokens = 0
        self.live_evaluation: LiveEvaluation | None = None
        self._batch_started = 0.0
        self.scalars = BatchScalars()
        self.loaded_step, self.loaded_checkpoint = 0, False  # the optimizer step of the checkpoint loaded, if any

    # -- the policy -----------------------------------------------------------------------------

    def configure_model(self) -> None:
        if self.scorer is not None:
            return
        device = self.trainer.strategy.root_device if self._trainer is not None else self.device
        lm = load_trainable_policy(self.policy, self.lora, device, gradient_checkpointing=self.gradient_checkpointing)
        if self.objective.needs_reference and self.lora.r <= 0:
            self.reference = ActionScorer(copy.deepcopy(lm)).requires_grad_(False)
        self.scorer = ActionScorer(lm, checkpointing=self.gradient_checkpointing)
        if self._device_mesh is not None:
            if self.lora.quantize != "none":
                raise ValueError("lora.quantize cannot be combined with FSDP2 sharding")
            shard_with_fsdp2([self.scorer, self.reference], self._device_mesh)

    def objective_parts(self) -> ObjectiveParts:
        """What the objective (and the reward probe) may use of this module, for the batch starting now."""
        policy = TrainedPolicy(self.scorer, self.generation_backend, self.sampling, device=self.device,
                               pad_token_id=self.tokenizer.pad_token_id, action_tags=self.action_tags,
                               version=self.weights_step)
        return ObjectiveParts(policy, self.step_judge, partial(frozen_reference, self.scorer, self.reference),
                              self.judge_failures, self.global_step, self.global_rank,
                              self.trainer.world_size if self._trainer is not None else 1)

    # -- training -------------------------------------------------------------------------------

    def configure_optimizers(self):
        from swirl_lightning.training.optimizer import build_optimizer

        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        total *= self.objective.updates_per_batch
        return build_optimizer(self.optimizer_config, (p for p in self.scorer.parameters() if p.requires_grad), total)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        norm = gradient_norm(self.scorer.parameters())
        if norm is not None:
            self.scalars.add({"train/grad_norm": norm})  # before clipping; the mean over the batch's updates
        clip = gradient_clip_val or self.optimizer_config.max_grad_norm
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # Zeroed after the step, not (as Lightning does) after the training_step of the window's first batch: by then
        # the earlier micro-batches of that batch have backpropagated (backward_in_passes).
        optimizer.zero_grad()

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        """No-op: :meth:`optimizer_step` zeroes the gradients."""

    def configure_callbacks(self):
        self.live_evaluation = LiveEvaluation()
        return [self.live_evaluation, PolicyExport(self.export_config)]

    def on_fit_start(self) -> None:
        print(f"[rank {self.global_rank}/{self.trainer.world_size}] {type(self.trainer.strategy).__name__}: "
              f"{describe_parameters(self.scorer)}", flush=True)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        """Prepare the batch and split it into micro-batches, then per update a forward and backward pass over each;
        with manual optimization, this steps the optimizer itself."""
        parts = self.objective_parts()
        prepared = self.objective.prepare(parts, batch)
        self.log_prepared(prepared)
        if not prepared.updates:  # nothing to learn from: None makes Lightning skip the update
            return None if self.automatic_optimization else torch.zeros((), device=self.device)
        passes = self.objective.micro_batches(prepared.data, self.micro_batch_tokens)
        for _ in range(prepared.updates):
            loss, metrics = backward_in_passes(
                passes, lambda data: self.objective.loss(parts, dataclasses.replace(prepared, data=data)),
                self.backward_pass, leave_last=self.automatic_optimization)
            check_finite(loss, self.global_step)  # before any step: a NaN in any pass makes the whole loss NaN
            if not self.automatic_optimization:  # the next update samples and scores under the new weights
                self.configure_gradient_clipping(self.optimizers())
                self.optimizers().step()
                self.optimizers().zero_grad()  # after the step, as optimizer_step does
                self.lr_schedulers().step()
        self.log_scalars({"train/loss": loss, **metrics}, prepared.size, prog_bar=("train/loss",))
        return loss if self.automatic_optimization else loss.detach()

    def backward_pass(self, loss: Tensor) -> None:
        """One pass's backward through the strategy (its precision, its hooks), scaled as Lightning scales the loss of
        an automatic update under gradient accumulation; a plain one without a trainer."""
        if self._trainer is None:
            loss.backward()
        elif self.automatic_optimization:
            self.trainer.strategy.backward(loss / self.trainer.accumulate_grad_batches, None)
        else:
            self.manual_backward(loss)

    def log_scalars(self, values: dict[str, float | Tensor], batch_size: int, prog_bar: tuple[str, ...] = ()) -> None:
        """Figures of this batch: to the loggers at the batch's starting step (see :mod:`.scalars`), and to
        Lightning's progress bar and callback metrics."""
        for name, value in values.items():
            self.log(name, value, logger=False, prog_bar=name in prog_bar, batch_size=batch_size)
        self.scalars.add(values)

    def log_prepared(self, prepared: PreparedBatch) -> None:
        """What the objective measured while preparing a batch: its own figures, and its rewards' mean and spread, the
        GOOD rate (with the judge's verdicts), a histogram, and the mean reward at each step index this batch holds
        (to the loggers only: the indices differ from batch to batch)."""
        self.batch_tokens = prepared.tokens
        if prepared.metrics:
            self.log_scalars(prepared.metrics, prepared.size)
        if (rewards := prepared.rewards) is not None:
            figures = reward_figures(rewards.values, rewards.step_index, rewards.good)
            by_step = {name: value for name, value in figures.items() if "/reward_by_step/" in name}
            self.log_scalars({n: v for n, v in figures.items() if n not in by_step}, rewards.values.numel())
            self.scalars.add(by_step)
            self.scalars.add_histogram("train/reward", rewards.values)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._batch_started = time.perf_counter()
        self.scalars.start(self.global_step)
        self.log_scalars({"train/lr": self.optimizers().param_groups[0]["lr"]}, batch_size=1)  # the rate it trains at

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        elapsed = time.perf_counter() - self._batch_started
        self.log_scalars({"train/tokens_per_s": self.batch_tokens / max(elapsed, 1e-9)}, batch_size=1)
        self.scalars.write(self.loggers, self.trainer.log_every_n_steps, stepped=self.global_step > self.scalars.step)

    # -- live evaluation (summarised by the LiveEvaluation callback) ----------------------------

    def rollout(self, examples: list[Example]) -> list[Trajectory]:
        """Roll the current policy out with tools on ``examples`` (each step judged when ``evaluation.judge_steps``)."""
        from swirl_lightning.rollout.evaluation import evaluate

        judge, samples = self.step_judge if self.evaluation.judge_steps else None, self.evaluation.num_samples
        with self.generation_backend(self.evaluation.sampling) as backend:
            _, trajectories = evaluate(backend, examples, self.rollout_settings, num_samples=samples, step_judge=judge)
        return trajectories

    def generation_backend(self, sampling: SamplingConfig) -> contextlib.AbstractContextManager[GenerationBackend]:
        """A backend sampling with the current weights, of optimizer step :attr:`weights_step` (:mod:`.sampler`)."""
        root = self.trainer.default_root_dir if self._trainer is not None else "."
        return self.sampler.backend(self.scorer, sampling, self.weights_step, Path(root), self.loaded_checkpoint)

    weights_step = property(lambda self: max(self.global_step, self.loaded_step), doc="The weights' optimizer step.")

    def teardown(self, stage: str) -> None:
        self.sampler.close()

    def evaluate_batch(self, batch: list[Example], batch_idx: int = 0) -> list[Trajectory]:
        """The rollouts of one evaluation batch: from the evaluation's journal (:mod:`swirl_lightning.rollout.journal`)
        for the questions a killed run of the same evaluation finished, live for the others."""
        journal = self.live_evaluation.journal if self.live_evaluation is not None else None
        return journal.roll_out(batch, self.rollout) if journal is not None else self.rollout(batch)

    validation_step = test_step = predict_step = evaluate_batch

    # -- checkpoints (the export at the end of fit is the PolicyExport callback's) --------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.lora.r > 0:
            checkpoint["state_dict"] = trained_weights(self.scorer, checkpoint["state_dict"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.loaded_step, self.loaded_checkpoint = int(checkpoint.get("global_step", 0)), True
        check_checkpoint_weights(checkpoint.get("state_dict"), self.state_dict())
