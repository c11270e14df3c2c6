"""Shared-prefix inputs for training: one forward pass covers many actions (pure torch).

Two layouts, each with its naive "one row per action" counterpart used by the equality tests and the
benchmarks:

* **Trajectory** (``sft`` / ``offline``): ``[prompt, a_1, o_1, a_2, ..., a_K]`` is one row. Under the plain
  causal mask every state is a prefix of it, so the logits of one pass give the log-probs of all K actions.
  ``segment_ids`` marks action k's tokens with k (0 elsewhere). Batches are right-padded with a 2D
  attention mask; the default causal shift of ``loss.token_logprobs`` applies.
* **Group** (``swirl``): one state and its G sampled actions ``[s, a_1, ..., a_G]`` in one row. A 4D additive
  float mask lets state tokens attend causally, and each ``a_g`` token attend to the whole state plus the
  earlier tokens of ``a_g`` only; ``position_ids`` of every ``a_g`` restart at ``len(s)``. Pass
  ``input_ids``, ``attention_mask`` (4D) and ``position_ids`` to the model, and ``logit_index`` to
  ``loss.token_logprobs``: the first token of each ``a_g`` is predicted by the last state token.

HF models take such a mask as-is: transformers' ``masking_utils`` returns any 4D ``attention_mask``
unchanged, eager attention adds it to the scores and sdpa passes it as ``attn_mask`` (a float mask must
have the model's dtype). A padded query row attends to itself only, so it never produces NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "TrajectoryBatch",
    "PackedGroup",
    "GroupBatch",
    "pack_trajectory",
    "unpacked_trajectory_rows",
    "pad_rows",
    "pack_group",
    "unpacked_group_rows",
    "batch_groups",
]

Segment = tuple[Sequence[int], bool]
"""Token ids of one part of a trajectory and whether it is a model action (prompt/tool results: False)."""


@dataclass
class TrajectoryBatch:
    """Right-padded rows with the plain causal layout."""

    input_ids: Tensor
    """[B, T] token ids, ``pad_id`` after each row's end."""
    attention_mask: Tensor
    """[B, T] 1 on real tokens, 0 on padding."""
    segment_ids: Tensor
    """[B, T] k on the tokens of action k of the row, 0 elsewhere (padding included)."""


@dataclass
class PackedGroup:
    """One state followed by its G actions, each action seeing only the state and itself."""

    input_ids: Tensor
    """[L] the ids of ``s + a_1 + ... + a_G``."""
    position_ids: Tensor
    """[L] 0..len(s)-1 on the state, then len(s), len(s)+1, ... again for every action."""
    segment_ids: Tensor
    """[L] g on the tokens of a_g, 0 on the state."""
    logit_index: Tensor
    """[L] the position whose logits predict each token (-1: none), for ``loss.token_logprobs``."""
    attention_mask: Tensor
    """[1, 1, L, L] additive float mask: 0 where query i may attend to key j, the dtype's minimum elsewhere."""


@dataclass
class GroupBatch:
    """Several packed groups, right-padded to a common length L."""

    input_ids: Tensor
    """[B, L]"""
    position_ids: Tensor
    """[B, L] 0 on padding."""
    segment_ids: Tensor
    """[B, L] 0 on padding."""
    logit_index: Tensor
    """[B, L] -1 on padding."""
    attention_mask: Tensor
    """[B, 1, L, L] additive float mask; padding keys are masked, a padding query sees itself only."""


def _ids(tokens: Sequence[int], where: str) -> list[int]:
    ids = [int(t) for t in tokens]
    if any(t < 0 for t in ids):
        raise ValueError(f"{where}: token ids must be >= 0, got {ids}")
    return ids


def pack_trajectory(segments: Sequence[Segment]) -> tuple[Tensor, Tensor]:
    """Concatenate ``[(ids, is_action), ...]`` into ``(input_ids [T], segment_ids [T])``; action k's tokens get k.

    Token ids are concatenated as given (token-in/token-out), never re-rendered, so every prefix is exactly
    the state the policy saw. Empty non-action segments are allowed; empty actions and a trajectory that
    starts with an action (whose first token nothing would predict) are errors.
    """
    input_ids: list[int] = []
    segment_ids: list[int] = []
    action_count = 0
    for position, (tokens, is_action) in enumerate(segments):
        ids = _ids(tokens, f"segment {position}")
        if is_action:
            if not ids:
                raise ValueError(f"segment {position} is an empty action; every action needs at least one token")
            if not input_ids:
                raise ValueError(
                    f"segment {position} is an action with no prompt before it; nothing predicts its first token"
                )
            action_count += 1
        input_ids.extend(ids)
        segment_ids.extend([action_count if is_action else 0] * len(ids))
    if action_count == 0:
        raise ValueError("the trajectory holds no action segment")
    return torch.tensor(input_ids, dtype=torch.long), torch.tensor(segment_ids, dtype=torch.long)


