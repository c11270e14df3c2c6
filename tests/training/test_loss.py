"""The objectives of swirl_lightning.training.loss against values worked out by hand."""

import math

import pytest
import torch
from torch.testing import assert_close

from swirl_lightning.training.loss import (
    group_advantages,
    masked_mean,
    offline_loss,
    per_token,
    segment_sums,
    sft_loss,
    swirl_loss,
    token_entropy,
    token_logprobs,
)

# Two rows; row 0 holds actions 1 (two tokens) and 2 (one token), row 1 holds action 1 (two tokens).
LOGPROBS = torch.tensor([[0.0, -1.0, -2.0, -0.5], [0.0, -0.2, -3.0, -1.5]])
SEGMENTS = torch.tensor([[0, 1, 1, 2], [0, 0, 1, 1]])


def test_token_logprobs_is_the_shifted_log_softmax() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    logprobs = token_logprobs(logits, ids)
    assert logprobs.shape == (2, 5) and logprobs.dtype == torch.float32
    assert torch.all(logprobs[:, 0] == 0)
    for b in range(2):
        for t in range(1, 5):
            expected = logits[b, t - 1, ids[b, t]] - torch.logsumexp(logits[b, t - 1], -1)
            assert_close(logprobs[b, t], expected)


def test_token_logprobs_follows_logit_index_and_upcasts_bf16() -> None:
    torch.manual_seed(1)
    logits = torch.randn(1, 4, 6).to(torch.bfloat16)
    ids = torch.tensor([[1, 2, 3, 4]])
    logit_index = torch.tensor([[-1, 0, 0, 2]])  # token 2 is predicted by position 0, like a packed group
    logprobs = token_logprobs(logits, ids, logit_index)
    assert logprobs.dtype == torch.float32
    reference = torch.log_softmax(logits.float(), -1)
    expected = torch.stack([torch.tensor(0.0), reference[0, 0, 2], reference[0, 0, 3], reference[0, 2, 4]])
    assert_close(logprobs[0], expected)


def test_token_entropy_of_known_distributions() -> None:
    # position 0 is uniform over 4 tokens (entropy ln 4); position 1 puts 1/4, 3/4 on two tokens.
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -1e4, -1e4], [5.0, 0.0, 0.0, 0.0]]])
    two_point = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    mask = torch.tensor([[False, True, True]])  # tokens 1 and 2, predicted by positions 0 and 1
    assert_close(token_entropy(logits, mask), torch.tensor((math.log(4.0) + two_point) / 2))
    only_second = torch.tensor([[False, False, True]])
    assert_close(token_entropy(logits, only_second), torch.tensor(two_point))


def test_masked_mean_ignores_values_outside_the_mask() -> None:
    values = torch.tensor([1.0, float("nan"), 3.0, float("-inf")])
    assert_close(masked_mean(values, torch.tensor([True, False, True, False])), torch.tensor(2.0))
    assert masked_mean(values, torch.zeros(4, dtype=torch.bool)).item() == 0.0


def test_per_token_and_segment_sums_use_column_k_minus_1() -> None:
    values = torch.tensor([[10.0, 20.0], [30.0, 40.0]])
    assert_close(per_token(values, SEGMENTS), torch.tensor([[0.0, 10.0, 10.0, 20.0], [0.0, 0.0, 30.0, 30.0]]))
    # row 0: action 1 = -1 + -2, action 2 = -0.5; row 1: action 1 = -3 + -1.5, no action 2.
    assert_close(segment_sums(LOGPROBS, SEGMENTS), torch.tensor([[-3.0, -0.5], [-4.5, 0.0]]))
    with pytest.raises(ValueError, match="go up to 2"):
        per_token(values[:, :1], SEGMENTS)


def test_sft_loss_is_the_mean_nll_over_action_tokens() -> None:
    # action tokens: -1, -2, -0.5, -3, -1.5 -> sum -8 over 5 tokens
    assert_close(sft_loss(LOGPROBS, SEGMENTS), torch.tensor(8.0 / 5.0))


