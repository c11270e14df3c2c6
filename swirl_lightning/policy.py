"""The trainable policy: loading (LoRA, 4/8-bit, a merged warm-start adapter), FSDP2 sharding, and the
:class:`ActionScorer` the losses call (log-probs of action tokens only)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .loss import token_entropy, token_logprobs
from .train_config import PolicyConfig


class ActionScorer(nn.Module):
    """The policy as the losses need it: the log-prob of every action token, 0 elsewhere.

    The decoder runs on the whole rows; the vocabulary projection only on the positions that predict an
    action token (``segment_ids > 0``). ``logit_index`` gives those positions for packed groups, default
    the causal shift. Being the one module called in training, it is the FSDP root.
    """

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    @property
    def causal_lm(self) -> nn.Module:
        """The Hugging Face causal LM (inside a PEFT wrapper, with its LoRA layers in place)."""
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    def forward(self, input_ids: Tensor, attention_mask: Tensor, segment_ids: Tensor,
                position_ids: Tensor | None = None, logit_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Log-probs ``[B, T]`` (fp32, 0 off actions) and the mean entropy at the action tokens (detached)."""
        lm = self.causal_lm
        hidden = lm.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               use_cache=False).last_hidden_state
        if logit_index is None:
            logit_index = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids) - 1
        rows, columns = (segment_ids > 0).nonzero(as_tuple=True)
        logits = lm.get_output_embeddings()(hidden[rows, logit_index[rows, columns]])
        softcap = getattr(lm.config, "final_logit_softcapping", None)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        order = torch.arange(len(rows), device=logits.device).unsqueeze(0)
        action_logprobs = token_logprobs(logits.unsqueeze(0), input_ids[rows, columns].unsqueeze(0), order)[0]
        entropy = token_entropy(logits.unsqueeze(0), torch.ones_like(order, dtype=torch.bool), order)
        logprobs = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
        return logprobs.index_put((rows, columns), action_logprobs), entropy


def load_trainable_policy(config: PolicyConfig, device: torch.device | str) -> nn.Module:
    """The causal LM of ``config`` on ``device``, ready to train: the warm-start adapter merged in,
    gradient checkpointing and LoRA (on 4/8-bit weights with ``quantize``) as configured."""
    from .models import check_adapter_dir, load_model, resolve_model_path

    if config.quantize == "none":
        lm = load_model(config.name, dtype=config.dtype, device=str(device),
                        attn_implementation=config.attn_implementation).train()
    else:
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        quantization = BitsAndBytesConfig(load_in_8bit=config.quantize == "8bit",
                                          load_in_4bit=config.quantize == "4bit",
                                          bnb_4bit_compute_dtype=getattr(torch, config.dtype))
        lm = AutoModelForCausalLM.from_pretrained(
            resolve_model_path(config.name), dtype=getattr(torch, config.dtype), quantization_config=quantization,
            device_map={"": str(device)}, attn_implementation=config.attn_implementation)
    lm.config.use_cache = False
    if config.adapter:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, check_adapter_dir(config.adapter)).merge_and_unload()
    if config.gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.lora_r > 0:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if config.quantize != "none":
            lm = prepare_model_for_kbit_training(lm, use_gradient_checkpointing=config.gradient_checkpointing)
        lm = get_peft_model(lm, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                           lora_dropout=config.lora_dropout,
                                           target_modules=config.lora_target_modules, task_type="CAUSAL_LM"))
    return lm


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


def cast_safetensors(path: Path, dtype: torch.dtype) -> None:
    """Rewrite a safetensors file with its floating-point tensors cast to ``dtype``."""
    from safetensors.torch import load_file, save_file

    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(path).items()}
    save_file(tensors, path, metadata={"format": "pt"})
