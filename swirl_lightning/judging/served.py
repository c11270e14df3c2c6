"""Judges served by any OpenAI-compatible chat-completions server (vLLM, SGLang, TGI, llama.cpp, ``transformers
serve``, a hosted API): the paper's gold-free step judge (``served``) and a YES/NO outcome grader (``served_grader``).

``served`` (:class:`ServedJudge`) asks the LLM, with the prompt of :mod:`.judge_prompts` (``prompt: math`` or
``search``, or a prompt file), to reason about the last step of a state and end with ``Verdict: GOOD`` or
``Verdict: BAD``; GOOD scores 1.0 and BAD 0.0. It serves every step-judge use: filtering (``swirl filter``), the
``swirl`` reward of freshly sampled actions (``swirl fit``; with ``group: true`` one request judges all G actions
of a state together), the validation GOOD rate. An invalid action is BAD without a request.
``served_grader`` (:class:`ServedGrader`) says YES/NO to "is the prediction the answer key?" (``prompt: math``
tolerates 10 / 10.00 / $10; ``prompt: qa`` for short answers).

A long run can rely on: at most ``concurrency`` requests in flight, ``requests_per_minute`` and
``tokens_per_minute`` limits, a deadline of ``timeout_s`` for each request as a whole (a reply that drips or stalls
ends there) and a cap of ``max_reply_bytes`` on its size (:mod:`~swirl_lightning.core.transport`), and retries
with exponential backoff and jitter on 429, 5xx, time-outs, connection errors and unreadable replies
(:mod:`.ratelimit`). A request still failing after its retries, another 4xx answer, a reply over the cap, or a reply
without a verdict is a *judge failure* (``Judgement(verdict=FAILED, score=None)``), never a BAD or a 0. A 401, 403,
404 or a redirect means no request can succeed (a wrong key, model or URL) and stops the run at once.

The API key is read from the environment variable named by ``api_key_env`` when the client is made; it is never
stored in a config, a judgement, the cache, a log or an output, and every text from the server or the connection
is redacted (:mod:`.redact`: the key, ``Authorization`` values, bearer tokens) before a message quotes it: servers
echo credentials in their errors. Without ``api_key_env`` a placeholder key is sent (local servers need none), so a
key in ``OPENAI_API_KEY`` never goes to a server that was not meant to get it.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from swirl_lightning.core.safe_load import loads_json
from swirl_lightning.core.trajectory import Judgement, State, Step
from swirl_lightning.core.transport import ConnectionFailed, HttpReply, ReplyTooLarge, RequestTimedOut, post
from swirl_lightning.judging.base import BAD, FAILED, GOOD, StepJudgeBase
from swirl_lightning.judging.judge_prompts import JudgePrompt, parse_group_verdicts, parse_verdict, shorten, transcript
from swirl_lightning.judging.ratelimit import JudgeUsage, RateLimiter, RetryPolicy
from swirl_lightning.judging.redact import redact

NO_KEY = "no-key"
"""The key sent when ``api_key_env`` is not set: servers without authentication accept any."""
DEFAULT_MAX_REPLY_BYTES = 8 * 2**20
"""The largest reply read: far above any chat completion a judge asks for, far below what would strain memory."""


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


def read_api_key(api_key_env: str | None) -> str:
    """The API key from the environment variable ``api_key_env``; a placeholder when it is ``None``."""
    if api_key_env is None:
        return NO_KEY
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env):
        # Never echo the value: it may be the key itself, put where its variable's name belongs.
        raise ValueError("api_key_env: expected the NAME of an environment variable holding the API key "
                         "(e.g. OPENAI_API_KEY), not the key itself")
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


def _check_base_url(base_url: str) -> str:
    """``base_url`` without a trailing slash; ``ValueError`` unless it is an http(s) URL with a host."""
    try:
        parts = urllib.parse.urlsplit(base_url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 0) >= 0
    except ValueError:  # a port that is no number, a broken IPv6 address
        valid = False
    if not valid:
        raise ValueError(f"base_url: expected http(s)://HOST[:PORT]/v1, got {base_url!r}")
    return base_url.rstrip("/")


class ChatClient:
    """Chat completions from one model on one server, within the limits, with retries, counting usage.

    Each attempt has ``timeout_s`` seconds in all, from connecting to the reply's last byte, and a reply is at most
    ``max_reply_bytes`` long (:mod:`~swirl_lightning.core.transport`). Every text that comes from the server or the
    connection is redacted (:mod:`.redact`) before it reaches a message.
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = None, timeout_s: float = 60.0,
                 max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES, retry: RetryPolicy = RetryPolicy(),
                 limiter: RateLimiter | None = None, usage: JudgeUsage | None = None, seed: int | None = None,
                 extra_body: dict[str, Any] | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        if not 0 < timeout_s <= threading.TIMEOUT_MAX:  # NaN included; a timer cannot wait longer than TIMEOUT_MAX
            raise ValueError(f"timeout_s: expected seconds > 0, got {timeout_s}")
        if max_reply_bytes < 1:
            raise ValueError(f"max_reply_bytes: expected a positive integer, got {max_reply_bytes}")
        self.base_url, self.model, self.timeout_s = _check_base_url(base_url), model, timeout_s
        self.max_reply_bytes = max_reply_bytes
        self.retry, self.limiter = retry, limiter or RateLimiter()
        self.usage = usage if usage is not None else JudgeUsage()
        self.seed, self.extra_body = seed, extra_body
        self._sleep, self._rng = sleep, random.Random()
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

    def complete(self, messages: list[dict[str, str]], max_tokens: int, temperature: float) -> Reply:
        """The reply to ``messages``; :class:`RequestFailed` when none came after the retries."""
        estimate = sum(len(m["content"]) for m in messages) // 4 + max_tokens
        payload: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                                   "temperature": temperature}
        if self.seed is not None:
            payload["seed"] = self.seed
        body = json.dumps({**payload, **(self.extra_body or {})}).encode("utf-8")
        url = f"{self.base_url}/chat/completions"
        last = "no attempt"
        for attempt in range(self.retry.max_retries + 1):
            waited = self.limiter.acquire(estimate)
            self.usage.add(requests=1, retries=int(attempt > 0), wait_seconds=waited)
            retry_after = None
            try:
                reply = post(url, body, self._headers, timeout_s=self.timeout_s, max_reply_bytes=self.max_reply_bytes)
            except ReplyTooLarge as error:  # asking again would fetch as much again
                self.usage.add(failed_requests=1)
                raise RequestFailed(str(error)) from None
            except RequestTimedOut as error:
                last = str(error)
            except ConnectionFailed as error:
                last = f"connection error: {self._quote(str(error))}"
            else:
                if 200 <= reply.status < 300:
                    try:
                        answer, reported = parse_completion(reply.body)
                    except ValueError as error:  # a body that is no chat completion
                        quoted = self._quote(reply.body.decode("utf-8", "replace"), 100)
                        last = f"unreadable response: {self._quote(str(error))}: {quoted!r}"
                    else:
                        self.usage.add(prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens)
                        if reported:
                            self.limiter.settle(estimate, answer.prompt_tokens + answer.completion_tokens)
                        return answer
                elif reply.status in (401, 403, 404) or 300 <= reply.status < 400:
                    self.usage.add(failed_requests=1)
                    raise JudgeConfigurationError(
                        f"judge server {self.base_url} refused the request ({self._status(reply)}): check base_url, "
                        f"the model name {self.model!r} and the API key variable (api_key_env)")
                elif reply.status == 429 or reply.status >= 500:
                    last, retry_after = self._status(reply), _retry_after(reply)
                else:  # the request itself is refused (too long, malformed): asking again fails too
                    self.usage.add(failed_requests=1)
                    raise RequestFailed(self._status(reply))
            self.usage.add(failed_requests=1)
            if attempt < self.retry.max_retries:
                delay = self.retry.delay(attempt, self._rng, retry_after)
                self.usage.add(wait_seconds=delay)
                self._sleep(delay)
        raise RequestFailed(f"{last} (gave up after {self.retry.max_retries + 1} attempts)")


