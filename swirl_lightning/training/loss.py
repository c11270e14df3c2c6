"""The training objectives of swirl-lightning, in pure torch: ``sft``, ``offline`` and ``swirl``.

Conventions shared by every function here:

* ``logprobs[b, t]`` is log pi(input_ids[b, t] | the tokens that token t attends to), as returned by
  :func:`token_logprobs`. Position 0 of a plain causal row has no prediction and gets 0.
* ``segment_ids[b, t]`` (integer, same shape) says which action token t belongs to: 0 means "not an action
  token" (prompt, tool result, padding); ``k >= 1`` means action ``k`` of row ``b``. One row may hold several
  actions: the K steps of one trajectory, or the G sampled actions of one state.
* Per-action quantities (weights, advantages, per-action log-prob sums) are ``[B, S]`` tensors in which
  **column k-1 holds the value of segment id k**. Every token of action k receives that value; columns
  beyond a row's last action are ignored.
* Losses are normalised by the total number of action tokens in the batch (``segment_ids > 0``), so a
  packed batch and its decomposition into one row per action give the same loss when they hold the same
  action tokens. With no action token at all a loss is 0 (still attached to the graph).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "token_logprobs",
    "token_entropy",
    "masked_mean",
    "per_token",
    "segment_sums",
    "sft_loss",
    "offline_loss",
    "group_advantages",
    "swirl_loss",
]


def _shifted_logit_index(input_ids: Tensor) -> Tensor:
    """Plain causal alignment: token t is predicted by the logits at t-1 (-1 for position 0)."""
    batch, length = input_ids.shape
    index = torch.arange(length, device=input_ids.device) - 1
    return index.unsqueeze(0).expand(batch, length)


def _check_logits(logits: Tensor, input_ids: Tensor, logit_index: Tensor | None) -> Tensor:
    if logits.ndim != 3 or input_ids.ndim != 2 or logits.shape[:2] != input_ids.shape:
        raise ValueError(
            f"expected logits [B, T, V] and input_ids [B, T], got {tuple(logits.shape)} and {tuple(input_ids.shape)}"
        )
    if logit_index is None:
        return _shifted_logit_index(input_ids)
    if logit_index.shape != input_ids.shape:
        raise ValueError(f"logit_index must have shape {tuple(input_ids.shape)}, got {tuple(logit_index.shape)}")
    return logit_index


def token_logprobs(logits: Tensor, input_ids: Tensor, logit_index: Tensor | None = None) -> Tensor:
    """Log-probability of every token given what it attends to, in fp32, shape ``[B, T]``.

    ``logit_index[b, t]`` is the position whose logits predict token t (default ``t - 1``, the causal
    shift); a negative index means "no prediction" and gives 0. Packed groups ``[s, a_1, ..., a_G]`` need
    it because the first token of every ``a_g`` is predicted by the last state token, not by the token
    just before it in the row (see ``packing.pack_group``).

    Computed row by row as ``logit[token] - logsumexp(logits)`` so that, without autograd (old and
    reference log-probs), at most one row of fp32 logits exists at a time.
    """
    logit_index = _check_logits(logits, input_ids, logit_index)
    source = logit_index.clamp(min=0)
    rows = []
    for b in range(logits.shape[0]):
        row = logits[b].float()
        log_normaliser = torch.logsumexp(row, dim=-1)
        rows.append(row[source[b], input_ids[b]] - log_normaliser[source[b]])
    return torch.stack(rows).masked_fill(logit_index < 0, 0.0)


@torch.no_grad()
def token_entropy(logits: Tensor, mask: Tensor, logit_index: Tensor | None = None) -> Tensor:
    """Mean entropy (nats) of the distributions that predicted the tokens where ``mask`` is true; detached.

    ``mask`` is aligned with the tokens (e.g. ``segment_ids > 0``) and ``logit_index`` as in
    :func:`token_logprobs`, so this is the entropy of the policy at exactly the action tokens.
    """
    input_ids = torch.zeros(mask.shape, dtype=torch.long, device=logits.device)
    logit_index = _check_logits(logits, input_ids, logit_index)
    mask = mask.bool() & (logit_index >= 0)
    total = logits.new_zeros((), dtype=torch.float32)
    for b in range(logits.shape[0]):
        if mask[b].any():
            row = logits[b, logit_index[b][mask[b]]].float()
            entropy = torch.logsumexp(row, -1) - (torch.softmax(row, -1) * row).sum(-1)
            total = total + entropy.sum()
    return total / mask.sum().clamp(min=1)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` is true; 0 when the mask is empty. NaNs outside the mask are ignored."""
    mask = mask.bool()
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp(min=1)