def unpacked_trajectory_rows(segments: Sequence[Segment]) -> list[tuple[Tensor, Tensor]]:
    """The naive alternative to :func:`pack_trajectory`: one row ``state_k + a_k`` per action, a_k with segment id 1."""
    input_ids, segment_ids = pack_trajectory(segments)
    rows = []
    for action in range(1, int(segment_ids.max()) + 1):
        positions = (segment_ids == action).nonzero().squeeze(1)
        end = int(positions[-1]) + 1
        row_segments = (segment_ids[:end] == action).long()
        rows.append((input_ids[:end].clone(), row_segments))
    return rows


def pad_rows(rows: Sequence[tuple[Tensor, Tensor]], pad_id: int) -> TrajectoryBatch:
    """Right-pad ``(input_ids [T_i], segment_ids [T_i])`` rows into one :class:`TrajectoryBatch`."""
    if not rows:
        raise ValueError("pad_rows needs at least one row")
    length = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    segment_ids = torch.zeros((len(rows), length), dtype=torch.long)
    for row, (ids, segments) in enumerate(rows):
        if ids.shape != segments.shape:
            raise ValueError(f"row {row}: input_ids {tuple(ids.shape)} and segment_ids {tuple(segments.shape)} differ")
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
        segment_ids[row, : len(ids)] = segments
    return TrajectoryBatch(input_ids, attention_mask, segment_ids)


def pack_group(
    state_ids: Sequence[int], actions: Sequence[Sequence[int]], dtype: torch.dtype = torch.float32
) -> PackedGroup:
    """Pack one state and its G sampled actions as ``[s, a_1, ..., a_G]`` (see the module docstring).

    ``dtype`` is the dtype of the additive mask; use the model's (sdpa requires it to match the queries).
    """
    state = _ids(state_ids, "state")
    if not state:
        raise ValueError("the state is empty; the first token of each action needs a state token to predict it")
    if not actions:
        raise ValueError("pack_group needs at least one action")
    action_ids = [_ids(action, f"action {g}") for g, action in enumerate(actions, start=1)]
    for g, action in enumerate(action_ids, start=1):
        if not action:
            raise ValueError(f"action {g} is empty; every action needs at least one token")

    state_length = len(state)
    length = state_length + sum(len(a) for a in action_ids)
    allowed = torch.zeros((length, length), dtype=torch.bool)
    allowed[:state_length, :state_length] = torch.ones(state_length, state_length, dtype=torch.bool).tril()
    position_ids = list(range(state_length))
    segment_ids = [0] * state_length
    logit_index = list(range(-1, state_length - 1))
    start = state_length
    for g, action in enumerate(action_ids, start=1):
        end = start + len(action)
        allowed[start:end, :state_length] = True
        allowed[start:end, start:end] = torch.ones(len(action), len(action), dtype=torch.bool).tril()
        position_ids.extend(range(state_length, state_length + len(action)))
        segment_ids.extend([g] * len(action))
        # The first action token follows the state's last token, not the previous action's last token.
        logit_index.extend([state_length - 1, *range(start, end - 1)])
        start = end

    mask = torch.zeros((length, length), dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return PackedGroup(
        input_ids=torch.tensor(state + [t for a in action_ids for t in a], dtype=torch.long),
        position_ids=torch.tensor(position_ids, dtype=torch.long),
        segment_ids=torch.tensor(segment_ids, dtype=torch.long),
        logit_index=torch.tensor(logit_index, dtype=torch.long),
        attention_mask=mask[None, None],
    )


def unpacked_group_rows(state_ids: Sequence[int], actions: Sequence[Sequence[int]]) -> list[tuple[Tensor, Tensor]]:
    """The naive alternative to :func:`pack_group`: one row ``s + a_g`` per action, a_g with segment id 1."""
    return [pack_trajectory([(state_ids, False), (action, True)]) for action in actions]


def batch_groups(groups: Sequence[PackedGroup], pad_id: int) -> GroupBatch:
    """Right-pad packed groups of different lengths into one :class:`GroupBatch`."""
    if not groups:
        raise ValueError("batch_groups needs at least one group")
    dtype = groups[0].attention_mask.dtype
    if any(group.attention_mask.dtype != dtype for group in groups):
        raise ValueError("all groups must use the same attention-mask dtype")
    batch, length = len(groups), max(len(group.input_ids) for group in groups)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    position_ids = torch.zeros((batch, length), dtype=torch.long)
    segment_ids = torch.zeros((batch, length), dtype=torch.long)
    logit_index = torch.full((batch, length), -1, dtype=torch.long)
    attention_mask = torch.full((batch, 1, length, length), torch.finfo(dtype).min, dtype=dtype)
    for row, group in enumerate(groups):
        size = len(group.input_ids)
        input_ids[row, :size] = group.input_ids
        position_ids[row, :size] = group.position_ids
        segment_ids[row, :size] = group.segment_ids
        logit_index[row, :size] = group.logit_index
        attention_mask[row, 0, :size, :size] = group.attention_mask[0, 0]
        padding = torch.arange(size, length)
        attention_mask[row, 0, padding, padding] = 0.0
    return GroupBatch(input_ids, position_ids, segment_ids, logit_index, attention_mask)
