"""The plan of micro-batches (the objectives' equality with one pass per batch is in test_module.py)."""

import torch

from swirl_lightning.training.micro_batches import plan_micro_batches, take_rows


def test_plan_puts_rows_of_similar_length_together_under_the_budget():
    lengths = [5, 30, 10, 28, 9, 100]
    assert plan_micro_batches(lengths, 60) == [[5], [1, 3], [2, 4, 0]]  # 100 alone; 2 x 30; 3 x 10
    assert plan_micro_batches(lengths, 0) == [[0, 1, 2, 3, 4, 5]]  # 0: one pass, in order
    assert plan_micro_batches(lengths, 1) == [[5], [1], [3], [2], [4], [0]]
    assert plan_micro_batches([], 60) == [[]]
    for budget in (1, 20, 60, 1000):
        plan = plan_micro_batches(lengths, budget)
        assert sorted(r for rows in plan for r in rows) == list(range(len(lengths)))
        assert all(len(rows) == 1 or len(rows) * max(lengths[r] for r in rows) <= budget for rows in plan)


def test_take_rows_cuts_the_padding_of_every_sequence_dimension():
    mask = torch.arange(3 * 1 * 4 * 4).reshape(3, 1, 4, 4)
    taken = take_rows(mask, [2, 0], 3, (2, 3))
    assert taken.shape == (2, 1, 3, 3) and torch.equal(taken[0], mask[2, :, :3, :3])
    assert torch.equal(take_rows(mask, [1]), mask[1:2])