def test_offline_loss_weights_each_action() -> None:
    weights = torch.tensor([[0.5, 2.0], [1.0, 7.0]])  # 7.0 belongs to an action row 1 does not have
    # 0.5 * (-1 - 2) + 2.0 * (-0.5) + 1.0 * (-3 - 1.5) = -1.5 - 1.0 - 4.5 = -7.0, over 5 action tokens
    assert_close(offline_loss(LOGPROBS, SEGMENTS, weights), torch.tensor(7.0 / 5.0))
    # weights of one reproduce sft
    assert_close(offline_loss(LOGPROBS, SEGMENTS, torch.ones(2, 2)), sft_loss(LOGPROBS, SEGMENTS))


def test_group_advantages_mean_leave_one_out_and_std() -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0], [0.3, 0.3, 0.3, 0.3]])
    # group means 0.5, 0.75, 0.3
    assert_close(
        group_advantages(rewards, "mean"),
        torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.25, 0.25, 0.25, -0.75], [0.0, 0.0, 0.0, 0.0]]),
    )
    # leave-one-out, row 0 action 0: 1 - (0 + 0 + 1) / 3 = 2/3; row 1 action 3: 0 - (1 + 1 + 1) / 3 = -1
    assert_close(
        group_advantages(rewards, "leave_one_out"),
        torch.tensor([[2 / 3, -2 / 3, -2 / 3, 2 / 3], [1 / 3, 1 / 3, 1 / 3, -1.0], [0.0, 0.0, 0.0, 0.0]]),
    )
    # population std: row 0 is 0.5; row 1 is sqrt((3 * 0.25^2 + 0.75^2) / 4) = sqrt(0.1875); row 2 is 0
    std_1 = math.sqrt(0.1875)
    assert_close(
        group_advantages(rewards, "mean", normalize_std=True, eps=0.0)[:2],
        torch.tensor([[1.0, -1.0, -1.0, 1.0], [0.25 / std_1, 0.25 / std_1, 0.25 / std_1, -0.75 / std_1]]),
    )
    assert torch.all(group_advantages(rewards, normalize_std=True)[2] == 0)  # uniform group: zero, not NaN
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(torch.ones(3, 1), "leave_one_out")
    with pytest.raises(ValueError, match="unknown advantage mode"):
        group_advantages(rewards, "median")  # type: ignore[arg-type]


def test_swirl_loss_clipping_by_hand() -> None:
    segments = torch.tensor([[0, 1, 1, 1, 2, 2, 2]])
    advantages = torch.tensor([[1.0, -1.0]])
    ratios = torch.tensor([[1.0, 1.5, 0.9, 0.5, 0.5, 1.1, 1.5]])
    old = torch.zeros(1, 7)
    logprobs = torch.log(ratios).requires_grad_()
    loss, stats = swirl_loss(logprobs, segments, advantages, old_logprobs=old, clip_eps=0.2)
    # action 1 (A=+1): min(1.5, 1.2)=1.2 clipped; min(0.9, 0.9)=0.9; min(0.5, 0.8)=0.5 (not clipped)
    # action 2 (A=-1): min(-0.5, -0.8)=-0.8 clipped; min(-1.1, -1.1)=-1.1; min(-1.5, -1.2)=-1.5 (not clipped)
    # sum = 1.2 + 0.9 + 0.5 - 0.8 - 1.1 - 1.5 = -0.8 over 6 tokens -> loss = 0.8 / 6
    assert_close(loss, torch.tensor(0.8 / 6))
    assert_close(stats["clip_fraction"], torch.tensor(2 / 6))
    assert_close(stats["ratio_mean"], torch.tensor((1.5 + 0.9 + 0.5 + 0.5 + 1.1 + 1.5) / 6))
    assert stats["action_tokens"].item() == 6 and stats["kl"].item() == 0.0
    loss.backward()
    # d(-ratio * A / 6) / d logp = -A * ratio / 6 where not clipped, 0 where clipped
    expected_grad = torch.tensor([[0.0, 0.0, -0.9 / 6, -0.5 / 6, 0.0, 1.1 / 6, 1.5 / 6]])
    assert_close(logprobs.grad, expected_grad)


