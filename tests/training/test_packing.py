"""Shared-prefix packing: its layout, and equality with one forward pass per action on a tiny Llama."""

import pytest
import torch
from torch.testing import assert_close
from transformers import LlamaConfig, LlamaForCausalLM

from swirl_lightning.training.loss import offline_loss, segment_sums, sft_loss, swirl_loss, token_logprobs
from swirl_lightning.training.packing import (
    batch_groups,
    pack_group,
    pack_trajectory,
    pad_rows,
    unpacked_group_rows,
    unpacked_trajectory_rows,
)

VOCAB, PAD_ID = 128, 0
TOLERANCE = dict(atol=1e-5, rtol=0.0)


def tiny_llama(attn_implementation: str, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        attn_implementation=attn_implementation,
    )
    return LlamaForCausalLM(config).float()


def random_ids(generator: torch.Generator, length: int) -> list[int]:
    return torch.randint(1, VOCAB, (length,), generator=generator).tolist()


def trajectories() -> list[list[tuple[list[int], bool]]]:
    """Two trajectories of different lengths: prompt, a_1, o_1, a_2, o_2, a_3 and prompt, a_1, o_1, a_2."""
    g = torch.Generator().manual_seed(3)
    return [
        [(random_ids(g, 6), False), (random_ids(g, 4), True), (random_ids(g, 5), False),
         (random_ids(g, 3), True), (random_ids(g, 2), False), (random_ids(g, 5), True)],
        [(random_ids(g, 4), False), (random_ids(g, 2), True), (random_ids(g, 3), False), (random_ids(g, 6), True)],
    ]


def groups() -> list[tuple[list[int], list[list[int]]]]:
    """Two states with 3 and 2 sampled actions of different lengths (so the batch needs padding)."""
    g = torch.Generator().manual_seed(4)
    return [
        (random_ids(g, 7), [random_ids(g, 3), random_ids(g, 1), random_ids(g, 4)]),
        (random_ids(g, 3), [random_ids(g, 2), random_ids(g, 5)]),
    ]


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def assert_same_gradients(packed: dict[str, torch.Tensor], separate: dict[str, torch.Tensor]) -> None:
    assert packed.keys() == separate.keys() and len(packed) > 0
    for name in packed:
        assert_close(packed[name], separate[name], **TOLERANCE, msg=lambda m, name=name: f"{name}: {m}")


def test_pack_trajectory_layout_and_decomposition() -> None:
    segments = [([1, 2], False), ([3], True), ([4, 5], False), ([6, 7], True)]
    input_ids, segment_ids = pack_trajectory(segments)
    assert input_ids.tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert segment_ids.tolist() == [0, 0, 1, 0, 0, 2, 2]
    rows = unpacked_trajectory_rows(segments)
    assert [(ids.tolist(), seg.tolist()) for ids, seg in rows] == [
        ([1, 2, 3], [0, 0, 1]),
        ([1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 0, 0, 1, 1]),
    ]
    batch = pad_rows(rows, pad_id=99)
    assert batch.input_ids[0].tolist() == [1, 2, 3, 99, 99, 99, 99]
    assert batch.attention_mask[0].tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert batch.segment_ids[0].tolist() == [0, 0, 1, 0, 0, 0, 0]


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ([([1], False), ([], True)], "empty action"),
        ([([1], True)], "no prompt before it"),
        ([([1, 2], False)], "no action"),
        ([([1, -2], False), ([3], True)], ">= 0"),
    ],
)
def test_pack_trajectory_rejects_bad_segments(segments: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pack_trajectory(segments)


def test_pack_group_layout() -> None:
    group = pack_group([10, 11], [[20, 21], [30]])
    assert group.input_ids.tolist() == [10, 11, 20, 21, 30]
    assert group.position_ids.tolist() == [0, 1, 2, 3, 2]
    assert group.segment_ids.tolist() == [0, 0, 1, 1, 2]
    assert group.logit_index.tolist() == [-1, 0, 1, 2, 1]
    allowed = (group.attention_mask == 0).int()[0, 0].tolist()
    assert allowed == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 0, 0, 1],  # a_2 sees the state and itself, never a_1
    ]
    assert group.attention_mask.shape == (1, 1, 5, 5)
    assert torch.all(group.attention_mask[group.attention_mask != 0] == torch.finfo(torch.float32).min)
    with pytest.raises(ValueError, match="action 2 is empty"):
        pack_group([1], [[2], []])
    with pytest.raises(ValueError, match="state is empty"):
        pack_group([], [[2]])


