"""Shared-prefix packing: the rows of a pass that begin with the same tokens compute those tokens once.

Trajectory rows of one task start with the same system prompt and tool instructions. :func:`pack_shared_prefix`
lays a pass's rows out as one row, ``[prefix, rest_1, ..., rest_n]``, each rest's position ids continuing from the
prefix; :func:`branch_attention` lets the prefix attend causally to itself and each rest to the prefix and causally
to itself, never to another rest. The packed hidden states are gathered back to ``[rows, length]``: each row sees
what it would alone (equal up to float rounding), and the prefix's gradient is the sum of every row's.

Only what is identical in every row is shared: tokens, real (not padding) and outside every action.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from swirl_lightning.core.models import attention_implementation

BRANCH_ATTENTION = "swirl_branch_attention"
"""The name :func:`branch_attention` is registered under in transformers' ``AttentionInterface``."""

MIN_SHARED_TOKENS = 16
"""A shorter common prefix is not worth a packed layout."""


@dataclasses.dataclass
class PackedRows:
    """Rows packed behind their shared prefix (see the module docstring)."""

    input_ids: Tensor
    """``[1, packed length]``: the prefix, then each row's rest."""
    position_ids: Tensor
    """``[1, packed length]``: each row's own positions."""
    layout: tuple[int, tuple[tuple[int, int], ...]]
    """The prefix length and each rest's ``(start, end)`` in the packed row: what :func:`branch_attention` needs."""
    index: Tensor
    """``[rows, length]``: where each row's position lies in the packed row (0 for padding)."""


def shared_prefix_length(input_ids: Tensor, attention_mask: Tensor, segment_ids: Tensor) -> int:
    """How many leading positions every row has alike: the same token, real, and no action's."""
    alike = (input_ids == input_ids[:1]).all(0) & attention_mask.bool().all(0) & (segment_ids == 0).all(0)
    return int(alike.int().cumprod(0).sum())


def pack_shared_prefix(input_ids: Tensor, attention_mask: Tensor, prefix: int) -> PackedRows:
    """``input_ids`` (right-padded rows) packed behind their first ``prefix`` positions, which all rows share."""
    device = input_ids.device
    lengths = attention_mask.sum(1).tolist()
    pieces, positions, bounds = [input_ids[0, :prefix]], [torch.arange(prefix, device=device)], []
    index = torch.zeros(input_ids.shape, dtype=torch.long, device=device)
    index[:, :prefix] = torch.arange(prefix, device=device)
    start = prefix
    for row, length in enumerate(lengths):
        rest = int(length) - prefix
        pieces.append(input_ids[row, prefix:length])
        positions.append(torch.arange(prefix, length, device=device))
        index[row, prefix:length] = torch.arange(start, start + rest, device=device)
        bounds.append((start, start + rest))
        start += rest
    return PackedRows(torch.cat(pieces)[None], torch.cat(positions)[None], (prefix, tuple(bounds)), index)


def branch_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                     scaling: float | None = None, dropout: float = 0.0, **kwargs) -> tuple[Tensor, None]:
    """transformers attention function over a :class:`PackedRows` layout passed in ``branch_layout``; without one (any
    other forward pass), transformers' SDPA attention."""
    layout = kwargs.pop("branch_layout", None)
    if layout is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    prefix, bounds = layout
    gqa = key.shape[1] != query.shape[1]
    prefix_keys, prefix_values = key[:, :, :prefix], value[:, :, :prefix]
    parts = [F.scaled_dot_product_attention(query[:, :, :prefix], prefix_keys, prefix_values, is_causal=True,
                                            scale=scaling, enable_gqa=gqa)]
    for start, end in bounds:
        rest = end - start
        mask = torch.ones(rest, prefix + rest, dtype=torch.bool, device=query.device)
        mask[:, prefix:] = torch.ones(rest, rest, dtype=torch.bool, device=query.device).tril()
        parts.append(F.scaled_dot_product_attention(
            query[:, :, start:end], torch.cat([prefix_keys, key[:, :, start:end]], 2),
            torch.cat([prefix_values, value[:, :, start:end]], 2), attn_mask=mask, scale=scaling, enable_gqa=gqa))
    return torch.cat(parts, 2).transpose(1, 2).contiguous(), None


AttentionInterface.register(BRANCH_ATTENTION, branch_attention)


def supports_prefix_sharing(model: nn.Module) -> bool:
    """Whether ``model`` (a transformers causal LM) attends as :func:`branch_attention` does: plain causal SDPA, no
    sliding window, no logit softcapping, no attention dropout while training."""
    config = model.config
    dropout = getattr(config, "attention_dropout", 0.0) or 0.0
    return (config._attn_implementation == "sdpa" and not getattr(config, "sliding_window", None)
            and not getattr(config, "attn_logit_softcapping", None) and not (model.training and dropout > 0))


def pack_for(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, segment_ids: Tensor) -> PackedRows | None:
    """The rows packed behind their shared prefix, or None where packing does not apply (one row, a short prefix, a
    model that attends otherwise)."""
    if input_ids.shape[0] < 2 or not supports_prefix_sharing(model):
        return None
    prefix = shared_prefix_length(input_ids, attention_mask, segment_ids)
    return pack_shared_prefix(input_ids, attention_mask, prefix) if prefix >= MIN_SHARED_TOKENS else None


def branch_attention_for(model: nn.Module) -> contextlib.AbstractContextManager[None]:
    """Run ``model``'s attention layers through :func:`branch_attention` inside the block."""
    return attention_implementation(model, BRANCH_ATTENTION)
