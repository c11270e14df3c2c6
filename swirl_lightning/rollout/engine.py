"""Batched multi-turn generation that never re-encodes a conversation.

Each batch *slot* holds one conversation's KV cache, contiguous at positions ``[0, length)`` of a per-slot row
(:class:`~swirl_lightning.rollout.kv_cache.SlotKVCache`, each row as long as its own conversation). A conversation is
fed its prompt once; after each turn only the new tokens (the turn's last sampled token, which ended it before it was
fed, then the tool result's user turn and the next assistant header) are appended to its cache, so the cache always
equals the recorded conversation. Finished conversations leave their slot and waiting ones take it (continuous
batching). Each forward pass runs on a subset of slots with a 4D attention mask and explicit position ids, and
attention runs row by row over each slot's own keys (:func:`~swirl_lightning.rollout.kv_cache.slot_attention`), so
slots of different lengths share one batch without padding the caches.

A conversation is any object with the :class:`Conversation` methods; :mod:`swirl_lightning.rollout.conversation`
implements one that parses actions and runs tools.

Prompts of one run usually share a long head (system prompt, tool descriptions, few-shot turns): the
engine takes the longest common prefix of the first two prompts, computes its keys and values once, and
copies them into every slot whose prompt starts with (part of) it, so only the question is prefilled.

Sampling uses one ``torch.Generator`` per conversation, seeded from the run seed and the conversation's
seed, so a trajectory does not depend on which other trajectories share its batch (up to float
rounding of batched matmuls).
"""

from __future__ import annotations

import inspect
import itertools
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, cast

import torch

from swirl_lightning.core.config import SamplingConfig
from swirl_lightning.rollout.kv_cache import SlotKVCache, attention_mask_for, slot_attention_for


class Conversation(Protocol):
    """What the engine drives: a prompt, then turns until the conversation says it is done."""

    seed: int

    def prompt_ids(self) -> list[int]:
        """Token ids of the prompt, ending with the assistant header of the first turn."""

    def on_turn_end(self, token_ids: list[int], text: str, finish_reason: str, logprobs: list[float] | None = None,
                    policy_version: int | None = None) -> list[int] | None:
        """Take one finished model turn; return the token ids to append before the next turn, or ``None`` when done.

        ``finish_reason`` is ``stop`` (a stop string), ``eos`` or ``length`` (max new tokens of the turn).
        ``logprobs`` are the policy's log-probs of ``token_ids`` (before temperature and top-p), ``policy_version``
        the version of the weights that sampled them.
        """

    def on_context_full(self) -> None:
        """Called instead of another turn when the conversation would exceed the context budget (also when its
        prompt alone would: then before any turn)."""

    def on_failure(self, reason: str) -> None:
        """Called when building the prompt or taking a turn raised: the conversation ends, recorded as failed."""


