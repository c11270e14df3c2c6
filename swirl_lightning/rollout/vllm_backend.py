"""The ``vllm`` generation backend: conversations driven turn by turn on an OpenAI-compatible vLLM server.

Each model turn is one ``/v1/completions`` request whose prompt is the conversation's token ids so far (prompt, earlier
turns, tool results), with ``return_token_ids`` and ``logprobs: 0``: the turn is recorded from the ids and log-probs the
server sampled, never from re-tokenized text (re-tokenizing a sampled text gives other ids for about half of the
samples at temperature 1). The text handed to the conversation is decoded from those ids exactly as the in-process
engine decodes its own, stop-string tokens included, so both backends give a conversation the same calls.

Up to ``sampling.batch_size`` conversations have a request in flight at once, from a thread pool; everything else (the
conversation's callbacks, tool runs among them) happens on the calling thread, as with the in-process engine. vLLM
batches the requests and reuses the KV of the prefix it has seen (the conversation so far), so each turn prefills only
its new tokens.

Failures: a request that fails while the server is up is retried ``engine.max_retries`` times, then its conversation is
recorded as failed (like a tool that fails). A server that is gone is an error that ends the run and names the server's
log (:class:`~swirl_lightning.rollout.vllm_server.ServerDied`): never rollouts quietly made of error messages.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from swirl_lightning.core.config import EngineConfig, SamplingConfig
from swirl_lightning.core.transport import ConnectionFailed, ReplyTooLarge, RequestTimedOut, post
from swirl_lightning.rollout.engine import Conversation, GenerationStats
from swirl_lightning.rollout.vllm_server import VllmServer

MAX_REPLY_BYTES = 64 * 2**20


class TurnFailed(Exception):
    """A model turn got no reply after its retries while the server stayed up: its conversation is recorded failed."""


@dataclass
class SampledTurn:
    """What the server sampled for one model turn."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    """``stop``, ``eos`` or ``length``, as the in-process engine names them."""


@dataclass
class _Pending:
    conversation: Conversation
    ids: list[int]
    turn_index: int = 0


class VllmBackend:
    """Runs conversations on a vLLM server (see the module docstring); the same ``run`` as the in-process engine."""

    def __init__(self, server: VllmServer, tokenizer, sampling: SamplingConfig, engine: EngineConfig,
                 stop_strings: Iterable[str] = (), *, model: str | None = None, policy_version: int = 0):
        self.server = server
        self.tokenizer = tokenizer
        self.config = sampling
        self.engine = engine
        self.stop_strings = list(stop_strings)
        self.model = model or server.model
        """The served model or adapter name the requests ask for."""
        self.policy_version = policy_version
        self.stats = GenerationStats()
        eos = tokenizer.eos_token_id
        self.eos_ids = {eos} if eos is not None else set()

    def run(self, conversations: Iterable[Conversation], on_finished: Callable[[Conversation], None]) -> None:
        """Run all conversations to the end, calling ``on_finished`` as each one finishes."""
        started = time.perf_counter()
        waiting = iter(conversations)
        active: dict[Future, _Pending] = {}
        pool = ThreadPoolExecutor(self.config.batch_size, thread_name_prefix="vllm-request")
        try:
            self._admit(waiting, active, pool, on_finished)
            while active:
                done, _ = wait(active, return_when=FIRST_COMPLETED)
                for future in done:
                    pending = active.pop(future)
                    try:
                        turn = future.result()
                    except TurnFailed as error:
                        pending.conversation.on_failure(str(error))
                        on_finished(pending.conversation)
                        continue
                    self._take_turn(pending, turn, active, pool, on_finished)
                self._admit(waiting, active, pool, on_finished)
        finally:
            # Left early (an error): requests still in flight end on their own deadline, without holding this up.
            pool.shutdown(wait=not active, cancel_futures=True)
            self.stats.forward_seconds += time.perf_counter() - started

    def _admit(self, waiting, active: dict[Future, _Pending], pool: ThreadPoolExecutor, on_finished) -> None:
        """Start conversations until ``batch_size`` have a request in flight (or none is left)."""
        while len(active) < self.config.batch_size:
            conversation = next(waiting, None)
            if conversation is None:
                return
            try:
                ids = list(conversation.prompt_ids())
            except Exception as error:  # noqa: BLE001 - one bad conversation must not end the others
                conversation.on_failure(f"{type(error).__name__}: {error}")
                on_finished(conversation)
                continue
            self._submit(_Pending(conversation, ids), active, pool, on_finished)

    def _submit(self, pending: _Pending, active: dict[Future, _Pending], pool: ThreadPoolExecutor,
                on_finished) -> None:
        # The same budget as the in-process engine: the sequence and one sampled token must fit the context.
        room = self.config.max_context_tokens - len(pending.ids)
        if room < 1:
            pending.conversation.on_context_full()
            on_finished(pending.conversation)
            return
        seed = zlib.crc32(f"{self.config.seed}\x00{pending.conversation.seed}\x00{pending.turn_index}".encode())
        body = self.request_body(pending.ids, min(self.config.max_new_tokens, room), seed & 0x7FFFFFFF)
        active[pool.submit(self.complete, body)] = pending

    def _take_turn(self, pending: _Pending, turn: SampledTurn, active, pool, on_finished) -> None:
        conversation = pending.conversation
        self.stats.generated_tokens += len(turn.token_ids)
        self.stats.prefill_tokens += len(pending.ids)
        text = self.tokenizer.decode(turn.token_ids, skip_special_tokens=True)
        try:
            next_feed = conversation.on_turn_end(list(turn.token_ids), text, turn.finish_reason,
                                                 logprobs=turn.logprobs, policy_version=self.policy_version)
        except Exception as error:  # noqa: BLE001 - recorded as the conversation's failure; the others go on
            conversation.on_failure(f"{type(error).__name__}: {error}")
            next_feed = None
        if next_feed is None:
            on_finished(conversation)
            return
        pending.ids = [*pending.ids, *turn.token_ids, *next_feed]
        pending.turn_index += 1
        self._submit(pending, active, pool, on_finished)

    def request_body(self, prompt_ids: Sequence[int], max_tokens: int, seed: int) -> dict:
        """The ``/v1/completions`` request of one model turn."""
        body = {
            "model": self.model,
            "prompt": list(prompt_ids),
            "max_tokens": max_tokens,
            "temperature": self.config.temperature,
            "top_p": self.config.top_p,
            "stop": self.stop_strings,
            "stop_token_ids": sorted(self.eos_ids),
            "logprobs": 0,
            "return_token_ids": True,
            "skip_special_tokens": True,
        }
        if self.config.temperature > 0:
            body["seed"] = seed
        return body

    def complete(self, body: dict) -> SampledTurn:
        """One model turn from the server, retried while the server is up (runs on a pool thread)."""
        errors = []
        for attempt in range(self.engine.max_retries + 1):
            if attempt:
                time.sleep(min(2.0**attempt, 30.0))
            try:
                reply = post(f"{self.server.base_url}/v1/completions", json.dumps(body).encode(),
                             {"Content-Type": "application/json"}, timeout_s=self.engine.request_timeout_s,
                             max_reply_bytes=MAX_REPLY_BYTES)
            except (ConnectionFailed, RequestTimedOut, ReplyTooLarge) as error:
                self.server.check_alive()  # a dead server ends the run, with its log named
                errors.append(str(error))
                continue
            if reply.status == 200:
                return self.parse_reply(reply.body)
            errors.append(f"HTTP {reply.status}: {reply.body[:300].decode(errors='replace')}")
            if 400 <= reply.status < 500 and reply.status != 429:
                break  # the request itself is wrong: asking again gives the same answer
            self.server.check_alive()
        raise TurnFailed(f"the vLLM server gave no model turn ({len(errors)} tries): {errors[-1]}")

    def parse_reply(self, raw: bytes) -> SampledTurn:
        """The sampled turn of a ``/v1/completions`` reply (``TurnFailed`` when it lacks the ids or log-probs)."""
        try:
            choice = json.loads(raw)["choices"][0]
            token_ids = [int(t) for t in choice["token_ids"]]
            logprobs = [float(p) for p in choice["logprobs"]["token_logprobs"]]
            reason, stop_reason = choice["finish_reason"], choice.get("stop_reason")
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise TurnFailed(f"the vLLM server's reply has no token ids and log-probs ({type(error).__name__}: "
                             f"{error}); is it a vLLM server, with return_token_ids (vLLM 0.10.2 or newer)?") from None
        if len(logprobs) != len(token_ids) or not token_ids:
            raise TurnFailed(f"the vLLM server returned {len(token_ids)} token ids and {len(logprobs)} log-probs")
        if reason == "length":
            finish = "length"
        elif isinstance(stop_reason, str):
            finish = "stop"
        elif token_ids[-1] in self.eos_ids or reason == "stop":
            finish = "eos"  # the model's end of turn (stop_reason None) or one of our stop_token_ids
        else:
            finish = "length"
        return SampledTurn(token_ids, logprobs, finish)
