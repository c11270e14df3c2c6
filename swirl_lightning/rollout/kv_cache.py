"""The generation engine's KV cache: one row per batch slot, per-slot lengths, sized by need.

Each layer's keys (and values) are one ``[slots, kv heads, capacity, head dim]`` tensor, so a forward pass over
consecutive slots reads its slots' rows as a view, never a copy. The capacity follows the longest conversation now
in a slot: it grows in blocks of ``block_tokens`` as that conversation grows and shrinks when it leaves its slot
(:meth:`SlotKVCache.release`). Memory is at most slots x (the longest live conversation + a block), not slots x the
context budget, and nothing is allocated before the first forward pass. Rows of their own length (paged) would save
the rest, but batched attention over them needs a paged-attention kernel or a copy of every live row each step.
"""

from __future__ import annotations

import torch

DEFAULT_BLOCK_TOKENS = 128
"""Positions added (or removed) at a time: few enough reallocations (each copies the cache), little unused room
(every slot's row is as long as the longest conversation's, rounded up to a block)."""


def _round_up(tokens: int, block: int) -> int:
    return max(block, -(-tokens // block) * block)


class SlotKVCache:
    """A KV cache with one contiguous row per slot and per-slot lengths.

    Before each forward, :meth:`select` names the slots in the batch and how many tokens each feeds.
    The model's attention layers call :meth:`update`, which writes the new keys and values at each slot's
    own offset and returns the slots' keys and values up to the longest of them.
    """

    is_compileable = False

    def __init__(self, num_slots: int, block_tokens: int = DEFAULT_BLOCK_TOKENS, max_capacity: int | None = None):
        if block_tokens < 1:
            raise ValueError(f"block_tokens: expected a positive integer, got {block_tokens}")
        self.num_slots = num_slots
        self.block_tokens = block_tokens
        self.max_capacity = max_capacity
        self.capacity = 0
        """Positions per slot row the tensors hold now (0 before the first forward pass)."""
        self.lengths = torch.zeros(num_slots, dtype=torch.long)
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self._rows = torch.arange(num_slots)
        self._num_new = 0

    def nbytes(self) -> int:
        """Bytes the keys and values take now."""
        return sum(t.numel() * t.element_size() for store in (self.keys, self.values) for t in store.values())

    def reset_slot(self, slot: int) -> None:
        """Empty ``slot`` (before a conversation takes it)."""
        self.lengths[slot] = 0

    def release(self, slot: int) -> None:
        """Empty ``slot`` as its conversation leaves it; shrink the rows to the blocks the longest conversation left
        needs when a whole block or more is unused (so the rows never hold more than a block of slack)."""
        self.lengths[slot] = 0
        target = _round_up(int(self.lengths.max()), self.block_tokens)
        if self.capacity - target >= self.block_tokens:
            self._resize(target)

    def snapshot(self, slot: int, length: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Copies of the keys and values of the first ``length`` positions of ``slot``, by layer."""
        return {layer: (self.keys[layer][slot, :, :length].clone(), self.values[layer][slot, :, :length].clone())
                for layer in self.keys}

    def load(self, slot: int, saved: dict[int, tuple[torch.Tensor, torch.Tensor]], length: int) -> None:
        """Make ``slot`` hold the first ``length`` positions of a :meth:`snapshot`."""
        self._grow(length)
        for layer, (keys, values) in saved.items():
            if layer not in self.keys:
                self.keys[layer] = keys.new_zeros((self.num_slots, keys.shape[0], self.capacity, keys.shape[2]))
                self.values[layer] = values.new_zeros((self.num_slots, values.shape[0], self.capacity, values.shape[2]))
            self.keys[layer][slot, :, :length] = keys[:, :length]
            self.values[layer][slot, :, :length] = values[:, :length]
        self.lengths[slot] = length

    def copy_slot(self, source: int, target: int) -> None:
        """Make slot ``target`` hold the same tokens as slot ``source``."""
        length = int(self.lengths[source])
        for store in (self.keys, self.values):
            for tensor in store.values():
                tensor[target, :, :length] = tensor[source, :, :length]
        self.lengths[target] = length

    def select(self, rows: torch.Tensor, num_new: int) -> None:
        """Set the slots of the next forward pass and the (padded) number of tokens each feeds."""
        self._rows, self._num_new = rows, num_new
        self._grow(int(self.lengths[rows].max()) + num_new)

    def _grow(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        capacity = _round_up(needed, self.block_tokens)
        if self.max_capacity is not None:  # a block past the context budget would never be used
            capacity = max(needed, min(capacity, self.max_capacity))
        self._resize(capacity)

    def _resize(self, capacity: int) -> None:
        # Layer by layer, so at most one layer exists twice during the copy.
        kept = min(self.capacity, capacity)
        for store in (self.keys, self.values):
            for layer, old in store.items():
                resized = old.new_zeros(old.shape[0], old.shape[1], capacity, old.shape[3])
                resized[:, :, :kept] = old[:, :, :kept]
                store[layer] = resized
        self.capacity = capacity

    def commit(self, rows: torch.Tensor, num_real: torch.Tensor) -> None:
        """Advance the lengths of ``rows`` by the number of real (non-padding) tokens they fed."""
        self.lengths[rows] += num_real

    def kv_length(self) -> int:
        return int(self.lengths[self._rows].max()) + self._num_new

    def get_seq_length(self, layer_idx: int = 0) -> int:
        # Positions and masks are always passed explicitly; the model must not derive them from here.
        return 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        rows, n = self._rows, self._num_new
        if layer_idx not in self.keys:
            shape = (self.num_slots, key_states.shape[1], self.capacity, key_states.shape[3])
            self.keys[layer_idx] = key_states.new_zeros(shape)
            self.values[layer_idx] = value_states.new_zeros(shape[:3] + (value_states.shape[3],))
        positions = self.lengths[rows].unsqueeze(1) + torch.arange(n).unsqueeze(0)  # [b, n]
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys[rows.unsqueeze(1), :, positions] = key_states.transpose(1, 2)
        values[rows.unsqueeze(1), :, positions] = value_states.transpose(1, 2)
        kv_len = self.kv_length()
        first = int(rows[0])
        if int(rows[-1]) - first + 1 == len(rows) and bool((rows[1:] > rows[:-1]).all()):
            # Consecutive slots (the common decode case): a view, no copy of the cache.
            return keys[first : first + len(rows), :, :kv_len], values[first : first + len(rows), :, :kv_len]
        return keys[rows, :, :kv_len], values[rows, :, :kv_len]


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
