"""Where the policy being trained is sampled from: the in-process engine on its own weights, or a vLLM server.

Every sampling of a fit or an evaluation (``swirl``'s G actions per state, the reward probe, live validation) asks
:meth:`PolicySampler.backend` for a :class:`~swirl_lightning.rollout.backend.GenerationBackend` that samples with the
weights held now, and stamps every action with their version (the optimizer step they come from):

- ``engine.name: in_process``: a :class:`~swirl_lightning.rollout.engine.GenerationEngine` over the policy (whole
  weights, eval mode: :meth:`~.policy.ActionScorer.generation_mode`);
- ``engine.name: vllm``: a :class:`~swirl_lightning.rollout.vllm_backend.VllmBackend` on the server (the one at
  ``engine.base_url``, or a managed one started at the first sampling, logging to ``<root>/vllm.log``, stopped by
  :meth:`PolicySampler.close`, at exit, or by its guard if the run is killed). A LoRA policy's adapter follows training
  through :class:`~.weight_sync.AdapterSync`: a new version every ``engine.sync_every`` optimizer steps.

Training on vLLM needs LoRA: the server gets each version as an adapter (syncing every weight is not built).
"""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from swirl_lightning.core.config import EngineConfig, PolicyConfig, SamplingConfig
from swirl_lightning.rollout.backend import GenerationBackend
from swirl_lightning.training.config import LoraConfig

if TYPE_CHECKING:
    from swirl_lightning.rollout.vllm_server import VllmServer
    from swirl_lightning.training.weight_sync import AdapterSync


class PolicySampler:
    """Hands out generation backends for the policy being trained (see the module docstring)."""

    def __init__(self, engine: EngineConfig, policy: PolicyConfig, lora: LoraConfig, tokenizer,
                 stop_strings: Sequence[str], max_context_tokens: int):
        self.check_config(engine, lora)
        self.engine, self.policy, self.lora = engine, policy, lora
        self.tokenizer, self.stop_strings, self.max_context_tokens = tokenizer, list(stop_strings), max_context_tokens
        self.server: VllmServer | None = None
        self.sync: AdapterSync | None = None

    @staticmethod
    def check_config(engine: EngineConfig, lora: LoraConfig) -> None:
        """What the ``vllm`` engine supports with ``lora``, checked before any model loads."""
        if engine.name != "vllm":
            return
        if lora.quantize != "none":
            raise ValueError("engine.name vllm with lora.quantize: the server would sample from unquantized weights; "
                             "train on full-precision weights (lora.quantize none) or use engine.name in_process")
        if lora.r > engine.max_lora_rank:
            raise ValueError(f"lora.r {lora.r} is above engine.max_lora_rank {engine.max_lora_rank}: the server would "
                             "refuse the adapter; raise engine.max_lora_rank")

    def check_trainable(self) -> None:
        """Raise when ``fit`` cannot keep the sampler's weights in step with training."""
        if self.engine.name == "vllm" and self.lora.r <= 0:
            raise ValueError("engine.name vllm trains LoRA adapters only (lora.r > 0): the server gets each new "
                             "version as an adapter, and syncing every weight to it is not built; set lora.r, or use "
                             "engine.name in_process")

    @contextlib.contextmanager
    def backend(self, scorer, sampling: SamplingConfig, step: int, root: Path,
                from_checkpoint: bool = False) -> Iterator[GenerationBackend]:
        """A backend sampling with ``scorer``'s weights, which are those of optimizer step ``step`` (on vLLM: the
        adapter of the latest sync, published first when it is ``engine.sync_every`` steps old)."""
        if self.engine.name == "vllm":
            from torch.distributed.fsdp import FSDPModule

            from swirl_lightning.rollout.vllm_backend import VllmBackend

            if isinstance(scorer, FSDPModule):
                raise ValueError("engine.name vllm with FSDP2 sharding is not built (the adapter would have to be "
                                 "gathered from every rank before each sync): use DDP or one device")
            server, sync = self._vllm(root, from_checkpoint)
            model, version = sync.serve(scorer.lm, step) if sync is not None else (server.model, 0)
            yield VllmBackend(server, self.tokenizer, sampling, self.engine, self.stop_strings, model=model,
                              policy_version=version)
            return
        from swirl_lightning.rollout.engine import GenerationEngine

        with scorer.generation_mode() as lm:
            engine = GenerationEngine(lm, self.tokenizer, sampling, stop_strings=self.stop_strings)
            engine.policy_version = step
            yield engine

    def _vllm(self, root: Path, from_checkpoint: bool):
        if self.server is None:
            from swirl_lightning.rollout.vllm_server import VllmServer
            from swirl_lightning.training.weight_sync import AdapterSync

            if self.lora.r <= 0 and from_checkpoint:
                raise ValueError("engine.name vllm serves the policy's starting weights, and full weights trained "
                                 "since (a checkpoint of lora.r 0) cannot be synced to it: export them and validate "
                                 "with policy.name set to the export")
            self.server = VllmServer.connect(self.engine, self.policy, root / "vllm.log",
                                             max_context_tokens=self.max_context_tokens)
            atexit.register(self.server.stop)  # also when the run ends in an error; a killed run: the server's guard
            if self.lora.r > 0:
                self.sync = AdapterSync(self.server, root / "vllm_adapters", self.engine.sync_every)
        return self.server, self.sync

    def close(self) -> None:
        """Stop a managed server (the next sampling starts a new one)."""
        if self.server is not None:
            self.server.stop()
        self.server = self.sync = None
