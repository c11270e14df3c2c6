"""Shared-prefix packing: the same log-probs and gradients as scoring each row alone, and no packing where it does
not apply."""

import torch
from torch.testing import assert_close
from transformers import LlamaConfig, LlamaForCausalLM

from swirl_lightning.training import prefix_sharing
from swirl_lightning.training.packing import pack_trajectory, pad_rows
from swirl_lightning.training.policy import ActionScorer
from swirl_lightning.training.prefix_sharing import MIN_SHARED_TOKENS, pack_for, shared_prefix_length

VOCAB = 512
TOLERANCE = dict(atol=1e-5, rtol=1e-5)


def tiny_llama(**overrides) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         attn_implementation="sdpa", **overrides)
    return LlamaForCausalLM(config).float().train()


def rows_with_a_shared_prompt(prompt_tokens: int = 24) -> dict[str, torch.Tensor]:
    """Three trajectories of different lengths behind one prompt (right-padded)."""
    g = torch.Generator().manual_seed(5)
    prompt = torch.randint(1, VOCAB, (prompt_tokens,), generator=g).tolist()

    def ids(length: int) -> list[int]:
        return torch.randint(1, VOCAB, (length,), generator=g).tolist()

    rows = [pack_trajectory([(prompt + ids(3), False), (ids(9), True), (ids(5), False), (ids(7), True)]),
            pack_trajectory([(prompt + ids(6), False), (ids(4), True)]),
            pack_trajectory([(prompt, False), (ids(11), True), (ids(2), False), (ids(3), True)])]
    batch = pad_rows(rows, pad_id=0)
    return dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, segment_ids=batch.segment_ids)


def scored(model: torch.nn.Module, inputs: dict[str, torch.Tensor], share_prefix: bool):
    logprobs, entropy = ActionScorer(model, share_prefix=share_prefix)(**inputs)
    weights = torch.linspace(0.5, 2.0, logprobs.numel()).view_as(logprobs)
    (-(logprobs * weights).sum()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return logprobs.detach(), entropy, grads


def test_packed_rows_score_as_each_row_alone_in_logprobs_entropy_and_gradients(monkeypatch):
    model = tiny_llama()
    inputs = rows_with_a_shared_prompt()
    calls = []
    original = prefix_sharing.pack_shared_prefix
    monkeypatch.setattr(prefix_sharing, "pack_shared_prefix", lambda *a: calls.append(a[2]) or original(*a))

    expected = scored(model, inputs, share_prefix=False)
    assert calls == []
    actual = scored(model, inputs, share_prefix=True)
    assert calls == [24]  # the prompt, shared by all three rows, was computed once

    assert_close(actual[0], expected[0], **TOLERANCE)
    assert_close(actual[1], expected[1], **TOLERANCE)
    assert actual[2].keys() == expected[2].keys() and len(expected[2]) > 0
    for name in expected[2]:
        assert_close(actual[2][name], expected[2][name], **TOLERANCE, msg=lambda m, name=name: f"{name}: {m}")


def test_checkpointed_layers_score_rows_unpacked(monkeypatch):
    """A checkpointed layer recomputes in the backward pass, outside the branch attention: no packing then."""
    model = tiny_llama()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    inputs = rows_with_a_shared_prompt()
    packed = []
    original = prefix_sharing.branch_attention_for
    monkeypatch.setattr("swirl_lightning.training.policy.branch_attention_for",
                        lambda m: packed.append(1) or original(m))
    expected = scored(model, inputs, share_prefix=False)
    actual = scored(model, inputs, share_prefix=True)
    assert packed == []
    for name in expected[2]:
        assert_close(actual[2][name], expected[2][name], **TOLERANCE)


def test_the_shared_prefix_stops_at_the_first_difference_padding_or_action():
    inputs = rows_with_a_shared_prompt()
    assert shared_prefix_length(**inputs) == 24
    ids, mask, segments = inputs["input_ids"].clone(), inputs["attention_mask"].clone(), inputs["segment_ids"].clone()
    ids[1, 10] += 1
    assert shared_prefix_length(ids, mask, segments) == 10
    segments[0, 7] = 1
    assert shared_prefix_length(inputs["input_ids"], mask, segments) == 7
    mask[2, 5:] = 0
    assert shared_prefix_length(inputs["input_ids"], mask, inputs["segment_ids"]) == 5


def test_no_packing_where_it_does_not_apply():
    inputs = rows_with_a_shared_prompt()
    assert pack_for(tiny_llama(), **inputs) is not None
    one_row = {name: tensor[:1] for name, tensor in inputs.items()}
    assert pack_for(tiny_llama(), **one_row) is None
    short = rows_with_a_shared_prompt(prompt_tokens=MIN_SHARED_TOKENS - 4)  # with the first row's 3 more tokens: < min
    assert shared_prefix_length(**short) < MIN_SHARED_TOKENS and pack_for(tiny_llama(), **short) is None
    assert pack_for(tiny_llama(attention_dropout=0.1), **inputs) is None  # dropout while training
    assert pack_for(tiny_llama(attention_dropout=0.1).eval(), **inputs) is not None
    eager = tiny_llama()
    eager.config._attn_implementation = "eager"
    assert pack_for(eager, **inputs) is None
    windowed = tiny_llama()
    windowed.config.sliding_window = 8
    assert pack_for(windowed, **inputs) is None


def test_other_forward_passes_of_the_model_attend_as_before():
    model = tiny_llama().eval()
    inputs = rows_with_a_shared_prompt()
    expected = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    with prefix_sharing.branch_attention_for(model):
        actual = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    assert model.config._attn_implementation == "sdpa"
    mask = inputs["attention_mask"].bool()
    assert_close(actual[mask], expected[mask], **TOLERANCE)
