"""The LightningModule: a causal LM policy trained with one :mod:`objective <.objectives>`, validated live.

- Training: the objective (``sft``, ``offline`` or ``swirl``) turns each batch into an update; see
  :mod:`.objectives` for each one's algorithm.
- Validation, test and predict roll the policy out live with tools on held-out questions; the
  :class:`~.callbacks.LiveEvaluation` callback (added by :meth:`configure_callbacks`) summarises and logs them.
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
import time
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as L
import torch
from torch import Tensor

from swirl_lightning.core.config import EngineConfig, JudgeConfig, PolicyConfig, SamplingConfig, TaskConfig, ToolsConfig
from swirl_lightning.core.trajectory import Example, Trajectory
from swirl_lightning.rollout.backend import GenerationBackend
from swirl_lightning.training.config import EvaluationConfig, ExportConfig, LoraConfig, OptimizerConfig, SwirlConfig
from swirl_lightning.training.objectives import make_objective
from swirl_lightning.training.policy import (
    ActionScorer,
    describe_parameters,
    export_policy,
    load_trainable_policy,
    shard_with_fsdp2,
)
from swirl_lightning.training.scalars import BatchScalars, gradient_norm, reward_figures
from swirl_lightning.training.sequences import TrainingBatch


class SwirlModule(L.LightningModule):
    """Trains a causal LM policy with ``sft``, ``offline`` or ``swirl``; validates with live rollouts."""

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
        optimizer: OptimizerConfig = OptimizerConfig(),
        swirl: SwirlConfig = SwirlConfig(),
        evaluation: EvaluationConfig = EvaluationConfig(),
        export: ExportConfig = ExportConfig(),
    ):
        """
        Args:
            policy: The policy (the CLI links it to the shared ``policy`` group).
            task: The questions (linked to ``task``).
            sampling: How ``swirl`` samples its actions (linked to ``sampling``).
            engine: What samples: the in-process engine or a vLLM server (linked to ``engine``).
            tools: The tools of live evaluation (linked to ``tools``).
            judge: The ``swirl`` reward and the validation GOOD rate (linked to ``judge``).
            objective: ``sft`` (NLL of the actions), ``offline`` (judged-reward-weighted NLL) or ``swirl``
                (online step-level RL).
            lora: Which weights train: LoRA (``lora.r > 0``, optionally on 4/8-bit weights) or all.
            gradient_checkpointing: Recompute each layer's activations in the backward pass: far less memory, about a
                third more compute. ``auto``: for batches of more than 1,024 tokens (rows x length) only.
            optimizer: Optimizer and schedule.
            swirl: The ``swirl`` update: group size, baseline, KL, clipping.
            evaluation: Live rollouts of validation, test and predict.
            export: The policy saved at the end of ``fit``.
        """
        super().__init__()
        if lora.quantize != "none" and policy.adapter:
            raise ValueError("policy.adapter with lora.quantize: export the merged model first, then quantize it")
        self.objective = make_objective(objective)
        # Not to the loggers: the CLI logs the whole resolved config (trainer included) with the val/* figures.
        self.save_hyperparameters(logger=False)
        self.policy, self.task, self.sampling, self.tools, self.judge = policy, task, sampling, tools, judge
        self.lora, self.gradient_checkpointing, self.optimizer_config = lora, gradient_checkpointing, optimizer
        self.swirl, self.evaluation, self.export_config = swirl, evaluation, export
        self.automatic_optimization = self.objective.automatic_optimization
        self.strict_loading = lora.r <= 0
        from swirl_lightning.core.models import check_adapter_dir, check_model_name, load_tokenizer
        from swirl_lightning.training.sampler import PolicySampler

        # Every name and path is checked here, before any weights load: a typo costs a second, not a model load.
        check_model_name(policy.name)
        if policy.adapter:
            check_adapter_dir(policy.adapter)
        self.tokenizer = load_tokenizer(policy.name)
        self.sampler = PolicySampler(engine, policy, lora, self.tokenizer, self.rollout_settings().stop_strings,
                                     max(sampling.max_context_tokens, evaluation.sampling.max_context_tokens))
        self.step_judge()
        self.scorer: ActionScorer = None  # type: ignore[assignment]  # built by configure_model, before any use
        self.reference: ActionScorer | None = None
        self.batch_tokens = 0
        self._batch_started = 0.0
        self.scalars = BatchScalars()
        self.loaded_step, self.loaded_checkpoint = 0, False  # the optimizer step of the checkpoint loaded, if any

    # -- the policy -----------------------------------------------------------------------------

    def configure_model(self) -> None:
        if self.scorer is not None:
            return
        device = self.trainer.strategy.root_device if self._trainer is not None else self.device
        lm = load_trainable_policy(self.policy, self.lora, device, gradient_checkpointing=self.gradient_checkpointing)
        if self.objective.name == "swirl" and self.swirl.kl_beta > 0 and self.lora.r <= 0:
            self.reference = ActionScorer(copy.deepcopy(lm)).requires_grad_(False)
        self.scorer = ActionScorer(lm, checkpointing=self.gradient_checkpointing)
        if self._device_mesh is not None:
            if self.lora.quantize != "none":
                raise ValueError("lora.quantize cannot be combined with FSDP2 sharding")
            shard_with_fsdp2([self.scorer, self.reference], self._device_mesh)

    @contextlib.contextmanager
    def reference_policy(self):
        """The frozen initial policy: the LoRA adapter disabled, or the frozen copy."""
        if self.reference is not None:
            self.reference.eval()  # only while in use: Lightning expects train mode everywhere between steps
            try:
                yield self.reference
            finally:
                self.reference.train()
        else:
            with self.scorer.lm.disable_adapter():
                yield self.scorer

    def mask_dtype(self) -> torch.dtype:
        """The dtype of the 4D attention masks: the autocast dtype, else the weights'."""
        if torch.is_autocast_enabled(self.device.type):
            return torch.get_autocast_dtype(self.device.type)
        return next(p.dtype for p in self.scorer.parameters() if p.is_floating_point())

    @cached_property
    def _rollout_settings(self):
        from swirl_lightning.rollout.conversation import ChatRenderer, RolloutSettings

        return RolloutSettings.for_task(self.task, self.tools, renderer=ChatRenderer(self.tokenizer),
                                        policy_name=self.policy.label)

    def rollout_settings(self):
        """The task's tools, step cap, prompt framing and outcome judge (built once)."""
        return self._rollout_settings

    @cached_property
    def _step_judge(self):
        from swirl_lightning.judging.base import make_step_judge

        return make_step_judge(self.judge.name, self.judge.options, tools=self.tools)

    def step_judge(self):
        """The step judge of ``judge`` (built once)."""
        return self._step_judge

    # -- training -------------------------------------------------------------------------------

    def configure_optimizers(self):
        from swirl_lightning.training.optimizer import build_optimizer

        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        if not self.objective.automatic_optimization:
            total *= self.swirl.ppo_epochs
        return build_optimizer(self.optimizer_config, (p for p in self.scorer.parameters() if p.requires_grad), total)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        norm = gradient_norm(self.scorer.parameters())
        if norm is not None:
            self.scalars.add({"train/grad_norm": norm})  # before clipping; the mean over the batch's updates
        clip = gradient_clip_val or self.optimizer_config.max_grad_norm
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def configure_callbacks(self):
        from swirl_lightning.training.callbacks import LiveEvaluation

        self.live_evaluation = LiveEvaluation()
        return [self.live_evaluation]

    def on_fit_start(self) -> None:
        print(f"[rank {self.global_rank}/{self.trainer.world_size}] {type(self.trainer.strategy).__name__}: "
              f"{describe_parameters(self.scorer)}", flush=True)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.objective.training_step(self, batch)

    def log_scalars(self, values: dict[str, float | Tensor], batch_size: int, prog_bar: tuple[str, ...] = ()) -> None:
        """Figures of this batch: to the loggers at the batch's starting step (see :mod:`.scalars`), and to
        Lightning's progress bar and callback metrics."""
        for name, value in values.items():
            self.log(name, value, logger=False, prog_bar=name in prog_bar, batch_size=batch_size)
        self.scalars.add(values)

    def log_row_batch(self, batch: TrainingBatch, loss: Tensor, entropy: Tensor) -> None:
        """The training scalars of a batch of trajectory rows."""
        self.batch_tokens = batch.num_tokens
        self.log_scalars({"train/loss": loss, "train/entropy": entropy,
                          "train/action_tokens": float((batch.segment_ids > 0).sum())},
                         len(batch.example_ids), prog_bar=("train/loss",))

    def log_rewards(self, rewards: Tensor, step_index: Tensor, good: Tensor | None = None) -> None:
        """Reward mean and spread, the GOOD rate (with ``good``: the judge's verdicts), a histogram, and the mean
        reward at each step index this batch holds (to the loggers only: the indices differ from batch to batch)."""
        figures = reward_figures(rewards, step_index, good)
        by_step = {name: value for name, value in figures.items() if "/reward_by_step/" in name}
        self.log_scalars({name: value for name, value in figures.items() if name not in by_step}, rewards.numel())
        self.scalars.add(by_step)
        self.scalars.add_histogram("train/reward", rewards)

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

        settings = self.rollout_settings()
        with self.generation_backend(self.evaluation.sampling) as backend:
            _, trajectories = evaluate(backend, examples, settings, num_samples=self.evaluation.num_samples,
                                       step_judge=self.step_judge() if self.evaluation.judge_steps else None)
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
        journal = getattr(getattr(self, "live_evaluation", None), "journal", None)
        return journal.roll_out(batch, self.rollout) if journal is not None else self.rollout(batch)

    validation_step = test_step = predict_step = evaluate_batch

    # -- checkpoints and export -----------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from torch.distributed.fsdp import FSDPModule

        if self.lora.r > 0 and not isinstance(self.scorer, FSDPModule):
            trained = {f"scorer.{n}" for n, p in self.scorer.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trained}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.loaded_step, self.loaded_checkpoint = int(checkpoint.get("global_step", 0)), True
        saved = checkpoint.get("state_dict")
        unknown = set(saved) - set(self.state_dict()) if isinstance(saved, dict) else set()
        if unknown:
            raise ValueError(f"checkpoint holds {len(unknown)} weights this policy lacks, e.g. {sorted(unknown)[:3]}; "
                             "was it trained with another policy or LoRA setting?")

    def on_fit_end(self) -> None:
        from torch.distributed.fsdp import FSDPModule

        if not self.export_config.enabled:
            return
        if isinstance(self.scorer, FSDPModule):
            print("export skipped under FSDP2: convert the sharded checkpoint instead", flush=True)
        elif self.global_rank == 0:  # beside the logs, not in them (TensorBoard would scan the weights' folder)
            self.export(self.export_config.dir or Path(self.trainer.default_root_dir) / "export")

    def export(self, directory: str | Path) -> Path:
        """Save the policy in Hugging Face format (see :func:`~.policy.export_policy`)."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        trained_on = [t.example_id for t in getattr(datamodule, "train_trajectories", [])]
        return export_policy(self.scorer, self.tokenizer, directory, policy=self.policy, lora=self.lora,
                             export=self.export_config, objective=self.objective.name, training_questions=trained_on)
