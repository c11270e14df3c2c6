"""Log-probs of chosen tokens through the vocabulary head, a chunk of positions at a time.

A ``[tokens, vocabulary]`` float32 logits tensor of a whole batch is the largest tensor of a training step (49,152
columns for SmolLM2) and autograd would keep it, and its gradient, through the backward pass. Here the head runs on
``chunk_tokens`` positions at a time under activation checkpointing: each chunk's logits exist only while that chunk
is computed, in the forward pass and again in the backward pass, so at most one chunk of logits lives at any time.
The last chunk is kept instead of recomputed (its backward is the first to run), so a pass whose action positions
fit in one chunk costs no extra matmul.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK_TOKENS = 1024
"""Positions per chunk: large enough for an efficient matmul, small enough that a chunk's logits stay small."""


def _chunk(hidden: Tensor, targets: Tensor, head: nn.Module, softcap: float | None) -> tuple[Tensor, Tensor]:
    """Log-probs of ``targets`` under ``head(hidden)`` (fp32) and the summed entropy of those distributions
    (detached)."""
    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    log_normaliser = torch.logsumexp(logits, dim=-1)
    logprobs = logits.gather(1, targets.unsqueeze(1)).squeeze(1) - log_normaliser
    with torch.no_grad():
        entropy = (log_normaliser - (torch.softmax(logits, dim=-1) * logits).sum(-1)).sum()
    return logprobs, entropy


def head_logprobs(hidden: Tensor, targets: Tensor, head: nn.Module, *, softcap: float | None = None,
                  chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> tuple[Tensor, Tensor]:
    """``log softmax(head(hidden))[targets]`` for ``hidden [N, H]`` and ``targets [N]``: fp32 ``[N]``, and the mean
    entropy of the N distributions (detached; 0 when N is 0).

    With autograd on, each chunk of ``chunk_tokens`` positions is checkpointed: no ``[N, vocabulary]`` tensor is
    saved for the backward pass. Without it (old and reference log-probs) the chunks are simply computed in turn.
    """
    if hidden.ndim != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(f"expected hidden [N, H] and targets [N], got {tuple(hidden.shape)} and {tuple(targets.shape)}")
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens: expected a positive integer, got {chunk_tokens}")
    if hidden.shape[0] == 0:  # still attached to the graph, so a batch without action tokens has a loss of 0
        logprobs, _ = _chunk(hidden, targets, head, softcap)
        return logprobs, hidden.new_zeros((), dtype=torch.float32)
    recompute = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head.parameters()))
    pieces, entropy = [], hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_tokens):
        chunk = (hidden[start : start + chunk_tokens], targets[start : start + chunk_tokens], head, softcap)
        # The last chunk's backward runs first, right after the forward pass: its logits, kept, would be freed at the
        # moment a recompute would make them again, so it is not recomputed (nor is a batch of one chunk).
        last = start + chunk_tokens >= hidden.shape[0]
        if recompute and not last:
            logprobs, chunk_entropy = checkpoint(_chunk, *chunk, use_reentrant=False)
        else:
            logprobs, chunk_entropy = _chunk(*chunk)
        pieces.append(logprobs)
        entropy = entropy + chunk_entropy.detach()
    return torch.cat(pieces), entropy / hidden.shape[0]
