"""The vocabulary head in chunks (training/head.py): log-probs, entropy and gradients equal the full-logits
computation, and no [tokens, vocabulary] tensor of a batch is kept for the backward pass."""

import pytest
import torch
from torch.testing import assert_close
from transformers import LlamaConfig, LlamaForCausalLM

from swirl_lightning.training.head import head_logprobs
from swirl_lightning.training.loss import swirl_loss, token_entropy, token_logprobs
from swirl_lightning.training.packing import batch_groups, pack_group, pack_trajectory, pad_rows
from swirl_lightning.training.policy import ActionScorer

VOCAB = 512
TOLERANCE = dict(atol=1e-5, rtol=1e-5)


def tiny_llama(seed: int = 0, softcap: float | None = None) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         attn_implementation="sdpa", tie_word_embeddings=True)
    config.final_logit_softcapping = softcap  # Gemma-2's; the scorer applies it when the config has it
    return LlamaForCausalLM(config).float()


def ids(generator: torch.Generator, length: int) -> list[int]:
    return torch.randint(1, VOCAB, (length,), generator=generator).tolist()


def trajectory_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    rows = [pack_trajectory([(ids(g, 6), False), (ids(g, 9), True), (ids(g, 5), False), (ids(g, 7), True)]),
            pack_trajectory([(ids(g, 4), False), (ids(g, 3), True)])]
    batch = pad_rows(rows, pad_id=0)
    return dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, segment_ids=batch.segment_ids)


def group_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    groups = [pack_group(ids(g, 7), [ids(g, 5), ids(g, 1), ids(g, 8)]), pack_group(ids(g, 3), [ids(g, 6), ids(g, 2)])]
    batch = batch_groups(groups, pad_id=0)
    return {name: getattr(batch, name) for name in
            ("input_ids", "attention_mask", "segment_ids", "position_ids", "logit_index")}


def full_logits_reference(model: LlamaForCausalLM, inputs: dict[str, torch.Tensor], softcap: float | None):
    """The computation the chunked head replaced: the logits of every position, then the log-probs of the tokens."""
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                   position_ids=inputs.get("position_ids")).logits
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    logprobs = token_logprobs(logits, inputs["input_ids"], inputs.get("logit_index"))
    mask = inputs["segment_ids"] > 0
    return logprobs.masked_fill(~mask, 0.0), token_entropy(logits, mask, inputs.get("logit_index"))


def loss_and_gradients(logprobs: torch.Tensor, inputs: dict[str, torch.Tensor], model: torch.nn.Module):
    advantages = torch.tensor([[0.5, -1.0, 2.0], [1.5, -0.25, 0.0]])
    loss, _ = swirl_loss(logprobs, inputs["segment_ids"], advantages)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


@pytest.mark.parametrize("layout", ["trajectories", "groups"])
@pytest.mark.parametrize("chunk_tokens", [1, 5, 1024])
@pytest.mark.parametrize("softcap", [None, 3.0])
def test_chunked_head_equals_the_full_logits_in_logprobs_entropy_loss_and_gradients(layout, chunk_tokens, softcap):
    model = tiny_llama(softcap=softcap)
    inputs = trajectory_inputs() if layout == "trajectories" else group_inputs()
    expected_logprobs, expected_entropy = full_logits_reference(model, inputs, softcap)
    expected_loss, expected_grads = loss_and_gradients(expected_logprobs, inputs, model)

    logprobs, entropy = ActionScorer(model, chunk_tokens=chunk_tokens)(**inputs)
    loss, grads = loss_and_gradients(logprobs, inputs, model)

    assert_close(logprobs.detach(), expected_logprobs.detach(), **TOLERANCE)
    assert_close(entropy, expected_entropy, **TOLERANCE)
    assert_close(loss, expected_loss, **TOLERANCE)
    assert grads.keys() == expected_grads.keys() and len(grads) > 0
    for name in grads:
        assert_close(grads[name], expected_grads[name], **TOLERANCE, msg=lambda m, name=name: f"{name}: {m}")


def saved_for_backward(run, model: torch.nn.Module | None = None) -> list[torch.Size]:
    """The shapes of every tensor autograd saves for the backward pass while ``run()`` builds its graph (but
    ``model``'s weights, which take no memory of their own)."""
    shapes = []
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()} if model is not None else set()

    def pack(tensor):
        if tensor.untyped_storage().data_ptr() not in weights:
            shapes.append(tensor.shape)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return shapes


def test_no_full_vocabulary_logits_of_the_batch_are_kept_for_backward():
    """A scaled memory test: 60 action tokens, chunks of 16; a [>16, vocabulary] tensor saved for backward would mean
    the whole batch's logits came back."""
    model = tiny_llama()
    g = torch.Generator().manual_seed(5)
    batch = batch_groups([pack_group(ids(g, 20), [ids(g, 15) for _ in range(4)])], pad_id=0)
    inputs = {name: getattr(batch, name) for name in
              ("input_ids", "attention_mask", "segment_ids", "position_ids", "logit_index")}
    assert int((inputs["segment_ids"] > 0).sum()) == 60

    def vocabulary_rows(shapes: list[torch.Size]) -> int:
        return max((shape[:-1].numel() for shape in shapes if len(shape) >= 1 and shape[-1] == VOCAB), default=0)

    chunked = saved_for_backward(lambda: ActionScorer(model, chunk_tokens=16)(**inputs), model)
    assert vocabulary_rows(chunked) == 60 - 3 * 16  # the last chunk's logits only (kept: its backward runs first)
    assert max(shape.numel() for shape in chunked) < 60 * VOCAB
    # The check sees the tensor it guards against: the full-logits computation saves it.
    assert vocabulary_rows(saved_for_backward(lambda: full_logits_reference(model, inputs, None))) >= 60


def test_a_batch_without_action_tokens_has_a_zero_loss_still_attached_to_the_graph():
    model = tiny_llama()
    inputs = trajectory_inputs()
    inputs["segment_ids"] = torch.zeros_like(inputs["segment_ids"])
    logprobs, entropy = ActionScorer(model)(**inputs)
    loss, _ = swirl_loss(logprobs, inputs["segment_ids"], torch.zeros(2, 1))
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(entropy) == 0.0


def test_head_logprobs_rejects_mismatched_shapes():
    head = torch.nn.Linear(4, VOCAB, bias=False)
    with pytest.raises(ValueError, match=r"expected hidden \[N, H\] and targets \[N\]"):
        head_logprobs(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long), head)
    with pytest.raises(ValueError, match="chunk_tokens: expected a positive integer"):
        head_logprobs(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), head, chunk_tokens=0)


def test_only_the_chunks_before_the_last_are_recomputed_in_the_backward_pass():
    model = tiny_llama()
    head = model.get_output_embeddings()
    g = torch.Generator().manual_seed(6)
    hidden = torch.randn(40, head.in_features, generator=g, requires_grad=True)
    targets = torch.randint(0, VOCAB, (40,), generator=g)
    calls = []
    hook = head.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        for chunk_tokens, expected in ((64, [40]), (16, [16, 16, 8, 16, 16])):  # forward, then the recomputes
            calls.clear()
            logprobs, _ = head_logprobs(hidden, targets, head, chunk_tokens=chunk_tokens)
            logprobs.sum().backward()
            assert calls == expected
    finally:
        hook.remove()
