"""Typed options of the LightningModule: the policy, the optimizer, the ``swirl`` objective, live evaluation.

Attribute docstrings are the ``swirl fit --help`` text (LightningCLI reads them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class PolicyConfig:
    """The causal LM being trained and how it is loaded."""

    name: str = "smollm2-135m-instruct"
    """Model: an alias (``smollm2-135m-instruct``, ``tiny-random``), a local folder or a hub id."""
    adapter: str | None = None
    """A PEFT adapter (e.g. a warm-start ``sft`` export) merged into the weights before training, so the KL
    reference is the policy with it."""
    dtype: str = "float32"
    """Weight dtype when loading (``float32``, ``bfloat16``); mixed precision is ``trainer.precision``."""
    attn_implementation: str = "sdpa"
    """``sdpa`` or ``eager`` (both take the 4D masks of packed groups)."""
    lora_r: int = 0
    """LoRA rank; 0 trains every weight."""
    lora_alpha: int = 16
    """LoRA scaling numerator: updates are scaled by ``lora_alpha / lora_r``."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    lora_target_modules: list[str] | str = "all-linear"
    """Modules that get LoRA adapters (PEFT names, or ``all-linear``)."""
    quantize: Literal["none", "8bit", "4bit"] = "none"
    """Load the frozen base weights in 8 or 4 bits with bitsandbytes (needs LoRA)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, about a third more compute)."""
    export: bool = True
    """At the end of ``fit``, save the policy in Hugging Face format: the LoRA adapter, or the whole model
    (also when a warm-start adapter was merged in), with the tokenizer."""
    export_dir: str | None = None
    """Where the export goes; default ``<log_dir>/export``."""
    export_dtype: str | None = None
    """Cast the exported LoRA adapter's weights to this dtype (``bfloat16`` halves a file meant to be shipped)."""


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


@dataclass
class SwirlConfig:
    """The ``swirl`` objective: sampling, judging and the policy-gradient update."""

    group_size: int = 4
    """Actions G sampled per state."""
    temperature: float = 1.0
    """Sampling temperature of the G actions."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    max_new_tokens: int = 128
    """Most tokens of one sampled action."""
    sampling_batch_size: int = 16
    """(state, action) conversations decoded together."""
    judge: str = "reference"
    """Registered step judge that gives the reward: ``reference`` (GSM8K solutions) or ``process`` (an LM)."""
    judge_options: dict[str, Any] = field(default_factory=dict)
    """Options of the judge, e.g. ``{model: smollm2-135m-instruct}`` for ``process``."""
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


@dataclass
class EvaluationConfig:
    """Live rollouts for validation, test and predict."""

    max_new_tokens: int = 192
    """Most tokens per model turn."""
    temperature: float = 0.0
    """0 for greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass (with ``temperature > 0``)."""
    batch_size: int = 8
    """Conversations decoded together."""
    max_context_tokens: int = 4096
    """Most tokens in one conversation (prompt, turns and tool results)."""
    num_samples: int = 1
    """Rollouts per question."""
    step_judge: str | None = "reference"
    """Judge for ``step_good_rate`` (``reference`` is cheap for GSM8K; ``process`` loads an LM); null for none."""
    judge_options: dict[str, Any] = field(default_factory=dict)
    """Options of the step judge, e.g. ``{model: smollm2-135m-instruct}``."""
    tool_timeout_s: float = 10.0
    """Seconds before a tool call is abandoned (the model sees an error)."""
    log_trajectories: int = 4
    """Trajectories shown as text in TensorBoard after each evaluation."""
    predictions: str | None = None
    """Where ``swirl predict`` writes trajectories (JSONL); default ``<log_dir>/predictions.jsonl``."""
    seed: int = 0
    """Sampling seed (with ``temperature > 0``)."""