def test_swirl_loss_k3_kl_by_hand() -> None:
    logprobs = torch.tensor([[0.0, -1.0, -2.0]], requires_grad=True)
    reference = torch.tensor([[0.0, -1.5, -1.0]])
    segments = torch.tensor([[0, 1, 1]])
    # ref - logp = -0.5 and 1.0: k3 = exp(-0.5) + 0.5 - 1 and exp(1) - 1 - 1
    kl_by_hand = ((math.exp(-0.5) + 0.5 - 1.0) + (math.exp(1.0) - 2.0)) / 2
    loss, stats = swirl_loss(logprobs, segments, torch.zeros(1, 1), ref_logprobs=reference, kl_beta=0.1)
    assert_close(stats["kl"], torch.tensor(kl_by_hand))
    assert_close(loss, torch.tensor(0.1 * kl_by_hand))  # zero advantages: only the KL term
    loss.backward()
    # d k3 / d logp = 1 - exp(ref - logp), times beta / 2 tokens
    assert_close(logprobs.grad, torch.tensor([[0.0, 0.1 * (1 - math.exp(-0.5)) / 2, 0.1 * (1 - math.exp(1.0)) / 2]]))
    with pytest.raises(ValueError, match="needs ref_logprobs"):
        swirl_loss(logprobs, segments, torch.zeros(1, 1), kl_beta=0.1)


def test_swirl_gradient_without_old_logprobs_is_reinforce() -> None:
    torch.manual_seed(2)
    vocab = 5
    logits = torch.randn(2, 4, vocab, requires_grad=True)
    ids = torch.randint(0, vocab, (2, 4))
    segments = torch.tensor([[0, 1, 2, 2], [0, 0, 1, 1]])
    advantages = torch.tensor([[0.7, -1.3], [2.0, 0.0]])
    loss, stats = swirl_loss(token_logprobs(logits, ids), segments, advantages)
    assert_close(stats["ratio_mean"], torch.tensor(1.0))
    loss.backward()
    # grad of log pi(y_t) w.r.t. the logits at t-1 is onehot(y_t) - softmax; each scaled by -A_t / n
    expected = torch.zeros_like(logits)
    n_tokens = 5
    for b in range(2):
        for t in range(1, 4):
            segment = int(segments[b, t])
            if segment:
                onehot = torch.nn.functional.one_hot(ids[b, t], vocab).float()
                softmax = torch.softmax(logits[b, t - 1].detach(), -1)
                expected[b, t - 1] += -advantages[b, segment - 1] * (onehot - softmax) / n_tokens
    assert_close(logits.grad, expected)


def test_group_advantages_leave_failed_samples_out():
    nan = float("nan")
    rewards = torch.tensor([[1.0, nan, 0.0, 0.0], [nan, nan, 1.0, nan], [nan, nan, nan, nan], [1.0, 0.0, 1.0, 0.0]])
    valid = ~rewards.isnan()
    advantages = group_advantages(rewards, "mean", valid=valid)
    assert torch.isfinite(advantages).all() and not advantages[~valid].any()  # a failure has no advantage
    torch.testing.assert_close(advantages[0], torch.tensor([2 / 3, 0.0, -1 / 3, -1 / 3]))  # the mean of the 3 judged
    assert not advantages[1].any() and not advantages[2].any()  # one judged sample (or none): no baseline
    torch.testing.assert_close(advantages[3], group_advantages(rewards[3:], "mean")[0])  # all judged: as before
    loo = group_advantages(rewards, "leave_one_out", valid=valid)
    torch.testing.assert_close(loo[0], torch.tensor([1.0, 0.0, -0.5, -0.5]))  # 1 - mean(0, 0); 0 - mean(1, 0)
    normalized = group_advantages(rewards, "mean", normalize_std=True, valid=valid)
    std = torch.tensor([1.0, 0.0, 0.0]).std(correction=0)
    torch.testing.assert_close(normalized[0, [0, 2, 3]], advantages[0, [0, 2, 3]] / (std + 1e-6))
    with pytest.raises(ValueError, match="valid must have the shape"):
        group_advantages(rewards, valid=valid[:2])
