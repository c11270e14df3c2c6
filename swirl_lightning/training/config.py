"""Typed options of training only: what is trained (LoRA, quantization), the optimizer, the data and live
evaluation. Each objective's own options sit with it (``swirl``'s in :mod:`.objectives.swirl`). The groups every
command shares (policy, task, sampling, tools, judge) are in :mod:`swirl_lightning.core.config`.

Attribute docstrings are the ``swirl fit --help`` text (LightningCLI reads them). Values are checked in
``__post_init__``, when the command line is parsed, before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from swirl_lightning.core.config import SamplingConfig, greedy


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass
class LoraConfig:
    """Which weights train: LoRA adapters (optionally on 4/8-bit base weights), or every weight."""

    r: int = 0
    """LoRA rank; 0 trains every weight."""
    alpha: int = 16
    """LoRA scaling numerator: updates are scaled by ``alpha / r``."""
    dropout: float = 0.0
    """Dropout on the LoRA input."""
    target_modules: list[str] | str = "all-linear"
    """Modules that get LoRA adapters (PEFT names, or ``all-linear``)."""
    quantize: Literal["none", "8bit", "4bit"] = "none"
    """Load the frozen base weights in 8 or 4 bits with bitsandbytes (needs LoRA)."""

    def __post_init__(self) -> None:
        _check(self.r >= 0, f"lora.r: expected 0 (train every weight) or a positive rank, got {self.r}")
        _check(self.alpha > 0, f"lora.alpha: expected a positive number, got {self.alpha}")
        _check(0 <= self.dropout < 1, f"lora.dropout: expected a value in [0, 1), got {self.dropout}")
        _check(self.quantize == "none" or self.r > 0,
               "lora.quantize needs LoRA (lora.r > 0): quantized weights cannot be trained")


@dataclass
class ExportConfig:
    """The policy saved at the end of ``fit``, in Hugging Face format."""

    enabled: bool = True
    """Save the LoRA adapter (naming the warm-start adapter it was trained on, if any), or the whole model, with the
    tokenizer."""
    dir: str | None = None
    """Where the export goes; default ``<trainer.default_root_dir>/export`` (beside the logs, not in them)."""
    dtype: str | None = None
    """Cast the exported LoRA adapter's weights to this dtype (``bfloat16`` halves a file meant to be shipped)."""
    overwrite: bool = False
    """Replace what the export folder holds; without it (or ``fit --overwrite true``, which also removes an earlier
    run's checkpoints), a new ``fit`` refuses to start when the folder holds anything, a resumed one when it holds a
    file no export wrote."""


@dataclass
class OptimizerConfig:
    """Optimizer and learning-rate schedule."""

    name: Literal["adamw", "adamw8bit"] = "adamw"
    """``adamw`` (torch) or ``adamw8bit`` (bitsandbytes, 8-bit optimizer states)."""
    lr: float = 1e-4
    """Peak learning rate."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's moment decay rates."""
    warmup_steps: int = 0
    """Linear warm-up from 0 over this many optimizer steps."""
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    """After warm-up: constant, or cosine/linear decay to 0 at the last step."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient norm to this value; null for no clipping."""

    def __post_init__(self) -> None:
        _check(self.lr > 0, f"optimizer.lr: expected a number > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"optimizer.weight_decay: expected >= 0, got {self.weight_decay}")
        _check(self.warmup_steps >= 0, f"optimizer.warmup_steps: expected >= 0, got {self.warmup_steps}")
        _check(self.max_grad_norm is None or self.max_grad_norm > 0,
               f"optimizer.max_grad_norm: expected a number > 0 or null, got {self.max_grad_norm}")


@dataclass
class EvaluationConfig:
    """Live rollouts of validation, test and predict (the task, tools and judge are the shared groups')."""

    sampling: SamplingConfig = field(default_factory=greedy)
    """How evaluation turns are sampled (greedy by default)."""
    num_samples: int = 1
    """Rollouts per question."""
    judge_steps: bool = True
    """Judge every step with ``judge`` for ``step_good_rate`` (off: no judge runs in evaluation)."""
    log_trajectories: int = 4
    """Trajectories shown step by step as text in TensorBoard after each evaluation (a table lists every rollout;
    the Trajectories dashboard of ``swirl-tensorboard`` shows them all)."""
    predictions: str | None = None
    """Where ``swirl predict`` writes trajectories (JSONL); default ``<log_dir>/predictions.jsonl``."""

    def __post_init__(self) -> None:
        _check(self.num_samples >= 1, f"evaluation.num_samples: expected a positive integer, got {self.num_samples}")
        _check(self.log_trajectories >= 0, f"evaluation.log_trajectories: expected >= 0, got {self.log_trajectories}")


@dataclass
class TrainDataConfig:
    """Which trajectories train the policy, and how they become batches (the questions are ``task``'s)."""

    path: str | None = None
    """Trajectory JSONL: ``swirl generate``'s output or ``swirl filter``'s kept file."""
    reference: bool = False
    """Instead of a file, the task's gold reference trajectories of ``task.limit`` questions (GSM8K: worked
    solutions as calculator steps)."""
    filter: Literal["none", "process", "outcome", "process+outcome", "step"] = "none"
    """Keep: all, those with every step GOOD by ``judge``, those with a right answer, both, or (``step``) each
    trajectory's good prefix: ``swirl`` states up to the first BAD step, ``sft``/``offline`` GOOD steps."""
    reward: str = "outcome"
    """``offline`` action weights: ``outcome`` (the trajectory's), ``step`` (``Step.reward``) or ``judge`` (the
    stored score of ``judge``)."""
    weighting: Literal["reward", "advantage"] = "reward"
    """``offline``: the reward itself, or the reward minus the mean reward of all steps of the same question."""
    max_length: int = 2048
    """Most tokens in one row (a whole trajectory; for ``swirl``, a state)."""
    overlength: Literal["drop", "truncate"] = "drop"
    """Longer rows are dropped, or cut at ``max_length`` (actions past the cut are lost); counted and warned."""
    batch_size: int = 4
    """Rows per batch and process: trajectories (``sft``/``offline``) or states (``swirl``)."""
    retokenize: bool = False
    """Render every trajectory from its text even when token ids are stored (another model's run)."""
    shuffle: bool = True
    """Visit the length-grouped batches in a new seeded order each epoch."""
    order_seed: int = 0
    """Seed of the batch order and of the held-out validation questions."""

    def __post_init__(self) -> None:
        _check(self.max_length >= 1, f"data.train.max_length: expected a positive integer, got {self.max_length}")
        _check(self.batch_size >= 1, f"data.train.batch_size: expected a positive integer, got {self.batch_size}")


@dataclass
class ValidationDataConfig:
    """The questions live evaluation rolls out."""

    questions: int = 8
    """Validation questions: held out from the training questions by example id (or the first of ``split``)."""
    split: str | None = None
    """Take the validation questions from this task split instead; training data of these ids is removed."""
    test_split: str = "validation"
    """Task split for ``swirl test`` and ``swirl predict``."""
    test_limit: int | None = 50
    """Questions for ``swirl test`` and ``swirl predict``; null for the whole split."""

    def __post_init__(self) -> None:
        _check(self.questions >= 1, f"data.validation.questions: expected a positive integer, got {self.questions}")
        _check(self.test_limit is None or self.test_limit >= 1,
               f"data.validation.test_limit: expected a positive integer or null, got {self.test_limit}")