@dataclass
class GenerationStats:
    """Throughput counters; decode steps are also split by turn index (0 = first model turn)."""

    generated_tokens: int = 0
    prefill_tokens: int = 0
    shared_prefill_tokens: int = 0
    """Prompt tokens not computed because another sample of the same question had just prefilled them."""
    prefix_cached_tokens: int = 0
    """Prompt tokens copied from the run's shared prompt prefix instead of computed."""
    forward_seconds: float = 0.0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    queued_seconds: float = 0.0
    """Wall time from the start of the run until no conversation was left waiting for a slot."""
    queued_tokens: int = 0
    """Tokens generated in that time: the batch was kept full then; after it, the batch drains."""
    tokens_by_turn: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    seconds_by_turn: dict[int, float] = field(default_factory=lambda: defaultdict(float))

    def tokens_per_second_by_turn(self) -> dict[int, float]:
        """Decode tokens per second of forward time, for turns of each index.

        Only decode steps with every slot busy count, so neither prefill nor a batch emptying at the end
        of a run (fewer rows per step) blurs the comparison between turns.
        """
        return {
            t: self.tokens_by_turn[t] / self.seconds_by_turn[t]
            for t in sorted(self.tokens_by_turn)
            if self.seconds_by_turn[t] > 0
        }


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """Number of leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def sample_rows(logits: torch.Tensor, temperature: float, top_p: float, generators: list[torch.Generator]) -> list[int]:
    """Sample one token id from each row of ``[rows, vocab]`` logits, row ``i`` with ``generators[i]``.

    Inverse-CDF sampling: the softmax and cumulative sums run on all rows at once and each row draws a
    single uniform number from its own generator, so a row's token does not depend on the other rows.
    (``torch.multinomial`` per row was a measurable share of a CPU decode step: benchmarks/README.md, Run times.)
    """
    if temperature <= 0:
        return torch.argmax(logits, dim=-1).tolist()
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        sorted_probs = sorted_probs.masked_fill(torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    cdf = torch.cumsum(probs, dim=-1)
    # The draws come from the rows' CPU generators (reproducible on any device); the logits stay where they are.
    draws = torch.cat([torch.rand(1, generator=g) for g in generators]).to(cdf.device)
    uniform = draws.unsqueeze(1) * cdf[:, -1:]
    tokens = torch.searchsorted(cdf, uniform, right=True).squeeze(1)
    return tokens.clamp_(max=probs.shape[-1] - 1).tolist()


@dataclass
class _Slot:
    conversation: Conversation
    generator: torch.Generator
    feed: list[int]
    turn_ids: list[int] = field(default_factory=list)
    turn_logprobs: list[float] = field(default_factory=list)
    turn_index: int = 0


class GenerationEngine:
    """Drives many conversations through a model with continuous batching and per-slot KV caches."""

    def __init__(self, model, tokenizer, config: SamplingConfig, stop_strings: Iterable[str] = ()):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.stop_strings = tuple(stop_strings)
        self._stop_window = max((len(tokenizer.encode(s, add_special_tokens=False)) for s in self.stop_strings), default=1) + 2
        eos = {tokenizer.eos_token_id}
        if getattr(model, "generation_config", None) is not None:
            gen_eos = model.generation_config.eos_token_id
            eos.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.eos_ids = {e for e in eos if e is not None}
        self.stats = GenerationStats()
        self.policy_version = 0
        """Recorded with every turn: the caller sets it when the weights change between runs."""
        self.device = next(model.parameters()).device
        # The transformer body without the vocabulary head (also through a PEFT wrapper, LoRA layers included).
        get_decoder = getattr(model, "get_decoder", None)
        self._decoder = get_decoder() if callable(get_decoder) else model.base_model
        # transformers renamed the decoder's cache argument to `cache` (5.x; `past_key_values` goes in 5.40).
        self._cache_argument = "cache" if "cache" in inspect.signature(self._decoder.forward).parameters \
            else "past_key_values"
        self._num_layers = model.config.get_text_config().num_hidden_layers
        self._kv_cache_dtype = None if config.kv_cache_dtype == "auto" else getattr(torch, config.kv_cache_dtype)

    @torch.inference_mode()
    def run(self, conversations: Iterable[Conversation], on_finished: Callable[[Conversation], None]) -> None:
        """Run all conversations to the end, calling ``on_finished`` as each one finishes."""
        started = time.perf_counter()
        waiting = iter(conversations)
        slots: list[_Slot | None] = [None] * self.config.batch_size
        cache = SlotKVCache(self.config.batch_size, self._num_layers, max_capacity=self.config.max_context_tokens,
                            dtype=self._kv_cache_dtype)
        # The first two conversations are taken up front to find the prompt head they share; the prefix is
        # then used for every conversation (the first included), so results do not depend on the batch size.
        ahead = [c for c in (next(waiting, None), next(waiting, None)) if c is not None]
        prefix, prefix_kv = self._shared_prefix(self._ahead_prompts(ahead), cache)
        waiting = itertools.chain(ahead, waiting)
        exhausted = False
        tokens_at_start = self.stats.generated_tokens
        while True:
            for i, slot in enumerate(slots):
                if slot is None and not exhausted:
                    conversation = next(waiting, None)
                    if conversation is None:
                        exhausted = True
                        self.stats.queued_seconds += time.perf_counter() - started
                        self.stats.queued_tokens += self.stats.generated_tokens - tokens_at_start
                        break
                    generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + conversation.seed)
                    feed = self._admit(conversation, on_finished)
                    if feed is None:
                        continue  # finished before it took the slot: the next waiting conversation may
                    cache.reset_slot(i)
                    # At least one prompt token stays to feed: the first sampled token needs its logits.
                    cached = min(common_prefix_length(prefix, feed), len(feed) - 1)
                    if prefix_kv is not None and cached >= self.config.min_shared_prefix:
                        cache.load(i, prefix_kv, cached)
                        feed = feed[cached:]
                        self.stats.prefix_cached_tokens += cached
                    slots[i] = _Slot(conversation, generator, feed=feed)
            active = [i for i, s in enumerate(slots) if s is not None]
            if not active:
                return
            prefill = [i for i, s in enumerate(slots) if s is not None and len(s.feed) > 1]
            decode = [i for i, s in enumerate(slots) if s is not None and len(s.feed) == 1]
            # A prefill pass for one or two rows costs about as much as a decode pass for the whole batch,
            # so rows waiting to prefill are gathered until they are a quarter of the batch (or all of it).
            if prefill and (not decode or 4 * len(prefill) >= len(active)):
                rows = self._prefill_group(prefill, slots)
            else:
                rows = decode
            self._step(rows, slots, cache, on_finished)

    def _ahead_prompts(self, ahead: list[Conversation]) -> list[list[int]]:
        """The prompts of the conversations read ahead, leaving out those that fail or overflow the budget (they are
        ended when they are admitted)."""
        prompts = []
        for conversation in ahead:
            try:
                ids = list(conversation.prompt_ids())
            except Exception:  # noqa: BLE001 - recorded when the conversation is admitted
                continue
            if len(ids) + 1 <= self.config.max_context_tokens:
                prompts.append(ids)
        return prompts

    def _admit(self, conversation: Conversation, on_finished: Callable[[Conversation], None]) -> list[int] | None:
        """The prompt to feed, or ``None`` when the conversation ends before taking a slot: its prompt leaves no room
        in the context budget (checked before any tensor is made for it), or building the prompt failed."""
        try:
            feed = list(conversation.prompt_ids())
        except Exception as error:  # noqa: BLE001 - one bad conversation must not end the others
            conversation.on_failure(f"{type(error).__name__}: {error}")
            on_finished(conversation)
            return None
        if len(feed) + 1 > self.config.max_context_tokens:
            conversation.on_context_full()
            on_finished(conversation)
            return None
        return feed

    def _shared_prefix(self, prompts: list[list[int]], cache: SlotKVCache) -> tuple[list[int], dict | None]:
        """The head the prompts share and its keys and values (``([], None)`` when too short to bother)."""
        if len(prompts) < 2 or self.config.min_shared_prefix <= 0:
            return [], None
        length = common_prefix_length(prompts[0], prompts[1])
        if length < self.config.min_shared_prefix:
            return [], None
        prefix = prompts[0][:length]
        cache.reset_slot(0)  # slot 0 computes the prefix before any conversation takes it
        start = time.perf_counter()
        self._forward([0], [prefix], cache)
        elapsed = time.perf_counter() - start
        self.stats.prefill_tokens += length
        self.stats.prefill_seconds += elapsed
        self.stats.forward_seconds += elapsed
        saved = cache.snapshot(0, length)
        cache.reset_slot(0)
        return prefix, saved

    def _prefill_group(self, prefill: list[int], slots: list[_Slot | None]) -> list[int]:
        """The longest-waiting prefill rows that fit the prefill token budget (at least one row)."""
        group: list[int] = []
        live = cast("list[_Slot]", slots)  # the rows are live slots
        for i in prefill:
            longest = max([len(live[j].feed) for j in group] + [len(live[i].feed)])
            if group and longest * (len(group) + 1) > self.config.prefill_batch_tokens:
                break
            group.append(i)
        return group

    def _step(self, rows: list[int], slots: list[_Slot | None], cache: SlotKVCache, on_finished) -> None:
        # Samples of one question start with the same prompt: prefill it once and copy its KV rows.
        shared = self._shared_prompts(rows, slots, cache)
        live = cast("list[_Slot]", slots)  # the rows are live slots (until a finished one is set to None below)
        computed = [i for i in rows if i not in shared]
        decoding = all(len(live[i].feed) == 1 for i in computed)
        start = time.perf_counter()
        last_rows = self._forward(computed, [live[i].feed for i in computed], cache)
        elapsed = time.perf_counter() - start
        last = dict(zip(computed, last_rows))
        for copy, source in shared.items():
            cache.copy_slot(source, copy)
            last[copy] = last[source]
            self.stats.shared_prefill_tokens += len(live[copy].feed)
        self.stats.forward_seconds += elapsed
        if decoding:
            self.stats.decode_seconds += elapsed
        else:
            self.stats.prefill_tokens += sum(len(live[i].feed) for i in computed)
            self.stats.prefill_seconds += elapsed
        logits = torch.stack([last[i] for i in rows])
        tokens = sample_rows(logits, self.config.temperature, self.config.top_p, [live[i].generator for i in rows])
        logprobs = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(tokens, device=logits.device)[:, None])
        for i, token, logprob in zip(rows, tokens, logprobs[:, 0].tolist()):
            slot = live[i]
            if decoding and len(rows) == len(slots):  # full decode steps only (see tokens_per_second_by_turn)
                self.stats.seconds_by_turn[slot.turn_index] += elapsed / len(rows)
                self.stats.tokens_by_turn[slot.turn_index] += 1
            self.stats.generated_tokens += 1
            slot.turn_ids.append(token)
            slot.turn_logprobs.append(logprob)
            slot.feed = [token]
            reason = self._finish_reason(slot, int(cache.lengths[i]))
            if reason is None:
                continue
            text = self.tokenizer.decode(slot.turn_ids, skip_special_tokens=True)
            try:
                next_feed = slot.conversation.on_turn_end(list(slot.turn_ids), text, reason, logprobs=slot.turn_logprobs,
                                                          policy_version=self.policy_version)
            except Exception as error:  # noqa: BLE001 - recorded as the conversation's failure; the others go on
                slot.conversation.on_failure(f"{type(error).__name__}: {error}")
                next_feed = None
            slot.turn_ids, slot.turn_logprobs, slot.turn_index = [], [], slot.turn_index + 1
            # The turn's last token (a stop string's end, or EOS) is not in the cache yet: it goes in ahead of the
            # next user turn, so the next turn sees the conversation as recorded (and as training scores it).
            if next_feed is not None:
                next_feed = [token, *next_feed]
            if next_feed is not None and int(cache.lengths[i]) + len(next_feed) + 1 > self.config.max_context_tokens:
                slot.conversation.on_context_full()
                next_feed = None
            if next_feed is None:
                on_finished(slot.conversation)
                slots[i] = None
                cache.release(i)
            else:
                slot.feed = next_feed

    def _shared_prompts(self, rows: list[int], slots: list[_Slot | None], cache: SlotKVCache) -> dict[int, int]:
        """Rows whose whole feed is a prompt identical to an earlier row's in this step: row -> that row."""
        first: dict[tuple[int, tuple[int, ...]], int] = {}
        shared: dict[int, int] = {}
        live = cast("list[_Slot]", slots)  # the rows are live slots
        for i in rows:
            slot = live[i]
            if slot.turn_index != 0 or slot.turn_ids or len(slot.feed) < 2:  # not a prompt waiting for prefill
                continue
            # Same cached head (from the shared prefix) and same rest: the same prompt.
            key = (int(cache.lengths[i]), tuple(slot.feed))
            if key in first:
                shared[i] = first[key]
            else:
                first[key] = i
        return shared

    def _forward(self, rows: list[int], feeds: list[list[int]], cache: SlotKVCache) -> torch.Tensor:
        """Append ``feeds[k]`` to the cache of slot ``rows[k]``; return the next-token logits ``[len(rows), vocab]``
        after each row's last token (fp32, on the model's device: sampling runs there, so a GPU batch does not copy
        rows x vocabulary logits to the host every step)."""
        num_new = max(len(f) for f in feeds)
        pad_id = self.tokenizer.pad_token_id or 0
        input_ids = torch.tensor([f + [pad_id] * (num_new - len(f)) for f in feeds], dtype=torch.long)
        num_real = torch.tensor([len(f) for f in feeds], dtype=torch.long)
        row_index = torch.tensor(rows, dtype=torch.long)
        cache.select(row_index, num_new)
        lengths = cache.lengths[row_index]
        position_ids = lengths.unsqueeze(1) + torch.arange(num_new).unsqueeze(0)
        # In the dtype attention runs in (the cache's), made once per forward rather than cast by every layer.
        mask = attention_mask_for(lengths, num_real, num_new, self._kv_cache_dtype or self.model.dtype)
        with slot_attention_for(self.model):
            hidden = self._decoder(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=position_ids.to(self.device),
                use_cache=True,
                **{self._cache_argument: cache},
                **cache.forward_kwargs(),
            ).last_hidden_state
        cache.check_attended()
        # Only each row's last real position needs logits: skip the vocabulary projection elsewhere.
        last_hidden = hidden[torch.arange(len(rows)), (num_real - 1).to(self.device)]
        cache.commit(row_index, num_real)
        logits = self._logits(last_hidden).float()
        if logits.is_cuda:
            torch.cuda.synchronize(logits.device)  # so the forward/decode seconds in stats include the GPU's work
        return logits

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.model.get_output_embeddings()(hidden)
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    def _finish_reason(self, slot: _Slot, cached_length: int) -> str | None:
        if slot.turn_ids[-1] in self.eos_ids:
            return "eos"
        if self.stop_strings:
            tail = self.tokenizer.decode(slot.turn_ids[-self._stop_window :], skip_special_tokens=False)
            if any(s in tail for s in self.stop_strings):
                return "stop"
        # The sampled token is not in the cache yet: it needs one more position.
        if len(slot.turn_ids) >= self.config.max_new_tokens or cached_length + 1 >= self.config.max_context_tokens:
            return "length"
        return None