def _num_segments(segment_ids: Tensor) -> int:
    return int(segment_ids.max().item()) if segment_ids.numel() else 0


def per_token(values: Tensor, segment_ids: Tensor) -> Tensor:
    """Spread per-action values ``[B, S]`` onto tokens ``[B, T]``.

    Token t of row b gets ``values[b, segment_ids[b, t] - 1]``; tokens outside actions get 0.
    """
    if values.ndim != 2 or values.shape[0] != segment_ids.shape[0]:
        raise ValueError(f"expected per-action values [B={segment_ids.shape[0]}, S], got {tuple(values.shape)}")
    if segment_ids.numel() and segment_ids.min() < 0:
        raise ValueError("segment_ids must be >= 0 (0 = not an action token)")
    needed = _num_segments(segment_ids)
    if values.shape[1] < needed:
        raise ValueError(f"segment_ids go up to {needed} but only {values.shape[1]} per-action values were given")
    with_zero = torch.nn.functional.pad(values, (1, 0))
    return with_zero.gather(1, segment_ids.long())


def segment_sums(values: Tensor, segment_ids: Tensor, num_segments: int | None = None) -> Tensor:
    """Sum ``values [B, T]`` over the tokens of each action: ``[B, S]``, column k-1 = segment k."""
    if values.shape != segment_ids.shape:
        raise ValueError(f"values {tuple(values.shape)} and segment_ids {tuple(segment_ids.shape)} must match")
    count = _num_segments(segment_ids) if num_segments is None else num_segments
    sums = values.new_zeros(values.shape[0], count + 1)
    sums = sums.scatter_add(1, segment_ids.long(), values)
    return sums[:, 1:]


def sft_loss(logprobs: Tensor, segment_ids: Tensor) -> Tensor:
    """Negative log-likelihood, mean over all action tokens of the batch."""
    return -masked_mean(logprobs, segment_ids > 0)


def offline_loss(logprobs: Tensor, segment_ids: Tensor, weights: Tensor) -> Tensor:
    """``- sum_k w_k * sum_t log pi(a_k,t) / (number of action tokens)``; ``weights [B, S]``, column k-1 = action k."""
    token_weights = per_token(weights.to(logprobs.dtype), segment_ids).detach()
    return -masked_mean(token_weights * logprobs, segment_ids > 0)


def group_advantages(
    rewards: Tensor,
    mode: Literal["mean", "leave_one_out"] = "mean",
    normalize_std: bool = False,
    eps: float = 1e-6,
    valid: Tensor | None = None,
) -> Tensor:
    """Advantages of the G actions sampled for each of N states, from ``rewards [N, G]``.

    ``mean``: ``A_g = r_g - mean(r)``. ``leave_one_out``: ``A_g = r_g - mean_{j != g} r_j``
    (= ``G / (G-1) * (r_g - mean(r))``, needs G >= 2). With ``normalize_std`` the result is divided by
    ``std(r) + eps``, the population standard deviation of the group (defined for every G, 0 when all
    rewards are equal, so a uniform group gets zero advantages, not NaN).

    ``valid [N, G]`` (bool) leaves samples out: a judge failure has no reward (its entry may be NaN), so the
    group's statistics are those of its valid samples (G becomes their count) and an invalid sample's advantage
    is 0. A group with one valid sample (two for ``leave_one_out``) has no baseline and gets zero advantages.
    """
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be [N states, G actions], got shape {tuple(rewards.shape)}")
    if valid is not None and valid.shape != rewards.shape:
        raise ValueError(f"valid must have the shape of rewards {tuple(rewards.shape)}, got {tuple(valid.shape)}")
    if mode not in ("mean", "leave_one_out"):
        raise ValueError(f"unknown advantage mode {mode!r}; expected 'mean' or 'leave_one_out'")
    rewards = rewards.float()
    group_size = rewards.shape[1]
    if mode == "leave_one_out" and group_size < 2:
        raise ValueError("leave_one_out advantages need at least 2 actions per state")
    valid = torch.ones_like(rewards, dtype=torch.bool) if valid is None else valid.bool()
    count = valid.sum(dim=1, keepdim=True).float()
    present = torch.where(valid, rewards, torch.zeros_like(rewards))
    mean = present.sum(dim=1, keepdim=True) / count.clamp(min=1)
    centred = torch.where(valid, rewards - mean, torch.zeros_like(rewards))
    if mode == "mean":
        advantages = torch.where(count >= 2, centred, torch.zeros_like(centred))
    else:
        advantages = torch.where(count >= 2, centred * count / (count - 1).clamp(min=1), torch.zeros_like(centred))
    if normalize_std:
        std = ((centred ** 2).sum(dim=1, keepdim=True) / count.clamp(min=1)).sqrt()
        advantages = advantages / (std + eps)
    return advantages


