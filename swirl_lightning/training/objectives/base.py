"""What a training objective is, what it gets, and the registry of objectives.

An :class:`Objective` turns a batch into a loss and its metrics (as torchtune's losses do): it gets
:class:`ObjectiveParts`, the narrow part of the trainer it may use (the policy that scores and samples, the step judge,
the frozen reference policy), never the LightningModule. The module owns the loop: per batch it calls
:meth:`Objective.prepare` once (``swirl`` samples and judges there) and :meth:`Objective.micro_batches` once, then
:meth:`Objective.loss` once per update and micro-batch, and does the backward passes, the optimizer step and the
logging itself.

Objectives register through the ``register_objectives`` hook, the built-ins included (:mod:`.default_plugins` is
their plugin, loaded by name), and configs pick one by name (``model.objective``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import Tensor

from swirl_lightning.core.trajectory import State, Trajectory
from swirl_lightning.judging.base import StepJudge
from swirl_lightning.judging.steps import FailureBudget

SampledActions = list[list[tuple[list[int], str]]]
"""G sampled actions per state, each as (token ids, text)."""


class Scorer(Protocol):
    """A policy's scoring pass over packed or padded rows."""

    def __call__(self, input_ids: Tensor, attention_mask: Tensor, segment_ids: Tensor,
                 position_ids: Tensor | None = None, logit_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Log-probs ``[B, T]`` (0 off action tokens) and the mean entropy at the action tokens."""


class TrainablePolicy(Protocol):
    """The policy being trained, as an objective sees it: it scores (with gradients) and samples."""

    device: torch.device
    """Where its weights, and so the batches it scores, live."""
    pad_token_id: int
    """The tokenizer's padding id (packed rows are padded with it)."""
    action_tags: dict[str, str]
    """Tool name -> tag: how a sampled action's text is parsed."""
    version: int
    """The optimizer step of the weights held now."""

    def score(self, input_ids: Tensor, attention_mask: Tensor, segment_ids: Tensor,
              position_ids: Tensor | None = None, logit_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Log-probs ``[B, T]`` of the action tokens under the current weights (with gradients) and their mean
        entropy."""

    def sample(self, states: Sequence[State], group_size: int, seed: int) -> tuple[SampledActions, int]:
        """``group_size`` fresh actions per state (one model turn each, no tool runs) drawn with run seed ``seed``,
        and the version of the weights that sampled them."""

    def mask_dtype(self) -> torch.dtype:
        """The dtype of 4D attention masks for :meth:`score`."""


@dataclass(frozen=True)
class ObjectiveParts:
    """What an objective may use of the trainer, for one batch."""

    policy: TrainablePolicy
    judge: StepJudge
    """The step judge (``judge``): the reward of freshly sampled actions."""
    reference: Callable[[], AbstractContextManager[Scorer]]
    """The frozen initial policy (the warm start) while the ``with`` block lasts."""
    failures: FailureBudget
    """The run's judge-failure budget: counting into it stops the run above ``judge.max_failure_rate``."""
    step: int = 0
    """The optimizer step this batch starts from."""
    rank: int = 0
    world_size: int = 1


@dataclass
class Rewards:
    """A batch's rewards, logged by the module as ``train/reward_mean``, ``_std``, ``_by_step/k``, ``good_rate``."""

    values: Tensor
    step_index: Tensor
    """The step index of each reward's state."""
    good: Tensor | None = None
    """The judge's verdict on each (GOOD or not), when there is one."""


@dataclass
class PreparedBatch:
    """A batch made ready for its updates, with what was measured while preparing it."""

    data: Any
    """What :meth:`Objective.loss` reads."""
    size: int
    """Rows, trajectories or states in the batch (the logging's batch size)."""
    tokens: int
    """Real (non-padding) tokens the updates process (``train/tokens_per_s``)."""
    updates: int = 1
    """Optimizer updates this batch gives (0: nothing to learn from); at most 1 with automatic optimization."""
    metrics: dict[str, float | Tensor] = field(default_factory=dict)
    """Figures of the batch itself, logged once under these names."""
    rewards: Rewards | None = None


class Objective:
    """One training objective: hyperparameters in, (loss, metrics) out. Subclass it and register the class through
    the ``register_objectives`` hook; a config names it by :attr:`name`."""

    name: ClassVar[str]
    trains_on: ClassVar[Literal["rows", "states"]] = "rows"
    """``rows``: one token row per trajectory with per-action weights; ``states``: the distinct states."""
    automatic_optimization: ClassVar[bool] = True
    """True: a batch gives at most one update, stepped by Lightning (gradient accumulation works); False: a batch may
    give several, and the module steps the optimizer after each."""
    Config: ClassVar[type | None] = None
    """The dataclass of its hyperparameters (``None``: it has none)."""

    def __init__(self, config: Any = None) -> None:
        self.config = config

    @classmethod
    def weights(cls, trajectories: Sequence[Trajectory], reward: str, weighting: str) -> list[list[float]]:
        """Per-action weights of each trajectory (``rows`` objectives; ``reward`` and ``weighting`` are
        ``data.train``'s)."""
        return [[1.0] * len(t.steps) for t in trajectories]

    @property
    def updates_per_batch(self) -> int:
        """Optimizer updates one batch gives at most (the schedule's length counts them)."""
        return 1

    @property
    def needs_reference(self) -> bool:
        """Whether :meth:`loss` reads the reference policy (without LoRA, a frozen copy of the weights is kept)."""
        return False

    def prepare(self, parts: ObjectiveParts, batch: Any) -> PreparedBatch:
        """Once per batch, before its updates (``swirl`` samples and judges here)."""
        raise NotImplementedError

    def micro_batches(self, data: Any, max_tokens: int) -> list[tuple[Any, int]]:
        """Once per batch: its ``data`` split into the passes of :meth:`loss` (each of at most ``max_tokens`` tokens,
        rows x length, or a single row), each with its action tokens. The module weights each pass's loss and metrics
        by its share of the batch's action tokens, so a loss that is a mean over action tokens is the same for any
        split. The default is one pass of the whole batch."""
        return [(data, 1)]

    def loss(self, parts: ObjectiveParts, prepared: PreparedBatch) -> tuple[Tensor, dict[str, float | Tensor]]:
        """Once per update and pass (``prepared.data`` is one of :meth:`micro_batches`): the loss under the current
        weights and its metrics (logged under their names)."""
        raise NotImplementedError


def check_finite(loss: Tensor, step: int) -> None:
    """Stop before a non-finite loss reaches the weights: data out of range must not ruin a model silently."""
    if not torch.isfinite(loss):
        raise ValueError(f"the training loss is {loss.item()} at step {step}: the batch's rewards or weights are out "
                         "of range; the weights were not updated")


# ----------------------------------------------------------------------------------------------------
# The registry

DEFAULT_PLUGIN = "swirl_lightning.training.objectives.default_plugins"
"""The plugin of the built-in objectives, loaded by name (as llm loads its ``default_plugins``): each objective module
imports this one, so this one must not import them."""


def available_objectives(pm: Any = None) -> dict[str, type[Objective]]:
    """Objective name -> class, from every plugin's ``register_objectives`` (the built-ins always included).

    A plugin whose hook raises is skipped with a warning naming its distribution; two registrations of one name
    are an error naming both.
    """
    from swirl_lightning.core.plugins import collect_registrations

    def check(cls: Any, name: str | None, owner: str) -> tuple[str, type[Objective]]:
        objective_name = name or getattr(cls, "name", None)
        if not (isinstance(cls, type) and issubclass(cls, Objective)) or not objective_name:
            raise ValueError(f"{owner}: register(cls) expects a subclass of "
                             "swirl_lightning.training.objectives.Objective with a name")
        return objective_name, cls

    return collect_registrations("register_objectives", check, builtin=DEFAULT_PLUGIN, pm=pm)


def objective_class(name: str, pm: Any = None) -> type[Objective]:
    """The registered objective ``name``; a clear error naming the known ones otherwise."""
    objectives = available_objectives(pm)
    if name not in objectives:
        raise ValueError(f"objective: expected one of {', '.join(sorted(objectives))}, got {name!r}")
    return objectives[name]


def make_objective(name: str, options: Any = None, pm: Any = None) -> Objective:
    """The objective ``name`` with its hyperparameters: an instance of its :attr:`~Objective.Config`, or a mapping of
    that dataclass's fields (``None``: its defaults)."""
    cls = objective_class(name, pm)
    if cls.Config is None:
        if options:
            raise ValueError(f"objective {name!r} takes no options, got {sorted(dict(options))}")
        return cls()
    if isinstance(options, cls.Config):
        return cls(options)
    known = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(options or {}) - known)
    if unknown:
        raise ValueError(f"objective {name!r}: unknown options {unknown}; expected some of {sorted(known)}")
    return cls(cls.Config(**(options or {})))
