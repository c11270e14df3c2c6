"""The generation engine's KV cache: a row of its own length per batch slot, grown in blocks, freed as it ends.

Each slot holds one tensor ``[layers, 2, kv heads, capacity, head dim]`` (keys and values of every layer), grown in
blocks of ``block_tokens`` positions as its conversation grows and freed when the conversation leaves the slot. Memory
is the sum of the live conversations (each rounded up to a block), not slots x the longest of them: one long
conversation does not make every slot as long.

Rows of different lengths cannot be one batched attention call, so the engine runs attention through
:func:`slot_attention`, which attends each row over its own keys and values (one call per row and layer). Attention
reads each row's real positions only, where a padded batch reads every row to the longest: the loop costs call
overhead and saves the padding. A forward pass runs it under :func:`slot_attention_for`, with
:meth:`SlotKVCache.forward_kwargs` passed to the model.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from swirl_lightning.core.models import attention_implementation

DEFAULT_BLOCK_TOKENS = 128
"""Positions added to a slot's row at a time: few reallocations (each copies that slot's row), at most a block of
unused room per slot."""

SLOT_ATTENTION = "swirl_slot_attention"
"""The name :func:`slot_attention` is registered under in transformers' ``AttentionInterface``."""


def _round_up(tokens: int, block: int) -> int:
    return max(block, -(-tokens // block) * block)


class SlotKVCache:
    """A KV cache with a row of its own length per slot.

    Before each forward, :meth:`select` names the slots in the batch and how many tokens each feeds (padded to the
    longest feed). The model's attention layers call :meth:`update`, which writes the new keys and values at each
    slot's own offset; :func:`slot_attention` then attends each row over its slot (:meth:`attend`).
    """

    is_compileable = False

    def __init__(self, num_slots: int, num_layers: int, block_tokens: int = DEFAULT_BLOCK_TOKENS,
                 max_capacity: int | None = None, dtype: torch.dtype | None = None):
        if block_tokens < 1:
            raise ValueError(f"block_tokens: expected a positive integer, got {block_tokens}")
        self.num_slots = num_slots
        self.num_layers = num_layers
        self.block_tokens = block_tokens
        self.max_capacity = max_capacity
        self.dtype = dtype
        """What the rows store keys and values in (``None``: the model's); attention then runs in it."""
        self.lengths = torch.zeros(num_slots, dtype=torch.long)
        self.rows: list[torch.Tensor | None] = [None] * num_slots
        """Each slot's ``[layers, 2, kv heads, capacity, head dim]`` keys and values; ``None`` while it is empty."""
        self._like: torch.Tensor | None = None  # a layer's new keys: the kv heads, head dim, dtype and device of a row
        self._selected: list[int] = []
        self._num_new = 0
        self._updates = self._attended = 0

    def capacity(self, slot: int) -> int:
        """Positions the row of ``slot`` holds now (0 while it has none)."""
        row = self.rows[slot]
        return 0 if row is None else row.shape[3]

    def nbytes(self) -> int:
        """Bytes the keys and values take now."""
        return sum(row.numel() * row.element_size() for row in self.rows if row is not None)

    def reset_slot(self, slot: int) -> None:
        """Empty ``slot`` (before a conversation takes it)."""
        self.lengths[slot] = 0

    def release(self, slot: int) -> None:
        """Empty ``slot`` as its conversation leaves it and free its row."""
        self.lengths[slot] = 0
        self.rows[slot] = None

    def snapshot(self, slot: int, length: int) -> torch.Tensor:
        """A copy of the keys and values of the first ``length`` positions of ``slot``."""
        row = self.rows[slot]
        assert row is not None, f"slot {slot} holds no keys"
        return row[:, :, :, :length].clone()

    def load(self, slot: int, saved: torch.Tensor, length: int) -> None:
        """Make ``slot`` hold the first ``length`` positions of a :meth:`snapshot`."""
        if self._like is None:
            self._like = saved[0, 0, :, :0].unsqueeze(0)
        self._row(slot, length)[:, :, :, :length] = saved[:, :, :, :length]
        self.lengths[slot] = length

    def copy_slot(self, source: int, target: int) -> None:
        """Make slot ``target`` hold the same tokens as slot ``source``."""
        length = int(self.lengths[source])
        self._row(target, length)[:, :, :, :length] = self._row(source, length)[:, :, :, :length]
        self.lengths[target] = length

    def select(self, rows: torch.Tensor, num_new: int) -> None:
        """Set the slots of the next forward pass and the (padded) number of tokens each feeds."""
        self._selected, self._num_new = rows.tolist(), num_new
        if self._like is not None:
            for slot in self._selected:
                self._row(slot, int(self.lengths[slot]) + num_new)

    def forward_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the model's forward pass, which carry the cache to :func:`slot_attention`."""
        return {"slot_kv_cache": self}

    def _row(self, slot: int, needed: int) -> torch.Tensor:
        """The row of ``slot``, grown first to hold ``needed`` positions (in whole blocks, within the context
        budget)."""
        have, row = self.capacity(slot), self.rows[slot]
        if row is not None and needed <= have:
            return row
        capacity = _round_up(needed, self.block_tokens)
        if self.max_capacity is not None:  # a block past the context budget would never be used
            capacity = max(needed, min(capacity, self.max_capacity))
        like = self._like
        assert like is not None, "a row is made after the first keys arrive"
        grown = like.new_zeros((self.num_layers, 2, like.shape[1], capacity, like.shape[3]),
                               dtype=self.dtype or like.dtype)
        if row is not None:
            grown[:, :, :, :have] = row
        self.rows[slot] = grown
        return grown

    def commit(self, rows: torch.Tensor, num_real: torch.Tensor) -> None:
        """Advance the lengths of ``rows`` by the number of real (non-padding) tokens they fed."""
        self.lengths[rows] += num_real

    def get_seq_length(self, layer_idx: int = 0) -> int:
        # Positions and masks are always passed explicitly; the model must not derive them from here.
        return 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Write the new keys and values ``[rows, kv heads, new tokens, head dim]`` of layer ``layer_idx`` at each
        selected slot's offset; return them unchanged (:func:`slot_attention` reads the rows)."""
        if self._like is None:
            self._like = key_states[:1, :, :0]
        n = self._num_new
        for k, slot in enumerate(self._selected):
            start = int(self.lengths[slot])
            row = self._row(slot, start + n)
            row[layer_idx, 0, :, start : start + n] = key_states[k]
            row[layer_idx, 1, :, start : start + n] = value_states[k]
        self._updates += 1
        return key_states, value_states

    def attend(self, layer_idx: int, query: torch.Tensor, attention_mask: torch.Tensor | None,
               scaling: float | None) -> torch.Tensor:
        """Attention of ``query`` ``[rows, heads, new tokens, head dim]`` over each selected slot's keys and values
        (its cached positions and the new ones), under the rows of ``attention_mask``; ``[rows, new, heads, dim]``."""
        rows, heads, n, dim = query.shape
        out = query.new_empty(rows, n, heads, dim)
        if self.dtype is not None:  # attention in the cache's dtype: its rows are not copied to the model's
            query = query.to(self.dtype)
            attention_mask = None if attention_mask is None else attention_mask.to(self.dtype)
        for k, slot in enumerate(self._selected):
            length = int(self.lengths[slot]) + n
            row = self._row(slot, length)
            keys, values = row[layer_idx, 0, :, :length], row[layer_idx, 1, :, :length]
            kv_heads = keys.shape[0]
            if n == 1:  # one new token sees every position: group the query heads by the kv head they share
                attended = F.scaled_dot_product_attention(query[k].view(kv_heads, heads // kv_heads, dim), keys,
                                                          values, scale=scaling)
                out[k, 0] = attended.view(heads, dim)
            else:
                mask = None if attention_mask is None else attention_mask[k : k + 1, :, :, :length]
                attended = F.scaled_dot_product_attention(query[k : k + 1], keys[None], values[None], attn_mask=mask,
                                                          scale=scaling, enable_gqa=kv_heads != heads)
                out[k] = attended[0].transpose(0, 1)
        self._attended += 1
        return out

    def check_attended(self) -> None:
        """Raise when a forward pass wrote keys that no :func:`slot_attention` call read: the model's attention
        layers did not dispatch through ``config._attn_implementation``, so their output would be wrong."""
        updates, attended = self._updates, self._attended
        self._updates = self._attended = 0
        if updates != attended:
            raise RuntimeError(f"{updates} attention layers stored keys in the slot cache but {attended} attended "
                               f"through it: this model's attention does not dispatch through "
                               f"config._attn_implementation, which the generation engine needs")


def slot_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                   **kwargs) -> tuple[torch.Tensor, None]:
    """transformers attention function: each row over its own slot of the :class:`SlotKVCache` passed in
    ``slot_kv_cache``; without one (any other forward pass of the model), transformers' SDPA attention."""
    cache = kwargs.pop("slot_kv_cache", None)
    if cache is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    return cache.attend(module.layer_idx, query, attention_mask, scaling), None


AttentionInterface.register(SLOT_ATTENTION, slot_attention)


def slot_attention_for(model: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
    """Run ``model``'s attention layers through :func:`slot_attention` inside the block."""
    return attention_implementation(model, SLOT_ATTENTION)


def attention_mask_for(lengths: torch.Tensor, num_real: torch.Tensor, num_new: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4D mask ``[b, 1, num_new, kv_len]`` for slots that hold ``lengths`` cached tokens.

    New token i of a row sees the row's cache and its new tokens up to i. Padding queries (``i >= num_real``)
    see the row's real tokens only, so they never produce NaN.
    """
    kv_len = int(lengths.max()) + num_new
    query = torch.arange(num_new).unsqueeze(0)  # [1, n]
    last_visible = lengths.unsqueeze(1) + torch.minimum(query, (num_real - 1).unsqueeze(1))  # [b, n]
    keys = torch.arange(kv_len).view(1, 1, kv_len)
    allowed = keys <= last_visible.unsqueeze(2)
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.unsqueeze(1)