def swirl_loss(
    logprobs: Tensor,
    segment_ids: Tensor,
    advantages: Tensor,
    old_logprobs: Tensor | None = None,
    ref_logprobs: Tensor | None = None,
    kl_beta: float = 0.0,
    clip_eps: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Token-level clipped policy gradient with an optional k3 KL penalty to a frozen reference.

    Per action token: ``ratio = exp(logp - old_logp)``, objective ``min(ratio * A, clip(ratio, 1-eps, 1+eps) * A)``
    with A the advantage of the token's action (``advantages [B, S]``, column k-1 = action k). The loss is
    ``-sum(objective) / n + kl_beta * sum(k3) / n`` with n the number of action tokens and
    ``k3 = exp(ref - logp) - (ref - logp) - 1``. Without ``old_logprobs`` the ratio is 1 with the gradient of
    ``logp`` (the old log-probs are the detached current ones), so the gradient is plain REINFORCE:
    ``-sum_t A_t * grad logp_t / n``.

    Returns the loss and detached stats: ``policy_loss``, ``kl`` (mean k3 over action tokens, 0 without a
    reference), ``clip_fraction`` (share of action tokens whose gradient the clip cuts), ``ratio_mean``,
    ``advantage_mean`` (over action tokens) and ``action_tokens``.
    """
    if kl_beta and ref_logprobs is None:
        raise ValueError("kl_beta > 0 needs ref_logprobs (log-probs of the frozen reference model)")
    for name, other in (("old_logprobs", old_logprobs), ("ref_logprobs", ref_logprobs)):
        if other is not None and other.shape != logprobs.shape:
            raise ValueError(f"{name} shape {tuple(other.shape)} differs from logprobs {tuple(logprobs.shape)}")
    mask = segment_ids > 0
    token_advantages = per_token(advantages.to(logprobs.dtype), segment_ids).detach()
    old = logprobs.detach() if old_logprobs is None else old_logprobs.detach()
    # Off-action positions may hold anything (padding, -inf); zero them before exp.
    log_ratio = torch.where(mask, logprobs - old, torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio)
    clipped_ratio = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    objective = torch.minimum(ratio * token_advantages, clipped_ratio * token_advantages)
    policy_loss = -masked_mean(objective, mask)

    kl = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    loss = policy_loss
    if ref_logprobs is not None:
        ref_minus_policy = torch.where(mask, ref_logprobs.detach() - logprobs, torch.zeros_like(logprobs))
        kl = masked_mean(torch.exp(ref_minus_policy) - ref_minus_policy - 1.0, mask)
        if kl_beta:
            loss = loss + kl_beta * kl

    clipped = ((ratio > 1.0 + clip_eps) & (token_advantages > 0)) | ((ratio < 1.0 - clip_eps) & (token_advantages < 0))
    stats = {
        "policy_loss": policy_loss.detach(),
        "kl": kl.detach(),
        "clip_fraction": masked_mean(clipped.float(), mask),
        "ratio_mean": masked_mean(ratio.detach(), mask),
        "advantage_mean": masked_mean(token_advantages, mask),
        "action_tokens": mask.sum(),
    }
    return loss, stats
