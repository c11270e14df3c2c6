"""Micro-batches: a batch's rows split into forward and backward passes of bounded size, whose gradients add up to
the batch's.

Every built-in loss is a sum over action tokens divided by the batch's action tokens, so a pass's loss (a mean over
its own action tokens) weighted by its share of the batch's action tokens gives exactly the batch's loss and
gradients, whatever the split. Smaller passes keep fewer activations alive at once; rows of similar length share a
pass, and each pass is cut to its own longest row, so less padding is computed too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["backward_in_passes", "check_token_budget", "plan_micro_batches", "take_rows"]

Metrics = dict[str, float | Tensor]


def check_token_budget(max_tokens: int, name: str) -> int:
    """``max_tokens``, the budget of one pass (0: the whole batch in one pass); a ``ValueError`` naming the option
    ``name`` for a negative one."""
    if max_tokens < 0:
        raise ValueError(f"{name}: expected 0 (one pass) or a positive integer, got {max_tokens}")
    return max_tokens


def plan_micro_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """The rows (indices into ``lengths``, each row's real length) of each pass: at most ``max_tokens`` tokens per pass
    (rows x its longest row), a longer row alone; longest rows first, so that rows of similar length share a pass.
    ``max_tokens <= 0``: one pass of every row, in order."""
    if max_tokens <= 0 or not lengths:
        return [list(range(len(lengths)))]
    passes: list[list[int]] = []
    for row in sorted(range(len(lengths)), key=lambda r: (-lengths[r], r)):
        if passes and (len(passes[-1]) + 1) * lengths[passes[-1][0]] <= max_tokens:
            passes[-1].append(row)
        else:
            passes.append([row])
    return passes


def take_rows(tensor: Tensor, rows: Sequence[int], length: int | None = None, sequence_dims: Sequence[int] = (1,)) -> Tensor:
    """``tensor``'s ``rows`` (dim 0), cut to the first ``length`` positions of each of ``sequence_dims`` (right-padded
    rows: what is cut is padding); ``length=None`` keeps them whole."""
    taken = tensor[list(rows)]
    if length is not None:
        for dim in sequence_dims:
            taken = taken.narrow(dim, 0, length)
    return taken


def backward_in_passes(passes: Sequence[tuple[Any, int]], pass_loss: Callable[[Any], tuple[Tensor, Metrics]],
                       backward: Callable[[Tensor], None], *, leave_last: bool = False) -> tuple[Tensor, Metrics]:
    """One update's loss and metrics over a batch's ``passes`` (each ``(data, action_tokens)``), pass by pass: each
    pass's ``pass_loss(data)`` and metrics weighted by its share of the batch's action tokens, its ``backward`` run at
    once, so that only one pass's activations are alive at a time.

    ``leave_last``: the last pass's backward is left to the caller (Lightning's automatic optimization runs it on the
    loss returned), whose value is the whole batch's: the earlier passes' part of it is a constant.
    """
    total = sum(action_tokens for _, action_tokens in passes)
    earlier = torch.zeros(())
    metrics: Metrics = {}
    for index, (data, action_tokens) in enumerate(passes):
        share = action_tokens / total if total else 1 / len(passes)
        loss, pass_metrics = pass_loss(data)
        for name, value in pass_metrics.items():
            metrics[name] = metrics.get(name, 0.0) + share * (value.detach() if isinstance(value, Tensor) else value)
        if leave_last and index == len(passes) - 1:
            return earlier.to(loss.device) + loss * share, metrics
        backward(loss * share)
        earlier = earlier.to(loss.device) + loss.detach() * share
    return earlier, metrics
