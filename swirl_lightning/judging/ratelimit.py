"""What a long run against a served judge relies on: request and token rate limits, retries with exponential
backoff and jitter, and the usage (requests, tokens, estimated cost) to report.

All three are thread-safe: a served judge sends its requests from a pool of worker threads.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class TokenBucket:
    """``rate_per_minute`` units a minute, paced: the bucket holds at most one second's worth (at least one unit),
    so a limit is never exceeded by a burst. A take larger than the bucket waits for a full bucket and leaves a debt
    that later takes wait out, so the rate holds on average for any size."""

    def __init__(self, rate_per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_minute <= 0:
            raise ValueError(f"rate: expected a positive number per minute, got {rate_per_minute}")
        self.rate = rate_per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self._clock = clock
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._last) * self.rate)
        self._last = now

    def wait_time(self, amount: float) -> float:
        """Seconds until ``amount`` may be taken (0 when now)."""
        self._refill()
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def give_back(self, amount: float) -> None:
        """Return (or, negative, charge) units: the difference between a request's estimate and its real use."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits (either may be ``None``: no limit).

    :meth:`acquire` blocks until one request of an estimated size may go; :meth:`settle` corrects the token count
    with what the server reported, so the token limit holds for the real use.
    """

    def __init__(self, requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.requests = TokenBucket(requests_per_minute, clock) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute, clock) if tokens_per_minute else None
        self._lock = threading.Lock()
        self._sleep = sleep

    def acquire(self, tokens: int = 0) -> float:
        """Wait until a request of ``tokens`` estimated tokens may be sent; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                wait = max(self.requests.wait_time(1) if self.requests else 0.0,
                           self.tokens.wait_time(tokens) if self.tokens else 0.0)
                if wait <= 0:
                    if self.requests:
                        self.requests.take(1)
                    if self.tokens:
                        self.tokens.take(tokens)
                    return waited
            self._sleep(wait)
            waited += wait

    def settle(self, estimated: int, actual: int) -> None:
        """Charge the difference between a request's estimated and real token count."""
        if self.tokens is not None:
            with self._lock:
                self.tokens.give_back(estimated - actual)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before asking again: ``max_retries`` retries after the first attempt, the
    k-th after ``min(max_backoff_s, backoff_s * 2**k)`` seconds with "equal jitter" (half fixed, half uniformly
    random, so that many workers hit by one 429 do not come back together). A server's ``Retry-After`` is honoured
    up to ``max_backoff_s``."""

    max_retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries: expected 0 or more, got {self.max_retries}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(f"backoff_s and max_backoff_s: expected seconds >= 0, got {self.backoff_s}, {self.max_backoff_s}")

    def delay(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        cap = min(self.max_backoff_s, self.backoff_s * 2 ** retry)
        delay = cap / 2 + rng.uniform(0, cap / 2)
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, self.max_backoff_s))
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
