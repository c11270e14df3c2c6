"""The generation engine: per-slot KV caches equal full forward passes; batching does not change results."""

import pytest
import torch

from swirl_lightning.rollout.engine import GenerationEngine, SamplingConfig
from swirl_lightning.rollout.kv_cache import SlotKVCache, attention_mask_for, slot_attention_for
from swirl_lightning.testing import tiny_model_and_tokenizer


@pytest.fixture(scope="module")
def tiny():
    # float64: these tests compare sampled tokens across batch layouts. In float32 a different batch shape or
    # thread count rounds the logits differently (~1e-7), and at temperature 1 on a near-uniform random model
    # that moves a draw across a neighbouring token's edge of the CDF often enough to fail a test now and then.
    model, tokenizer = tiny_model_and_tokenizer(seed=0)
    return model.double(), tokenizer


def feed(model, cache, rows, feeds):
    num_new = max(len(f) for f in feeds)
    input_ids = torch.tensor([f + [0] * (num_new - len(f)) for f in feeds])
    num_real = torch.tensor([len(f) for f in feeds])
    row_index = torch.tensor(rows)
    cache.select(row_index, num_new)
    lengths = cache.lengths[row_index]
    with slot_attention_for(model):
        hidden = model.base_model(
            input_ids=input_ids, attention_mask=attention_mask_for(lengths, num_real, num_new, model.dtype),
            position_ids=lengths[:, None] + torch.arange(num_new)[None], cache=cache, use_cache=True,
            **cache.forward_kwargs(),
        ).last_hidden_state
    cache.check_attended()
    cache.commit(row_index, num_real)
    return model.lm_head(hidden[torch.arange(len(rows)), num_real - 1])


@torch.no_grad()
def test_slot_cache_matches_full_forward_with_ragged_rows_and_growth(tiny):
    model, _ = tiny
    torch.manual_seed(1)
    sequences = [torch.randint(10, 5000, (n,)).tolist() for n in (7, 30, 15)]
    cache = SlotKVCache(num_slots=3, num_layers=model.config.num_hidden_layers, block_tokens=4)  # rows grow
    feed(model, cache, [0, 1, 2], [s[:5] for s in sequences])
    feed(model, cache, [1, 2], [sequences[1][5:20], sequences[2][5:6]])  # ragged feeds, padded
    last_0_2 = feed(model, cache, [0, 2], [sequences[0][5:7], sequences[2][6:15]])  # non-consecutive slots
    last_1 = feed(model, cache, [1], [sequences[1][20:30]])
    for got, sequence in [(last_0_2[0], sequences[0]), (last_1[0], sequences[1]), (last_0_2[1], sequences[2])]:
        expected = model(torch.tensor([sequence])).logits[0, -1]
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert cache.lengths.tolist() == [7, 30, 15]


@torch.no_grad()
def test_a_bfloat16_cache_holds_half_the_bytes_and_attends_close_to_the_full_forward(tiny):
    model = tiny[0].float()  # a float32 model, as on a CPU
    try:
        torch.manual_seed(1)
        sequences = [torch.randint(10, 5000, (n,)).tolist() for n in (7, 30)]
        caches = {dtype: SlotKVCache(num_slots=2, num_layers=model.config.num_hidden_layers, block_tokens=4,
                                     dtype=dtype) for dtype in (None, torch.bfloat16)}
        last = {}
        for dtype, cache in caches.items():
            feed(model, cache, [0, 1], [s[:5] for s in sequences])  # a padded prefill, then ragged feeds
            last[dtype] = feed(model, cache, [0, 1], [sequences[0][5:], sequences[1][5:]])
        assert all(row.dtype == torch.bfloat16 for row in caches[torch.bfloat16].rows if row is not None)
        assert caches[torch.bfloat16].nbytes() * 2 == caches[None].nbytes()
        for k, sequence in enumerate(sequences):
            expected = model(torch.tensor([sequence])).logits[0, -1]
            torch.testing.assert_close(last[None][k], expected, atol=1e-4, rtol=1e-4)
            assert last[torch.bfloat16][k].dtype == torch.float32
            torch.testing.assert_close(last[torch.bfloat16][k], expected, atol=0.05, rtol=0.05)
            assert last[torch.bfloat16][k].argmax() == expected.argmax()
    finally:
        model.double()
    with pytest.raises(ValueError, match="sampling.kv_cache_dtype"):
        SamplingConfig(kv_cache_dtype="int8")


