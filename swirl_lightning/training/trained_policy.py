"""The policy being trained, as the objectives and the reward probe see it (:class:`TrainedPolicy`, the module's
implementation of :class:`~swirl_lightning.training.objectives.base.TrainablePolicy`): its scoring pass and its
sampler, without the LightningModule around them."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from swirl_lightning.core.config import SamplingConfig
from swirl_lightning.core.trajectory import State
from swirl_lightning.rollout.backend import GenerationBackend
from swirl_lightning.training.objectives.base import SampledActions
from swirl_lightning.training.policy import ActionScorer, action_sampling, sample_actions


class TrainedPolicy:
    """Scores with ``scorer`` (gradients on) and samples through ``backend`` (the module's generation backend, whose
    weights are ``scorer``'s) with ``sampling``."""

    def __init__(self, scorer: ActionScorer,
                 backend: Callable[[SamplingConfig], contextlib.AbstractContextManager[GenerationBackend]],
                 sampling: SamplingConfig, *, device: torch.device, pad_token_id: int, action_tags: dict[str, str],
                 version: int) -> None:
        self.scorer, self.backend, self.sampling = scorer, backend, sampling
        self.device, self.pad_token_id, self.action_tags, self.version = device, pad_token_id, action_tags, version

    def score(self, input_ids: Tensor, attention_mask: Tensor, segment_ids: Tensor,
              position_ids: Tensor | None = None, logit_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Log-probs ``[B, T]`` of the action tokens (fp32, 0 elsewhere) and their mean entropy (detached)."""
        return self.scorer(input_ids, attention_mask, segment_ids, position_ids=position_ids, logit_index=logit_index)

    def sample(self, states: Sequence[State], group_size: int, seed: int) -> tuple[SampledActions, int]:
        """``group_size`` fresh actions per state drawn with run seed ``seed``, and the policy version that drew them."""
        sampling = action_sampling(dataclasses.replace(self.sampling, seed=seed), states)
        with self.backend(sampling) as backend:
            return sample_actions(backend, states, group_size), backend.policy_version

    def mask_dtype(self) -> torch.dtype:
        """The dtype of the 4D attention masks: the autocast dtype, else the weights'."""
        if torch.is_autocast_enabled(self.device.type):
            return torch.get_autocast_dtype(self.device.type)
        return next(p.dtype for p in self.scorer.parameters() if p.is_floating_point())


@contextlib.contextmanager
def frozen_reference(scorer: ActionScorer, copy: ActionScorer | None = None) -> Iterator[ActionScorer]:
    """The frozen initial policy while the ``with`` block lasts: ``copy`` (a frozen copy of the starting weights, kept
    when training every weight), else ``scorer`` with its LoRA adapter disabled."""
    if copy is not None:
        copy.eval()  # only while in use: Lightning expects train mode everywhere between steps
        try:
            yield copy
        finally:
            copy.train()
    else:
        with scorer.lm.disable_adapter():
            yield scorer
