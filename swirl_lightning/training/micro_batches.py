"""Micro-batches: a batch's rows split into forward and backward passes of bounded size, whose gradients add up to
the batch's.

Every built-in loss is a sum over action tokens divided by the batch's action tokens, so a pass's loss (a mean over
its own action tokens) weighted by its share of the batch's action tokens gives exactly the batch's loss and
gradients, whatever the split. Smaller passes keep fewer activations alive at once; rows of similar length share a
pass, and each pass is cut to its own longest row, so less padding is computed too.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["plan_micro_batches", "take_rows"]


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