def test_each_slot_grows_in_blocks_with_its_own_conversation_and_is_freed_when_it_leaves():
    cache = SlotKVCache(num_slots=3, num_layers=2, block_tokens=4, max_capacity=30)
    assert cache.nbytes() == 0  # nothing before the first forward pass
    keys = torch.zeros(1, 2, 9, 8)  # [rows, kv heads, new tokens, head dim]
    cache.select(torch.tensor([0]), 9)
    cache.update(keys, keys, layer_idx=0)
    cache.commit(torch.tensor([0]), torch.tensor([9]))
    assert [cache.capacity(s) for s in range(3)] == [12, 0, 0]  # 9 positions in blocks of 4; no other slot has a row
    assert cache.nbytes() == 2 * 2 * 2 * 12 * 8 * 4  # layers x keys and values x kv heads x positions x dim x fp32
    cache.select(torch.tensor([1]), 2)
    cache.update(keys[:, :, :2], keys[:, :, :2], layer_idx=0)
    cache.commit(torch.tensor([1]), torch.tensor([2]))
    assert [cache.capacity(s) for s in range(3)] == [12, 4, 0]  # a short conversation holds a short row
    cache.select(torch.tensor([0]), 16)  # slot 0 grows to 25 positions
    assert cache.capacity(0) == 28 and cache.capacity(1) == 4
    cache.lengths[0] = 25
    cache.select(torch.tensor([0]), 4)  # 29 positions: the next block would pass the context budget of 30
    assert cache.capacity(0) == 30
    cache.release(0)  # the long conversation leaves: its row is freed, slot 1 keeps its block
    assert [cache.capacity(s) for s in range(3)] == [0, 4, 0] and cache.lengths.tolist() == [0, 2, 0]
    assert cache.nbytes() == 2 * 2 * 2 * 4 * 8 * 4
    cache.select(torch.tensor([1]), 2)  # 4 positions still fit: no resize
    assert cache.capacity(1) == 4
    cache.lengths[1] = 4
    cache.select(torch.tensor([1]), 1)
    assert cache.capacity(1) == 8


@torch.no_grad()
def test_a_forward_pass_whose_attention_bypasses_the_slot_cache_is_an_error(tiny):
    model, _ = tiny
    cache = SlotKVCache(num_slots=1, num_layers=model.config.num_hidden_layers)
    cache.select(torch.tensor([0]), 3)
    model.base_model(input_ids=torch.tensor([[5, 6, 7]]), attention_mask=attention_mask_for(
        torch.tensor([0]), torch.tensor([3]), 3, model.dtype), cache=cache, use_cache=True)  # plain SDPA attention
    with pytest.raises(RuntimeError, match="does not dispatch through config._attn_implementation"):
        cache.check_attended()


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_tokens_do_not_depend_on_how_the_cache_grows_and_shrinks(tiny, temperature, monkeypatch):
    """Blocks of 2 positions (the cache is resized all the time, while other slots hold conversations) against blocks
    larger than any conversation (never resized): the same tokens."""
    from functools import partial

    from swirl_lightning.rollout import engine as engine_module

    model, tokenizer = tiny
    torch.manual_seed(5)
    prompts = [torch.randint(10, 5000, (n,)).tolist() for n in (31, 4, 17, 2, 25, 9, 13)]
    monkeypatch.setattr(engine_module, "SlotKVCache", partial(SlotKVCache, block_tokens=4096))
    unresized, _, _ = run(model, tokenizer, 3, temperature, prompts)
    held_bytes = []
    release = SlotKVCache.release
    monkeypatch.setattr(SlotKVCache, "release", lambda self, slot: release(self, slot) or held_bytes.append(self.nbytes()))
    monkeypatch.setattr(engine_module, "SlotKVCache", partial(SlotKVCache, block_tokens=2))
    resized, finished, _ = run(model, tokenizer, 3, temperature, prompts)
    assert len(finished) == len(prompts)
    assert [c.turns for c in resized] == [c.turns for c in unresized]
    assert any(later < earlier for earlier, later in zip(held_bytes, held_bytes[1:]))  # rows were freed


