"""Chat completions from an OpenAI-compatible server, within limits, with retries, counting usage.

Each request goes through the standard-library transport (:mod:`~swirl_lightning.core.transport`: a deadline of
``timeout_s`` for the request as a whole, a cap of ``max_reply_bytes`` on the reply) on a worker thread; the requests
of a judge run on one event loop per process (:class:`RequestLoop`), at most ``concurrency`` at once (an
:class:`asyncio.Semaphore`), paced by the :mod:`aiolimiter` limits of :class:`~.ratelimit.RateLimiter` and retried by
:mod:`tenacity` (:class:`~.ratelimit.RetryPolicy`) on 429, 5xx, time-outs, connection errors and unreadable replies.
Every text from the server or the connection is redacted (:mod:`.redact`) before a message quotes it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import threading
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from swirl_lightning.core.safe_load import loads_json
from swirl_lightning.core.transport import ConnectionFailed, HttpReply, ReplyTooLarge, RequestTimedOut, post
from swirl_lightning.judging.judge_prompts import shorten
from swirl_lightning.judging.ratelimit import JudgeUsage, RateLimiter, RetryableError, RetryPolicy
from swirl_lightning.judging.redact import redact

NO_KEY = "no-key"
"""The key sent when ``api_key_env`` is not set: servers without authentication accept any."""


class JudgeConfigurationError(RuntimeError):
    """The server refuses every request (wrong API key, model or URL): the run stops at once."""


class RequestFailed(Exception):
    """A request with no usable answer after its retries (the message says why)."""


@dataclass
class Reply:
    """The text of a chat completion and the tokens it used."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


def check_api_key_env(api_key_env: str) -> None:
    """``ValueError`` unless ``api_key_env`` looks like the name of an environment variable (the message never
    echoes it: it may be the key itself, put where its variable's name belongs)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env):
        raise ValueError("api_key_env: expected the NAME of an environment variable holding the API key "
                         "(e.g. OPENAI_API_KEY), not the key itself")


def read_api_key(api_key_env: str | None) -> str:
    """The API key from the environment variable ``api_key_env``; a placeholder when it is ``None``."""
    if api_key_env is None:
        return NO_KEY
    check_api_key_env(api_key_env)
    key = os.environ.get(api_key_env)
    if not key:
        raise ValueError(f"api_key_env: the environment variable {api_key_env} is not set; export the API key in it "
                         "(or leave api_key_env out for a server that needs no key)")
    return key


def _count(value: Any) -> int:
    """A token count from a reply; 0 for anything that is not a plausible count (a string, -1, 10**40)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**40 else 0


def parse_completion(body: bytes) -> tuple[Reply, bool]:
    """The reply of a chat-completion body, and whether it reported its usage; ``ValueError`` when the body is no
    chat completion."""
    data = loads_json(body)  # bounded: deep nesting is a ValueError, never a RecursionError
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    choices = data.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    text = message.get("content") if isinstance(message, dict) else None
    if text is not None and not isinstance(text, str):
        raise ValueError(f"the message content is {type(text).__name__}, not text")
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return Reply(text or ""), False
    return Reply(text or "", _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))), True


def _error_message(body: bytes) -> str:
    """What an error body says: its ``error.message`` (the OpenAI convention) or its text."""
    try:
        data = loads_json(body)
    except ValueError:
        return body.decode("utf-8", "replace")
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return message if isinstance(message, str) else body.decode("utf-8", "replace")


def _retry_after(reply: HttpReply) -> float | None:
    try:
        return float(str(reply.headers.get("retry-after", "")))
    except ValueError:
        return None


def check_base_url(base_url: str) -> str:
    """``base_url`` without a trailing slash; ``ValueError`` unless it is an http(s) URL with a host."""
    try:
        parts = urllib.parse.urlsplit(base_url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 0) >= 0
    except ValueError:  # a port that is no number, a broken IPv6 address
        valid = False
    if not valid:
        raise ValueError(f"base_url: expected http(s)://HOST[:PORT]/v1, got {base_url!r}")
    return base_url.rstrip("/")


def _close_loop(loop: asyncio.AbstractEventLoop, executor: concurrent.futures.ThreadPoolExecutor) -> None:
    """Stop a dropped judge's event loop and end its request threads (idle ones at once, busy ones when their
    request ends)."""
    loop.call_soon_threadsafe(loop.stop)
    executor.shutdown(wait=False, cancel_futures=True)


