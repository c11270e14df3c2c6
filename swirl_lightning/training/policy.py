"""The trainable policy: loading (a merged warm-start adapter, LoRA, 4/8-bit), the :class:`ActionScorer` the losses
call (log-probs of action tokens only), sampling fresh actions from it, FSDP2 sharding, and what its checkpoints hold
(the export at the end is :mod:`.export`'s).
"""

from __future__ import annotations

import contextlib
import dataclasses
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import cast

import torch
from torch import Tensor, nn

from swirl_lightning.core.config import PolicyConfig, SamplingConfig
from swirl_lightning.core.trajectory import State
from swirl_lightning.training.config import LoraConfig
from swirl_lightning.training.head import DEFAULT_CHUNK_TOKENS, head_logprobs
from swirl_lightning.training.prefix_sharing import branch_attention_for, pack_for

AUTO_CHECKPOINT_ABOVE_TOKENS = 1024
"""``gradient_checkpointing: auto`` checkpoints the passes (micro-batches) of more tokens than this (rows x length, or
the length of the rows packed behind their shared prefix)."""


class ActionScorer(nn.Module):
    """The policy as the losses need it: the log-prob of every action token, 0 elsewhere.

    The decoder runs on the whole rows; the vocabulary projection only on the positions that predict an
    action token (``segment_ids > 0``), ``chunk_tokens`` of them at a time (:func:`~.head.head_logprobs`).
    ``logit_index`` gives those positions for packed groups, default the causal shift. Rows that begin alike (the
    system prompt) compute that prefix once where the model allows (:mod:`.prefix_sharing`). Being the one module
    called in training, it is the FSDP root.
    """

    def __init__(self, lm: nn.Module, chunk_tokens: int = DEFAULT_CHUNK_TOKENS, checkpointing: bool | str = False,
                 share_prefix: bool = True):
        super().__init__()
        self.lm, self.chunk_tokens = lm, chunk_tokens
        self.checkpointing = checkpointing
        """As the policy was loaded (``load_trainable_policy``); ``auto`` switches it on for the passes of more than
        :data:`AUTO_CHECKPOINT_ABOVE_TOKENS` tokens (rows x length, or the packed row's) and off for the others."""
        self.share_prefix = share_prefix
        """Compute the prefix that all rows of a pass share once (:mod:`.prefix_sharing`), where the model allows and
        the pass is not checkpointed."""

    @property
    def causal_lm(self) -> nn.Module:
        """The Hugging Face causal LM (inside a PEFT wrapper, with its LoRA layers in place)."""
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    def forward(self, input_ids: Tensor, attention_mask: Tensor, segment_ids: Tensor,
                position_ids: Tensor | None = None, logit_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Log-probs ``[B, T]`` (fp32, 0 off actions) and the mean entropy at the action tokens (detached)."""
        lm = self.causal_lm
        packed = (pack_for(lm, input_ids, attention_mask, segment_ids)
                  if self.share_prefix and position_ids is None and logit_index is None else None)
        checkpointed_layers = [m for m in lm.modules() if hasattr(m, "_gradient_checkpointing_func")]
        if self.checkpointing == "auto":
            tokens = input_ids.numel() if packed is None else packed.input_ids.numel()
            for layer in checkpointed_layers:  # the layers transformers checkpoints, each with its own switch
                layer.gradient_checkpointing = tokens > AUTO_CHECKPOINT_ABOVE_TOKENS
        if any(layer.gradient_checkpointing for layer in checkpointed_layers):
            packed = None  # a layer's recomputation runs in the backward pass, outside the branch attention below
        if packed is None:
            hidden = lm.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                   use_cache=False).last_hidden_state
        else:
            with branch_attention_for(lm):
                hidden = lm.base_model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False,
                                       branch_layout=packed.layout).last_hidden_state[0][packed.index]
        if logit_index is None:
            logit_index = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids) - 1
        rows, columns = (segment_ids > 0).nonzero(as_tuple=True)
        action_logprobs, entropy = head_logprobs(hidden[rows, logit_index[rows, columns]], input_ids[rows, columns],
                                                 lm.get_output_embeddings(), chunk_tokens=self.chunk_tokens,
                                                 softcap=getattr(lm.config, "final_logit_softcapping", None))
        logprobs = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
        return logprobs.index_put((rows, columns), action_logprobs), entropy

    @contextlib.contextmanager
    def generation_mode(self) -> Iterator[nn.Module]:
        """The causal LM in eval mode with whole (unsharded) weights, for sampling outside the training graph.

        Under FSDP2 every rank gathers every layer once, up front, and keeps it until the end: ranks then decode
        different numbers of tokens without waiting for each other.
        """
        from torch.distributed.fsdp import FSDPModule

        was_training = self.training
        self.eval()
        sharded = isinstance(self, FSDPModule)
        modules = [m for m in self.modules() if isinstance(m, FSDPModule)] if sharded else []
        if sharded and not getattr(self, "_fsdp_initialized", False):
            device = next(self.parameters()).device
            with torch.no_grad():  # FSDP2 must see a forward through its root before any layer runs alone
                ids = torch.zeros((1, 2), dtype=torch.long, device=device)
                self(ids, torch.ones_like(ids), torch.tensor([[0, 1]], device=device))
            self._fsdp_initialized = True
        if sharded:
            self.set_reshard_after_forward(False)
            for module in modules:
                module.unshard()
        try:
            yield self.causal_lm
        finally:
            if sharded:
                for module in modules:
                    module.reshard()
                self.set_reshard_after_forward(True)
                self.set_reshard_after_forward(False, recurse=False)  # FSDP2's own choice for the root
            self.train(was_training)



def action_sampling(sampling: SamplingConfig, states: Sequence[State]) -> SamplingConfig:
    """``sampling`` with a context budget that fits the longest of ``states`` and one action."""
    longest = max(len(cast("list[int]", s.token_ids)) for s in states)  # swirl's states carry their ids
    return dataclasses.replace(sampling, max_context_tokens=longest + sampling.max_new_tokens + 1)


@torch.no_grad()
def sample_actions(backend, states: Sequence[State], group_size: int) -> list[list[tuple[list[int], str]]]:
    """``group_size`` actions (token ids, text) per state from a generation backend (the policy's current weights):
    one model turn each, no tool runs. Each (state, g) has its own seed, from the backend's ``sampling.seed`` and the
    state."""
    conversations = [_OneTurn(cast("list[int]", s.token_ids),
                              zlib.crc32(f"{s.example_id}\x00{s.step_index}\x00{g}".encode()) & 0x7FFFFFFF)
                     for s in states for g in range(group_size)]
    backend.run(conversations, lambda c: None)
    return [[(c.token_ids, c.text) for c in conversations[i * group_size : (i + 1) * group_size]]
            for i in range(len(states))]


class _OneTurn:
    """A conversation of one model turn from a given state: what the engine samples for ``swirl``."""

    def __init__(self, state_ids: list[int], seed: int):
        self.state_ids, self.seed = state_ids, seed
        self.token_ids: list[int] = []
        self.text = ""

    def prompt_ids(self) -> list[int]:
        return self.state_ids

    def on_turn_end(self, token_ids: list[int], text: str, finish_reason: str, logprobs: list[float] | None = None,
                    policy_version: int | None = None) -> None:
        self.token_ids, self.text = list(token_ids), text

    def on_context_full(self) -> None:
        pass

    def on_failure(self, reason: str) -> None:
        raise RuntimeError(f"sampling an action failed: {reason}")


def load_trainable_policy(policy: PolicyConfig, lora: LoraConfig, device: torch.device | str, *,
                          gradient_checkpointing: bool | str = False) -> nn.Module:
    """The causal LM of ``policy`` on ``device``, ready to train: the warm-start adapter merged in, gradient
    checkpointing and LoRA (on 4/8-bit weights with ``lora.quantize``) as configured."""
    from swirl_lightning.core.models import load_model, merge_adapter, resolve_model_path

    if lora.quantize == "none":
        lm = load_model(policy.name, dtype=policy.dtype, device=str(device),
                        attn_implementation=policy.attn_implementation).train()
    else:
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        quantization = BitsAndBytesConfig(load_in_8bit=lora.quantize == "8bit", load_in_4bit=lora.quantize == "4bit",
                                          bnb_4bit_compute_dtype=getattr(torch, policy.dtype))
        lm = AutoModelForCausalLM.from_pretrained(
            resolve_model_path(policy.name), dtype=getattr(torch, policy.dtype), quantization_config=quantization,
            device_map={"": str(device)}, attn_implementation=policy.attn_implementation)
    lm.config.use_cache = False
    if policy.adapter:
        # Loading an adapter puts the model in eval mode; the merged weights are the policy to train.
        lm = merge_adapter(lm, policy.adapter).train()
    if gradient_checkpointing:
        if hasattr(lm, "activation_checkpointing_enable"):  # transformers 5.x; the old name is deprecated there
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora.r > 0:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model, prepare_model_for_kbit_training

        if lora.quantize != "none":
            lm = prepare_model_for_kbit_training(lm, use_gradient_checkpointing=False)  # enabled above, non-reentrant
        lm = get_peft_model(lm, PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                               target_modules=lora.target_modules, task_type="CAUSAL_LM"))
    return lm


def describe_parameters(scorer: nn.Module) -> str:
    """How many parameters train, and under FSDP2 how they are sharded: what a run prints as it starts."""
    from torch.distributed.tensor import DTensor

    params = list(scorer.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    line = f"{trainable:,} of {sum(p.numel() for p in params):,} parameters trainable"
    sharded = [p for p in params if isinstance(p, DTensor) and any(pl.is_shard() for pl in p.placements)]
    if sharded:
        local = sum(p.to_local().numel() for p in sharded)
        line += (f"; {len(sharded)} of {len(params)} parameter tensors sharded ({sharded[0].placements[0]}), "
                 f"local shards hold {local:,} of {sum(p.numel() for p in sharded):,} elements")
    return line


def shard_with_fsdp2(scorers: list[nn.Module | None], device_mesh) -> None:
    """FSDP2: shard every decoder layer, then the rest of each policy, over the data-parallel mesh."""
    from torch.distributed.fsdp import fully_shard

    if device_mesh["tensor_parallel"].size() != 1:
        raise ValueError("this module shards with FSDP2 only: use ModelParallelStrategy(tensor_parallel_size=1, "
                         "data_parallel_size=<number of processes>)")
    mesh = device_mesh["data_parallel"]
    for scorer in scorers:
        if scorer is None:
            continue
        layer_types = set(getattr(scorer.causal_lm, "_no_split_modules", None) or [])
        for module in scorer.modules():
            if type(module).__name__ in layer_types:
                fully_shard(module, mesh=mesh)
        fully_shard(scorer, mesh=mesh)


def trained_weights(scorer: nn.Module, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """The entries of a checkpoint's ``state_dict`` that train (a LoRA's): the frozen base is reloaded from its name.
    Under FSDP2 the sharded checkpoint keeps every entry."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(scorer, FSDPModule):
        return state_dict
    trained = {f"scorer.{name}" for name, p in scorer.named_parameters() if p.requires_grad}
    return {key: value for key, value in state_dict.items() if key in trained}


def check_checkpoint_weights(saved: object, expected: Iterable[str]) -> None:
    """Refuse a checkpoint holding weights this policy lacks (loading is not strict under LoRA: a checkpoint holds the
    trained weights only, so a missing one is expected, an unknown one is another policy's)."""
    unknown = set(saved) - set(expected) if isinstance(saved, dict) else set()
    if unknown:
        raise ValueError(f"checkpoint holds {len(unknown)} weights this policy lacks, e.g. {sorted(unknown)[:3]}; "
                         "was it trained with another policy or LoRA setting?")