class _Served:
    """What both served judges share: the client, the usage, and a pool of ``concurrency`` worker threads."""

    def _setup(self, base_url: str, model: str, *, api_key_env: str | None, temperature: float,
               max_tokens: int, seed: int | None, concurrency: int, requests_per_minute: float | None,
               tokens_per_minute: float | None, timeout_s: float, max_reply_bytes: int, max_retries: int,
               backoff_s: float, max_backoff_s: float, price_input_per_mtok: float | None,
               price_output_per_mtok: float | None, extra_body: dict[str, Any] | None) -> None:
        if not base_url or not model:
            raise ValueError("a served judge needs base_url (e.g. http://127.0.0.1:8000/v1) and model")
        if concurrency < 1:
            raise ValueError(f"concurrency: expected a positive integer, got {concurrency}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens: expected a positive integer, got {max_tokens}")
        self.model, self.temperature, self.max_tokens, self.concurrency = model, temperature, max_tokens, concurrency
        self.usage = JudgeUsage(price_input_per_mtok, price_output_per_mtok)
        self.client = ChatClient(base_url, model, api_key_env=api_key_env, timeout_s=timeout_s,
                                 max_reply_bytes=max_reply_bytes,
                                 retry=RetryPolicy(max_retries, backoff_s, max_backoff_s),
                                 limiter=RateLimiter(requests_per_minute, tokens_per_minute), usage=self.usage,
                                 seed=seed, extra_body=extra_body)
        self._executor: ThreadPoolExecutor | None = None
        self._pid = -1
        self._lock = threading.Lock()

    def _run_unordered(self, fn: Callable[[Any], Any], works: Sequence[Any]) -> Iterator[Any]:
        """``fn(work)`` for every work on the pool, yielded as each finishes; the rest are cancelled when the caller
        stops early (an error, the failure limit)."""
        with self._lock:
            if self._executor is None or self._pid != os.getpid():  # a forked process gets its own threads
                self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="served-judge")
                self._pid = os.getpid()
        futures = [self._executor.submit(fn, work) for work in works]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()

    def _ask(self, messages: list[dict[str, str]]) -> str:
        return self.client.complete(messages, self.max_tokens, self.temperature).text