class RequestLoop:
    """An event loop on a thread of its own, made again in a forked process, that runs a judge's requests: at most
    ``concurrency`` at once, within the rate limits (both made for this loop, as :mod:`aiolimiter` requires)."""

    def __init__(self, concurrency: int, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency: expected a positive integer, got {concurrency}")
        self.concurrency, self._rates = concurrency, (requests_per_minute, tokens_per_minute)
        RateLimiter(*self._rates)  # a bad rate is an error now, not at the first request
        self._lock = threading.Lock()
        self._pid = -1

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._pid != os.getpid():  # a forked process gets its own loop, threads and limiters
                loop = asyncio.new_event_loop()
                # the transport blocks a thread per request: as many threads as requests in flight
                executor = concurrent.futures.ThreadPoolExecutor(self.concurrency, thread_name_prefix="served-judge")
                loop.set_default_executor(executor)
                threading.Thread(target=loop.run_forever, name="served-judge-loop", daemon=True).start()
                weakref.finalize(self, _close_loop, loop, executor)  # a judge let go takes its threads along
                self._loop, self._pid = loop, os.getpid()
                self.limits = RateLimiter(*self._rates)
                self._slots = asyncio.Semaphore(self.concurrency)
            return self._loop

    async def _bounded(self, fn: Callable[[Any], Awaitable[Any]], work: Any) -> Any:
        async with self._slots:
            return await fn(work)  # made here: a work cancelled before its turn leaves no coroutine unawaited

    def run_unordered(self, fn: Callable[[Any], Awaitable[Any]], works: Sequence[Any]) -> Iterator[Any]:
        """``await fn(work)`` for every work, yielded as each finishes; the rest are cancelled when the caller stops
        early (an error, the failure limit)."""
        loop = self._start()
        futures = [asyncio.run_coroutine_threadsafe(self._bounded(fn, work), loop) for work in works]
        try:
            for future in concurrent.futures.as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


class ChatClient:
    """Chat completions from one model on one server, within the limits of ``requests``, with retries, counting
    usage (module docstring). Its settings are checked by the served judges' options (:mod:`.served`)."""

    def __init__(self, base_url: str, model: str, *, requests: RequestLoop, api_key_env: str | None = None,
                 timeout_s: float = 60.0, max_reply_bytes: int = 8 * 2**20, retry: RetryPolicy = RetryPolicy(),
                 usage: JudgeUsage | None = None, seed: int | None = None,
                 extra_body: dict[str, Any] | None = None) -> None:
        self.base_url, self.model, self.timeout_s = check_base_url(base_url), model, timeout_s
        self.max_reply_bytes, self.requests, self.retry = max_reply_bytes, requests, retry
        self.usage = usage if usage is not None else JudgeUsage()
        self.seed, self.extra_body = seed, extra_body
        key = read_api_key(api_key_env)
        self._secrets = () if key == NO_KEY else (key,)
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                         "Accept": "application/json", "User-Agent": "swirl-lightning"}

    def redact(self, text: str) -> str:
        """``text`` without the API key or any credential (:func:`.redact.redact`)."""
        return redact(text, self._secrets)

    def _quote(self, text: str, limit: int = 200) -> str:
        """A server's text for a one-line message: redacted, on one line, shortened."""
        return shorten(" ".join(self.redact(text).split()), limit)

    def _status(self, reply: HttpReply) -> str:
        """A reply that is no success, in one line: its status and what it says (or where it redirects to)."""
        if 300 <= reply.status < 400:
            said = f"redirected to {self._quote(str(reply.headers.get('Location', '?')))}"
        else:
            said = self._quote(_error_message(reply.body))
        return f"HTTP {reply.status}" + (f": {said}" if said else "")

    def _counted_wait(self, state: RetryCallState) -> None:
        self.usage.add(wait_seconds=state.next_action.sleep if state.next_action is not None else 0.0)

    async def complete(self, messages: list[dict[str, str]], max_tokens: int, temperature: float) -> Reply:
        """The reply to ``messages`` (run on :attr:`requests`' loop); :class:`RequestFailed` when none came after the
        retries, :class:`JudgeConfigurationError` when the server refuses every request."""
        estimate = sum(len(m["content"]) for m in messages) // 4 + max_tokens
        payload: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                                   "temperature": temperature}
        if self.seed is not None:
            payload["seed"] = self.seed
        body = json.dumps({**payload, **(self.extra_body or {})}).encode("utf-8")
        attempts = self.retry.max_retries + 1
        retrying = AsyncRetrying(stop=stop_after_attempt(attempts), wait=self.retry.wait, reraise=True,
                                 retry=retry_if_exception_type(RetryableError), before_sleep=self._counted_wait)
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(body, estimate, retry=attempt.retry_state.attempt_number > 1)
        except RetryableError as error:
            raise RequestFailed(f"{error} (gave up after {attempts} attempts)") from None
        raise AssertionError("tenacity ends with a reply or an error")  # pragma: no cover

    async def _attempt(self, body: bytes, estimate: int, retry: bool) -> Reply:
        """One request: the reply, or the error that says whether to ask again (:class:`RetryableError`)."""
        limits = self.requests.limits
        waited = await limits.acquire(estimate)
        self.usage.add(requests=1, retries=int(retry), wait_seconds=waited)
        try:
            reply = await asyncio.to_thread(post, f"{self.base_url}/chat/completions", body, self._headers,
                                            timeout_s=self.timeout_s, max_reply_bytes=self.max_reply_bytes)
        except ReplyTooLarge as error:  # asking again would fetch as much again
            self._failed(RequestFailed(str(error)))
        except RequestTimedOut as error:
            self._failed(RetryableError(str(error)))
        except ConnectionFailed as error:
            self._failed(RetryableError(f"connection error: {self._quote(str(error))}"))
        if 200 <= reply.status < 300:
            try:
                answer, reported = parse_completion(reply.body)
            except ValueError as error:  # a body that is no chat completion
                quoted = self._quote(reply.body.decode("utf-8", "replace"), 100)
                self._failed(RetryableError(f"unreadable response: {self._quote(str(error))}: {quoted!r}"))
            self.usage.add(prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens)
            if reported:
                await limits.settle(estimate, answer.prompt_tokens + answer.completion_tokens)
            return answer
        if reply.status in (401, 403, 404) or 300 <= reply.status < 400:
            self._failed(JudgeConfigurationError(
                f"judge server {self.base_url} refused the request ({self._status(reply)}): check base_url, "
                f"the model name {self.model!r} and the API key variable (api_key_env)"))
        if reply.status == 429 or reply.status >= 500:
            self._failed(RetryableError(self._status(reply), _retry_after(reply)))
        self._failed(RequestFailed(self._status(reply)))  # the request itself is refused: asking again fails too

    def _failed(self, error: Exception) -> NoReturn:
        """Count a failed attempt and raise ``error``."""
        self.usage.add(failed_requests=1)
        raise error
