"""The generation backend: what samples model turns, for every stage that samples.

``swirl generate``, the ``swirl`` objective's G actions per state, the reward probe and live validation all hand their
conversations (:class:`~swirl_lightning.rollout.engine.Conversation`) to a backend, chosen by the shared ``engine``
config group (:class:`~swirl_lightning.core.config.EngineConfig`):

- ``in_process``: :class:`~swirl_lightning.rollout.engine.GenerationEngine`, the default and the reference;
- ``vllm``: :class:`~swirl_lightning.rollout.vllm_backend.VllmBackend`, an OpenAI-compatible vLLM server.

Both record the same things with each turn (token ids, their log-probs, the policy version), so trajectories do not
say which backend made them except through ``Trajectory.metadata``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from swirl_lightning.rollout.engine import Conversation, GenerationStats


class GenerationBackend(Protocol):
    """Runs conversations to their end, model turn by model turn."""

    stats: GenerationStats
    """Throughput counters (tokens generated and prefilled, seconds)."""
    policy_version: int
    """Recorded with every turn it samples (the caller sets it when the weights change)."""

    def run(self, conversations: Iterable[Conversation], on_finished: Callable[[Conversation], None]) -> None:
        """Run all conversations to the end, calling ``on_finished`` as each one finishes (in any order)."""