class ServedJudge(_Served, StepJudgeBase):
    """The paper's gold-free process judge on an OpenAI-compatible server (module docstring).

    Options (``judge.options``): ``base_url`` and ``model`` (required); ``api_key_env`` (the NAME of the variable
    holding the key); ``prompt`` (``math``, ``search`` or a prompt file); ``model_name`` (the judge id is
    ``served:<model_name or model>``: name the model when ``model`` is a path, or when its weights change);
    ``temperature``, ``max_tokens``, ``seed``, ``extra_body`` (sent as they are); ``group`` (one request for all
    sampled actions of a state); ``concurrency``, ``requests_per_minute``, ``tokens_per_minute``, ``timeout_s`` (the
    deadline of one request, its reply's last byte included), ``max_reply_bytes`` (a longer reply is a failure),
    ``max_retries``, ``backoff_s``, ``max_backoff_s``; ``price_input_per_mtok`` and ``price_output_per_mtok`` (for
    the cost estimate); ``max_message_chars`` (longer messages are shortened).
    """

    cacheable = True
    needs_example = False

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = None, prompt: str = "math",
                 model_name: str | None = None, temperature: float = 0.0, max_tokens: int = 256, seed: int | None = None,
                 group: bool = False, concurrency: int = 4, requests_per_minute: float | None = None,
                 tokens_per_minute: float | None = None, timeout_s: float = 60.0,
                 max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES, max_retries: int = 4, backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0, price_input_per_mtok: float | None = None,
                 price_output_per_mtok: float | None = None, max_message_chars: int = 2000,
                 extra_body: dict[str, Any] | None = None, threshold: float = 0.5) -> None:
        self._setup(base_url, model, api_key_env=api_key_env, temperature=temperature, max_tokens=max_tokens,
                    seed=seed, concurrency=concurrency, requests_per_minute=requests_per_minute,
                    tokens_per_minute=tokens_per_minute, timeout_s=timeout_s, max_reply_bytes=max_reply_bytes,
                    max_retries=max_retries, backoff_s=backoff_s, max_backoff_s=max_backoff_s,
                    price_input_per_mtok=price_input_per_mtok, price_output_per_mtok=price_output_per_mtok,
                    extra_body=extra_body)
        self.prompt = JudgePrompt.load(prompt, "process")
        if group and "user_group" not in self.prompt.sections:
            raise ValueError(f"group: the prompt {self.prompt.path} has no '=== user_group' section")
        self.judge_id = f"served:{model_name or model}"
        self.prompt_version = self.prompt.prompt_version(temperature, max_tokens, seed, extra_body, group)
        self.group, self.threshold, self.max_message_chars = group, threshold, max_message_chars

    def messages(self, state: State, steps: Sequence[Step]) -> list[dict[str, str]]:
        """The judge's chat messages for one step, or for several candidate steps of one state (group mode)."""
        context = transcript(state.messages, self.max_message_chars)
        if len(steps) == 1:
            return self.prompt.messages("user", transcript=context, step=shorten(steps[0].text, self.max_message_chars))
        listed = "\n\n".join(f"Step {n}:\n{shorten(s.text, self.max_message_chars)}" for n, s in enumerate(steps, 1))
        return self.prompt.messages("user_group", transcript=context, steps=listed, count=len(steps))

    def _works(self, items: Sequence[tuple[State, Step]]) -> tuple[list[tuple[int, Judgement]], list[list[int]]]:
        """Invalid steps judged BAD at once, and the indices of the rest in requests: one each, or (``group``) one
        per state for its sampled actions."""
        ready, works = [], []
        by_state: dict[str, list[int]] = {}
        for index, (state, step) in enumerate(items):
            if step.action.kind == "invalid":
                ready.append((index, self.judgement(0.0)))
            elif self.group and step.observation is None:
                key = json.dumps(state.messages, sort_keys=True)
                if key not in by_state:
                    by_state[key] = []
                    works.append(by_state[key])
                by_state[key].append(index)
            else:
                works.append([index])
        return ready, works

    def _judge(self, items: Sequence[tuple[State, Step]], indices: list[int]) -> list[tuple[int, Judgement]]:
        state = items[indices[0]][0]
        try:
            reply = self._ask(self.messages(state, [items[i][1] for i in indices]))
        except RequestFailed as error:
            results = [(i, self.failure(str(error))) for i in indices]
        else:
            verdicts: Mapping[int, str | None]
            if len(indices) == 1:
                verdicts = {1: parse_verdict(reply, GOOD, BAD)}
            else:
                verdicts = parse_group_verdicts(reply, len(indices), GOOD, BAD)
            results = []
            for n, index in enumerate(indices, start=1):
                verdict = verdicts.get(n)
                if verdict is None:
                    where = "" if len(indices) == 1 else f" for step {n}"
                    quoted = shorten(self.client.redact(reply), 300)
                    results.append((index, self.failure(f"no verdict{where} in the reply: {quoted!r}")))
                else:
                    results.append((index, self.judgement(1.0 if verdict == GOOD else 0.0)))
        self.usage.add(judgements=len(results), failures=sum(j.verdict == FAILED for _, j in results))
        return results

    def iter_judgements(self, items: Sequence[tuple[State, Step]]) -> Iterator[tuple[int, Judgement]]:
        """``(index, judgement)`` of every item as it is ready (requests in parallel, in any order)."""
        ready, works = self._works(items)
        yield from ready
        for results in self._run_unordered(lambda indices: self._judge(items, indices), works):
            yield from results

    def judge_steps(self, items: Sequence[tuple[State, Step]]) -> list[Judgement]:
        """One judgement per item, in order: GOOD (1.0), BAD (0.0) or a judge failure."""
        judgements: list[Judgement | None] = [None] * len(items)
        for index, judgement in self.iter_judgements(items):
            judgements[index] = judgement
        return judgements  # type: ignore[return-value]