def test_batch_groups_pads_keys_and_lets_padded_queries_see_themselves() -> None:
    batch = batch_groups([pack_group([10, 11], [[20, 21], [30]]), pack_group([5], [[6]])], pad_id=PAD_ID)
    assert batch.input_ids[1].tolist() == [5, 6, PAD_ID, PAD_ID, PAD_ID]
    assert batch.logit_index[1].tolist() == [-1, 0, -1, -1, -1]
    assert batch.segment_ids[1].tolist() == [0, 1, 0, 0, 0]
    allowed = (batch.attention_mask[1, 0] == 0).int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 0, 1],
    ]
    assert batch.attention_mask.shape == (2, 1, 5, 5)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_packed_trajectories_equal_one_pass_per_action(attn_implementation: str) -> None:
    model = tiny_llama(attn_implementation)
    data = trajectories()
    weights = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, 0.0]])

    batch = pad_rows([pack_trajectory(t) for t in data], pad_id=PAD_ID)
    total_action_tokens = int((batch.segment_ids > 0).sum())

    def packed_logprobs() -> torch.Tensor:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return token_logprobs(logits, batch.input_ids)

    def separate_passes(weighted: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """K passes, one per sub-trajectory; each loss normalised by the batch's total action tokens."""
        total, action_sums = torch.zeros(()), []
        for row, trajectory in enumerate(data):
            for k, (ids, segments) in enumerate(unpacked_trajectory_rows(trajectory)):
                logprobs = token_logprobs(model(input_ids=ids[None]).logits, ids[None])
                action_sum = logprobs[0][segments == 1].sum()
                weight = weights[row, k] if weighted else 1.0
                loss = -weight * action_sum / total_action_tokens
                loss.backward()  # one graph per pass, as a naive trainer would do
                total = total + loss.detach()
                action_sums.append(action_sum.detach())
        return total, action_sums

    for weighted in (False, True):
        logprobs = packed_logprobs()
        loss = offline_loss(logprobs, batch.segment_ids, weights) if weighted else sft_loss(logprobs, batch.segment_ids)
        loss.backward()
        packed_grads = gradients(model)
        separate_loss, separate_sums = separate_passes(weighted)
        separate_grads = gradients(model)

        packed_sums = segment_sums(logprobs.detach(), batch.segment_ids)
        assert_close(torch.cat([packed_sums[0], packed_sums[1, :2]]), torch.stack(separate_sums), **TOLERANCE)
        assert_close(loss.detach(), separate_loss, **TOLERANCE)
        assert_same_gradients(packed_grads, separate_grads)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_packed_groups_equal_one_pass_per_action(attn_implementation: str) -> None:
    model = tiny_llama(attn_implementation)
    reference = tiny_llama(attn_implementation, seed=1).requires_grad_(False)
    data = groups()
    advantages = torch.tensor([[0.5, -1.0, 0.5], [1.0, -1.0, 0.0]])
    kl_beta = 0.1

    batch = batch_groups([pack_group(state, actions) for state, actions in data], pad_id=PAD_ID)
    inputs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    logits = model(**inputs).logits
    assert torch.isfinite(logits).all()  # padded query rows included
    logprobs = token_logprobs(logits, batch.input_ids, batch.logit_index)
    ref_logprobs = token_logprobs(reference(**inputs).logits, batch.input_ids, batch.logit_index)
    loss, _ = swirl_loss(logprobs, batch.segment_ids, advantages, ref_logprobs=ref_logprobs, kl_beta=kl_beta)
    loss.backward()
    packed_grads = gradients(model)

    total_action_tokens = int((batch.segment_ids > 0).sum())
    separate_loss = torch.zeros(())
    for row, (state, actions) in enumerate(data):
        for g, (ids, segments) in enumerate(unpacked_group_rows(state, actions), start=1):
            row_logprobs = token_logprobs(model(input_ids=ids[None]).logits, ids[None])
            row_ref = token_logprobs(reference(input_ids=ids[None]).logits, ids[None])
            packed_action = logprobs[row][batch.segment_ids[row] == g].detach()
            assert_close(row_logprobs[0][segments == 1], packed_action, **TOLERANCE)
            advantage = advantages[row, g - 1].reshape(1, 1)
            row_loss, _ = swirl_loss(row_logprobs, segments[None], advantage, ref_logprobs=row_ref, kl_beta=kl_beta)
            # swirl_loss normalises by this row's action tokens; renormalise by the whole batch's.
            row_loss = row_loss * len(actions[g - 1]) / total_action_tokens
            row_loss.backward()
            separate_loss = separate_loss + row_loss.detach()
    assert_close(loss.detach(), separate_loss, **TOLERANCE)
    assert_same_gradients(packed_grads, gradients(model))


def test_without_the_group_mask_the_actions_would_see_each_other() -> None:
    """Guards the equality test: packing with the plain causal mask gives different log-probs."""
    model = tiny_llama("sdpa")
    state, actions = groups()[0]
    group = pack_group(state, actions)
    ids = group.input_ids[None]
    with torch.no_grad():
        masked = token_logprobs(
            model(input_ids=ids, attention_mask=group.attention_mask, position_ids=group.position_ids[None]).logits,
            ids,
            group.logit_index[None],
        )
        plain = token_logprobs(model(input_ids=ids).logits, ids, group.logit_index[None])
    later_actions = group.segment_ids[None] >= 2
    assert (masked - plain)[later_actions].abs().max() > 1e-3