class EchoConversation:
    """Three turns; after each, a fixed user turn is appended."""

    def __init__(self, prompt, seed, tokenizer, turns=3):
        self.prompt, self.seed, self.tokenizer, self.turns_left = prompt, seed, tokenizer, turns
        self.turns = []

    def prompt_ids(self):
        return list(self.prompt)

    def on_turn_end(self, token_ids, text, finish_reason, logprobs=None, policy_version=None):
        self.turns.append((token_ids, finish_reason))
        self.turns_left -= 1
        return None if self.turns_left == 0 else self.tokenizer.encode("\nuser: go on\nassistant:", add_special_tokens=False)

    def on_context_full(self):
        self.turns.append(("context_full", None))


def run(model, tokenizer, batch_size, temperature, prompts, max_context_tokens=4096):
    config = SamplingConfig(max_new_tokens=6, temperature=temperature, batch_size=batch_size, seed=3,
                            max_context_tokens=max_context_tokens)
    engine = GenerationEngine(model, tokenizer, config)
    conversations = [EchoConversation(p, seed=i, tokenizer=tokenizer) for i, p in enumerate(prompts)]
    finished = []
    engine.run(conversations, finished.append)
    return conversations, finished, engine


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_continuous_batching_gives_the_same_tokens_as_one_at_a_time(tiny, temperature):
    model, tokenizer = tiny
    torch.manual_seed(2)
    prompts = [torch.randint(10, 5000, (n,)).tolist() for n in (5, 12, 3, 9, 20)]
    prompts.insert(1, prompts[0])  # two samples of one question: the second reuses the first's prefill
    alone, _, _ = run(model, tokenizer, 1, temperature, prompts)
    batched, finished, engine = run(model, tokenizer, 3, temperature, prompts)
    assert len(finished) == 6
    assert engine.stats.shared_prefill_tokens == 5
    assert [c.turns for c in batched] == [c.turns for c in alone]
    assert all(len(c.turns) == 3 for c in batched)
    assert engine.stats.generated_tokens == sum(len(ids) for c in batched for ids, _ in c.turns)
    assert set(engine.stats.tokens_per_second_by_turn()) <= {0, 1, 2}


@torch.no_grad()
def test_first_turn_matches_transformers_greedy_generate(tiny):
    model, tokenizer = tiny
    prompt = tokenizer.encode("What is 2+3?", add_special_tokens=False)
    conversations, _, _ = run(model, tokenizer, 2, 0.0, [prompt])
    reference = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    first_turn, reason = conversations[0].turns[0]
    assert first_turn == reference[0, len(prompt):].tolist()[: len(first_turn)]
    assert reason in ("length", "eos")


@torch.no_grad()
def test_every_turn_samples_from_the_logits_of_one_full_forward_over_the_record(tiny, monkeypatch):
    """Turn after turn, the cache holds the conversation exactly as recorded (prompt, each turn's tokens, each user
    turn): the logits every token is sampled from equal one plain forward's over that record. The turn's last token
    must go into the cache before the next user turn; without it, later turns saw every earlier action cut short (a
    `</math_exp>` without its `>`) and a real model drifted from its third step on."""
    model, tokenizer = tiny
    sampled_from: list[torch.Tensor] = []
    forward = GenerationEngine._forward
    monkeypatch.setattr(GenerationEngine, "_forward",
                        lambda self, *args: sampled_from.append(forward(self, *args)) or sampled_from[-1])
    prompt = tokenizer.encode("What is 2+3?", add_special_tokens=False)
    (conversation,), _, _ = run(model, tokenizer, 1, 0.0, [prompt])
    user_turn = tokenizer.encode("\nuser: go on\nassistant:", add_special_tokens=False)
    record, generated = list(prompt), []
    for k, (turn, _) in enumerate(conversation.turns):
        generated += range(len(record), len(record) + len(turn))
        record += turn + (user_turn if k < len(conversation.turns) - 1 else [])
    assert len(conversation.turns) == 3 and len(sampled_from) == len(generated)
    full = model(input_ids=torch.tensor([record])).logits[0]
    torch.testing.assert_close(torch.cat(sampled_from), full[[i - 1 for i in generated]].float(), atol=1e-4, rtol=1e-4)


