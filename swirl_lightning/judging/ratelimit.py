"""What a long run against a served judge relies on: request and token rate limits, retries with exponential
backoff and jitter, and the usage (requests, tokens, estimated cost) to report.

The limits are :mod:`aiolimiter` leaky buckets and the retries :mod:`tenacity` policies: this module only configures
them. A served judge sends its requests from one event loop per process (:mod:`.chat_client`), so the limiters are
made for that loop; the usage is counted from several threads and so is thread-safe.
"""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass, field
from typing import Any

from aiolimiter import AsyncLimiter
from tenacity import RetryCallState, wait_exponential, wait_random_exponential


def _bucket(rate_per_minute: float) -> AsyncLimiter:
    """A leaky bucket for ``rate_per_minute`` units, paced: it holds one second's worth (at least one unit), so a
    limit is never exceeded by a burst (a bucket of a minute's worth would let a minute's requests go at once)."""
    if not rate_per_minute > 0:
        raise ValueError(f"rate: expected a positive number per minute, got {rate_per_minute}")
    capacity = max(1.0, rate_per_minute / 60.0)
    return AsyncLimiter(capacity, capacity * 60.0 / rate_per_minute)


async def _take(bucket: AsyncLimiter, amount: float) -> None:
    """Take ``amount`` units, a bucketful at a time: a take larger than the bucket waits as long as the rate says."""
    while amount > 0:
        part = min(amount, bucket.max_rate)
        await bucket.acquire(part)
        amount -= part


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits (either may be ``None``: no limit), for one event loop.

    :meth:`acquire` waits until one request of an estimated size may go; :meth:`settle` charges the tokens the server
    reported beyond the estimate, so the token limit holds for the real use (a request that used fewer tokens than
    estimated gives nothing back: the limit errs on the safe side).
    """

    def __init__(self, requests_per_minute: float | None = None, tokens_per_minute: float | None = None) -> None:
        self.requests = _bucket(requests_per_minute) if requests_per_minute else None
        self.tokens = _bucket(tokens_per_minute) if tokens_per_minute else None

    async def acquire(self, tokens: int = 0) -> float:
        """Wait until a request of ``tokens`` estimated tokens may be sent; returns the seconds waited."""
        started = asyncio.get_running_loop().time()
        if self.requests is not None:
            await self.requests.acquire()
        if self.tokens is not None and tokens > 0:
            await _take(self.tokens, tokens)
        return asyncio.get_running_loop().time() - started

    async def settle(self, estimated: int, actual: int) -> None:
        """Charge the tokens a request used beyond its estimate."""
        if self.tokens is not None and actual > estimated:
            await _take(self.tokens, actual - estimated)


class RetryableError(Exception):
    """An attempt that may succeed when made again (a 429, a 5xx, a time-out, a dropped connection, an unreadable
    reply); ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before asking again: ``max_retries`` retries after the first attempt, the
    k-th after ``min(max_backoff_s, backoff_s * 2**k)`` seconds with "equal jitter" (half fixed, half uniformly
    random, so that many workers hit by one 429 do not come back together). A server's ``Retry-After`` is honoured
    up to ``max_backoff_s``. :attr:`wait` is the tenacity wait strategy."""

    max_retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries: expected 0 or more, got {self.max_retries}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(f"backoff_s and max_backoff_s: expected seconds >= 0, got {self.backoff_s}, {self.max_backoff_s}")

    @property
    def wait(self) -> Any:
        """The tenacity wait: exponential backoff with equal jitter, at least the server's ``Retry-After``."""
        half, cap = self.backoff_s / 2, self.max_backoff_s / 2
        backoff = wait_exponential(multiplier=half, max=cap) + wait_random_exponential(multiplier=half, max=cap)
        return _AtLeastRetryAfter(backoff, self.max_backoff_s)

    def delay(self, retry: int, rng: random.Random | None = None, retry_after: float | None = None) -> float:
        """Seconds :attr:`wait` waits before retry number ``retry`` (0-based). ``rng`` is unused (tenacity draws the
        jitter); kept so that a caller may pass one."""
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]  # a wait reads no Retrying
        state.attempt_number = retry + 1
        state.set_exception((RetryableError, RetryableError("", retry_after), None))
        return self.wait(state)


@dataclass(frozen=True)
class _AtLeastRetryAfter:
    """A tenacity wait that waits at least what the failed attempt's ``Retry-After`` asked, up to ``cap``."""

    backoff: Any
    cap: float

    def __call__(self, state: RetryCallState) -> float:
        delay = self.backoff(state)
        failure = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failure, RetryableError) and failure.retry_after is not None and failure.retry_after > 0:
            delay = max(delay, min(failure.retry_after, self.cap))
        return delay


@dataclass
class JudgeUsage:
    """What a served judge used, counted over its lifetime (thread-safe ``add``).

    ``requests`` counts HTTP attempts (retries included), ``retries`` the attempts after a first one,
    ``failed_requests`` the attempts that got no usable answer; ``judgements`` and ``failures`` count the steps (or
    answers) judged and those that ended as judge failures. The cost is estimated from the prices per million
    prompt (input) and completion (output) tokens, when both are known.
    """

    price_input_per_mtok: float | None = None
    price_output_per_mtok: float | None = None
    requests: int = 0
    retries: int = 0
    failed_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    judgements: int = 0
    failures: int = 0
    wait_seconds: float = 0.0
    """Seconds spent waiting for the rate limits and between retries."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: Any) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    @property
    def cost_usd(self) -> float | None:
        """The estimated cost in the prices' currency (USD by convention), or ``None`` without prices."""
        if self.price_input_per_mtok is None or self.price_output_per_mtok is None:
            return None
        return (self.prompt_tokens * self.price_input_per_mtok + self.completion_tokens * self.price_output_per_mtok) / 1e6

    def as_dict(self) -> dict[str, Any]:
        """The counts, the total tokens and the estimated cost (JSON-ready)."""
        with self._lock:
            counts = {name: getattr(self, name) for name in ("requests", "retries", "failed_requests", "prompt_tokens",
                                                             "completion_tokens", "judgements", "failures")}
            counts["wait_seconds"] = round(self.wait_seconds, 3)
        counts["total_tokens"] = counts["prompt_tokens"] + counts["completion_tokens"]
        cost = self.cost_usd
        counts["cost_usd"] = None if cost is None else round(cost, 6)
        return counts