class ServedGrader(_Served):
    """Outcome judge: the served LLM says YES/NO to "is the predicted answer the answer key?" (module docstring).

    Options as :class:`ServedJudge` (``prompt``: ``math`` or ``qa``, or a prompt file), without ``group``.
    ``score_batch`` gives 1.0 (YES), 0.0 (NO, or no prediction: no request) or ``None`` (a judge failure).
    """

    cacheable = True

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = None, prompt: str = "math",
                 model_name: str | None = None, temperature: float = 0.0, max_tokens: int = 128, seed: int | None = None,
                 concurrency: int = 4, requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                 timeout_s: float = 60.0, max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES, max_retries: int = 4,
                 backoff_s: float = 1.0, max_backoff_s: float = 30.0, price_input_per_mtok: float | None = None,
                 price_output_per_mtok: float | None = None, extra_body: dict[str, Any] | None = None) -> None:
        self._setup(base_url, model, api_key_env=api_key_env, temperature=temperature, max_tokens=max_tokens,
                    seed=seed, concurrency=concurrency, requests_per_minute=requests_per_minute,
                    tokens_per_minute=tokens_per_minute, timeout_s=timeout_s, max_reply_bytes=max_reply_bytes,
                    max_retries=max_retries, backoff_s=backoff_s, max_backoff_s=max_backoff_s,
                    price_input_per_mtok=price_input_per_mtok, price_output_per_mtok=price_output_per_mtok,
                    extra_body=extra_body)
        self.prompt = JudgePrompt.load(prompt, "grader")
        self.judge_id = f"served_grader:{model_name or model}"
        self.prompt_version = self.prompt.prompt_version(temperature, max_tokens, seed, extra_body)

    def messages(self, prediction: str, gold: str, question: str | None) -> list[dict[str, str]]:
        """The grader's chat messages."""
        return self.prompt.messages("user", question=question or "(not given)", answer_key=gold, prediction=prediction)

    def _grade(self, work: tuple[int, str, str, str | None]) -> tuple[int, Judgement]:
        index, prediction, gold, question = work
        try:
            reply = self._ask(self.messages(prediction, gold, question))
        except RequestFailed as error:
            judgement = Judgement(self.judge_id, FAILED, None, self.prompt_version, error=str(error))
        else:
            verdict = parse_verdict(reply, "YES", "NO")
            judgement = (Judgement(self.judge_id, FAILED, None, self.prompt_version,
                                   error=f"no verdict in the reply: {shorten(self.client.redact(reply), 300)!r}")
                         if verdict is None else
                         Judgement(self.judge_id, GOOD if verdict == "YES" else BAD, float(verdict == "YES"),
                                   self.prompt_version))
        self.usage.add(judgements=1, failures=int(judgement.failed))
        return index, judgement

    def grade_batch(self, predictions: Sequence[str | None], golds: Sequence[str],
                    questions: Sequence[str | None] | None = None) -> list[Judgement]:
        """One judgement per answer: GOOD (correct), BAD (wrong or missing) or a judge failure."""
        questions = questions if questions is not None else [None] * len(golds)
        judgements: list[Judgement | None] = [None] * len(golds)
        works = []
        for index, (prediction, gold, question) in enumerate(zip(predictions, golds, questions)):
            if prediction is None or not prediction.strip():
                judgements[index] = Judgement(self.judge_id, BAD, 0.0, self.prompt_version)
            else:
                works.append((index, prediction, gold, question))
        for index, judgement in self._run_unordered(self._grade, works):
            judgements[index] = judgement
        return judgements  # type: ignore[return-value]

    def score_batch(self, predictions: Sequence[str | None], golds: Sequence[str],
                    questions: Sequence[str | None] | None = None) -> list[float | None]:
        return [j.score for j in self.grade_batch(predictions, golds, questions)]

    def score(self, prediction: str | None, gold: str) -> float | None:
        return self.score_batch([prediction], [gold])[0]