def test_context_budget_ends_a_conversation(tiny):
    model, tokenizer = tiny
    conversations, finished, _ = run(model, tokenizer, 2, 1.0, [[11] * 20], max_context_tokens=30)
    assert len(finished) == 1
    # 20 prompt tokens + a 6-token turn + the ~8-token user turn do not fit in 30: no second turn is started.
    turns = conversations[0].turns
    assert len(turns) == 2 and len(turns[0][0]) == 6 and turns[1] == ("context_full", None)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_shared_prompt_head_is_computed_once_and_changes_no_token(tiny, temperature):
    model, tokenizer = tiny
    torch.manual_seed(4)
    head = torch.randint(10, 5000, (24,)).tolist()  # a system prompt every question shares
    prompts = [head + torch.randint(10, 5000, (n,)).tolist() for n in (4, 9, 1, 6)]
    prompts.append(head[:18] + [7, 8, 9])  # shares only part of the head: that part is reused
    prompts.append([5] * 12)  # shares nothing: prefilled in full
    baseline = GenerationEngine(model, tokenizer, SamplingConfig(max_new_tokens=6, temperature=temperature,
                                                                 batch_size=3, seed=3, min_shared_prefix=0))
    unshared = [EchoConversation(p, seed=i, tokenizer=tokenizer) for i, p in enumerate(prompts)]
    baseline.run(unshared, lambda c: None)
    alone, _, _ = run(model, tokenizer, 1, temperature, prompts)
    batched, finished, engine = run(model, tokenizer, 3, temperature, prompts)
    assert len(finished) == len(prompts)
    assert baseline.stats.prefix_cached_tokens == 0
    assert engine.stats.prefix_cached_tokens == 4 * 24 + 18
    assert [c.turns for c in batched] == [c.turns for c in alone] == [c.turns for c in unshared]


@torch.no_grad()
def test_prefix_cached_prompt_matches_transformers_greedy_generate(tiny):
    model, tokenizer = tiny
    head = tokenizer.encode("You are a careful assistant who answers in steps. " * 3, add_special_tokens=False)
    prompts = [head + tokenizer.encode(q, add_special_tokens=False) for q in ("What is 2+3?", "Name a colour.")]
    conversations, _, engine = run(model, tokenizer, 2, 0.0, prompts)
    assert engine.stats.prefix_cached_tokens >= 2 * 16
    for prompt, conversation in zip(prompts, conversations):
        reference = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False,
                                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        first_turn, _ = conversation.turns[0]
        assert first_turn == reference[0, len(prompt):].tolist()[: len(first_turn)]


def test_sample_rows_follows_the_distribution_and_each_rows_generator():
    from swirl_lightning.rollout.engine import sample_rows

    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3, 0.0], [0.0, 0.0, 0.0, 1.0]]) + 1e-12)
    counts = torch.zeros(4)
    generators = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    for _ in range(4000):
        first, second = sample_rows(logits, 1.0, 1.0, generators)
        counts[first] += 1
        assert second == 3
    torch.testing.assert_close(counts / 4000, torch.tensor([0.1, 0.6, 0.3, 0.0]), atol=0.03, rtol=0)
    # top_p 0.7 keeps the two most likely tokens (0.6, then 0.3 crosses the mass), never the 0.1 one.
    nucleus = {sample_rows(logits[:1], 1.0, 0.7, generators[:1])[0] for _ in range(300)}
    assert nucleus == {1, 2}
    assert sample_rows(logits, 0.0, 1.0, generators) == [1, 3]
    # A row's draw depends on its own generator only, not on the rows beside it.
    alone = sample_rows(logits[:1], 1.0, 1.0, [torch.Generator().manual_seed(7)])
    batched = sample_rows(logits, 1.0, 1.0, [torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)])
    assert alone[0] == batched[0]


def test_queued_figures_cover_the_run_until_the_queue_runs_dry(tiny):
    model, tokenizer = tiny
    torch.manual_seed(5)
    prompts = [torch.randint(10, 5000, (6,)).tolist() for _ in range(5)]
    _, finished, engine = run(model, tokenizer, 2, 1.0, prompts)
    stats = engine.stats
    assert len(finished) == 5
    # The 5th conversation took a slot while the others ran; the queue ran dry before the last ones finished.
    assert 0 < stats.queued_tokens < stats.generated_tokens and stats.queued_seconds > 0
