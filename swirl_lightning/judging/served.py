"""Judges served by any OpenAI-compatible chat-completions server (vLLM, SGLang, TGI, llama.cpp, ``transformers
serve``, a hosted API): the paper's gold-free step judge (``served``) and a YES/NO outcome grader (``served_grader``).

``served`` (:class:`ServedJudge`) asks the LLM, with the prompt of :mod:`.judge_prompts` (``prompt: math`` or
``search``, or a prompt file), to reason about the last step of a state and end with ``Verdict: GOOD`` or
``Verdict: BAD``; GOOD scores 1.0 and BAD 0.0. It serves every step-judge use: filtering (``swirl filter``), the
``swirl`` reward of freshly sampled actions (``swirl fit``; with ``group: true`` one request judges all G actions
of a state together), the validation GOOD rate. An invalid action is BAD without a request.
``served_grader`` (:class:`ServedGrader`) says YES/NO to "is the prediction the answer key?" (``prompt: math``
tolerates 10 / 10.00 / $10; ``prompt: qa`` for short answers).

Options are the fields of :class:`ServedJudgeOptions` and :class:`ServedGraderOptions`, checked before a client is
made. A long run can rely on (:mod:`.chat_client`): at most ``concurrency`` requests in flight,
``requests_per_minute`` and ``tokens_per_minute`` limits (:mod:`aiolimiter`), a deadline of ``timeout_s`` for each
request as a whole (a reply that drips or stalls ends there) and a cap of ``max_reply_bytes`` on its size
(:mod:`~swirl_lightning.core.transport`), and retries with exponential backoff and jitter (:mod:`tenacity`), honouring
``Retry-After``, on 429, 5xx, time-outs, connection errors and unreadable replies (:mod:`.ratelimit`). A request still
failing after its retries, another 4xx answer, a reply over the cap, or a reply without a verdict is a *judge failure*
(``Judgement(verdict=FAILED, score=None)``), never a BAD or a 0. A 401, 403, 404 or a redirect means no request can
succeed (a wrong key, model or URL) and stops the run at once.

The API key is read from the environment variable named by ``api_key_env`` when the client is made; it is never
stored in a config, a judgement, the cache, a log or an output, and every text from the server or the connection
is redacted (:mod:`.redact`: the key, ``Authorization`` values, bearer tokens) before a message quotes it: servers
echo credentials in their errors. Without ``api_key_env`` a placeholder key is sent (local servers need none), so a
key in ``OPENAI_API_KEY`` never goes to a server that was not meant to get it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from swirl_lightning.core.trajectory import Judgement, State, Step
from swirl_lightning.judging.base import BAD, FAILED, GOOD, OutcomeJudgeBase, StepJudgeBase
from swirl_lightning.judging.chat_client import (  # noqa: F401 - the errors and the key reader are re-exported
    ChatClient,
    JudgeConfigurationError,
    RequestFailed,
    RequestLoop,
    check_api_key_env,
    check_base_url,
    read_api_key,
)
from swirl_lightning.judging.judge_prompts import JudgePrompt, parse_group_verdicts, parse_verdict, shorten, transcript
from swirl_lightning.judging.options import JudgeOptions
from swirl_lightning.judging.ratelimit import JudgeUsage, RetryPolicy

DEFAULT_MAX_REPLY_BYTES = 8 * 2**20
"""The largest reply read: far above any chat completion a judge asks for, far below what would strain memory."""


@dataclass(frozen=True)
class ServedOptions(JudgeOptions):
    """The options both served judges take (the fields of :class:`ServedJudgeOptions` and
    :class:`ServedGraderOptions`)."""

    base_url: str
    """The server's OpenAI-compatible API, e.g. ``http://127.0.0.1:8000/v1``."""
    model: str
    """The model name the server knows."""
    api_key_env: str | None = None
    """The NAME of the environment variable holding the API key (never the key); none: a placeholder key is sent."""
    prompt: str = "math"
    """A shipped prompt (``math``, ``search`` for the step judge; ``math``, ``qa`` for the grader) or a prompt file."""
    model_name: str | None = None
    """The name in the judge id (``served:<model_name or model>``): name the model when ``model`` is a path, or when
    its weights change."""
    temperature: float = 0.0
    """Sent as it is."""
    max_tokens: int = 256
    """The longest reply asked for, in tokens."""
    seed: int | None = None
    """Sent as it is, when set."""
    concurrency: int = 4
    """The most requests in flight at once."""
    requests_per_minute: float | None = None
    """A limit on requests, paced (no burst of a minute's worth); none (or 0): no limit."""
    tokens_per_minute: float | None = None
    """A limit on tokens (estimated before a request, charged as the server reports); none (or 0): no limit."""
    timeout_s: float = 60.0
    """The deadline of one request as a whole, the reply's last byte included."""
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
    """A longer reply is a judge failure (asking again would fetch as much again)."""
    max_retries: int = 4
    """Retries after the first attempt of a request (429, 5xx, time-outs, connection errors, unreadable replies)."""
    backoff_s: float = 1.0
    """The first retry's backoff; it doubles with each retry, with jitter."""
    max_backoff_s: float = 30.0
    """The longest backoff, and the most of a server's ``Retry-After`` honoured."""
    price_input_per_mtok: float | None = None
    """The price of a million prompt tokens, for the cost estimate."""
    price_output_per_mtok: float | None = None
    """The price of a million completion tokens, for the cost estimate."""
    extra_body: dict[str, Any] | None = None
    """More fields of the request body, sent as they are (e.g. ``{top_p: 0.9}``)."""

    kind = "served"

    def __post_init__(self) -> None:
        if not self.base_url or not self.model:
            raise ValueError("a served judge needs base_url (e.g. http://127.0.0.1:8000/v1) and model")
        check_base_url(self.base_url)
        if self.api_key_env is not None:
            check_api_key_env(self.api_key_env)
        if self.concurrency < 1:
            raise ValueError(f"concurrency: expected a positive integer, got {self.concurrency}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens: expected a positive integer, got {self.max_tokens}")
        if not 0 < self.timeout_s <= threading.TIMEOUT_MAX:  # NaN too; a timer cannot wait longer than TIMEOUT_MAX
            raise ValueError(f"timeout_s: expected seconds > 0, got {self.timeout_s}")
        if self.max_reply_bytes < 1:
            raise ValueError(f"max_reply_bytes: expected a positive integer, got {self.max_reply_bytes}")
        for name, rate in (("requests_per_minute", self.requests_per_minute), ("tokens_per_minute", self.tokens_per_minute)):
            if rate is not None and not rate >= 0:  # 0, as null, is no limit
                raise ValueError(f"{name}: expected a positive number per minute, got {rate}")
        self.retry_policy()  # its own checks

    def retry_policy(self) -> RetryPolicy:
        """The retry policy these options give."""
        return RetryPolicy(self.max_retries, self.backoff_s, self.max_backoff_s)

    def judge_id(self) -> str:
        return f"{self.kind}:{self.model_name or self.model}"


@dataclass(frozen=True)
class ServedJudgeOptions(ServedOptions):
    """Options of the ``served`` step judge."""

    group: bool = False
    """One request judges all sampled actions of a state together (the prompt needs a ``user_group`` section)."""
    max_message_chars: int = 2000
    """Longer messages are shortened to their head and tail before the judge reads them."""
    threshold: float = 0.5
    """A step is GOOD when its score (1 for GOOD, 0 for BAD) is at least this."""


@dataclass(frozen=True)
class ServedGraderOptions(ServedOptions):
    """Options of the ``served_grader`` outcome judge."""

    max_tokens: int = 128
    """The longest reply asked for, in tokens."""

    kind = "served_grader"


class _Served:
    """What both served judges share: the options, the client, the usage and the loop their requests run on."""

    options: ServedOptions
    usage: JudgeUsage | None  # the protocols' type; _setup sets it (and _usage, the same object, typed as set)
    _usage: JudgeUsage

    def _setup(self, options: ServedOptions, prompt_kind: str) -> None:
        self.model, self.temperature, self.max_tokens = options.model, options.temperature, options.max_tokens
        self.concurrency = options.concurrency
        self.usage = self._usage = JudgeUsage(options.price_input_per_mtok, options.price_output_per_mtok)
        self.requests = RequestLoop(options.concurrency, options.requests_per_minute, options.tokens_per_minute)
        self.client = ChatClient(options.base_url, options.model, requests=self.requests,
                                 api_key_env=options.api_key_env, timeout_s=options.timeout_s,
                                 max_reply_bytes=options.max_reply_bytes, retry=options.retry_policy(),
                                 usage=self._usage, seed=options.seed, extra_body=options.extra_body)
        self.prompt = JudgePrompt.load(options.prompt, prompt_kind)

    async def _ask(self, messages: list[dict[str, str]]) -> str:
        return (await self.client.complete(messages, self.max_tokens, self.temperature)).text


class ServedJudge(_Served, StepJudgeBase):
    """The paper's gold-free process judge on an OpenAI-compatible server (module docstring); its options are the
    fields of :class:`ServedJudgeOptions`."""

    Options = ServedJudgeOptions
    cacheable = True
    needs_example = False
    verdict_settings = ("max_message_chars",)

    def __init__(self, base_url: str, model: str, **options: Any) -> None:
        self.options = opts = ServedJudgeOptions(base_url, model, **options)
        self._setup(opts, "process")
        if opts.group and "user_group" not in self.prompt.sections:
            raise ValueError(f"group: the prompt {self.prompt.path} has no '=== user_group' section")
        self.judge_id = opts.judge_id()
        self.prompt_version = self.prompt.prompt_version(opts.temperature, opts.max_tokens, opts.seed,
                                                         opts.extra_body, opts.group)
        self.group, self.threshold, self.max_message_chars = opts.group, opts.threshold, opts.max_message_chars

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

    async def _judge(self, items: Sequence[tuple[State, Step]], indices: list[int]) -> list[tuple[int, Judgement]]:
        state = items[indices[0]][0]
        try:
            reply = await self._ask(self.messages(state, [items[i][1] for i in indices]))
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
        self._usage.add(judgements=len(results), failures=sum(j.verdict == FAILED for _, j in results))
        return results

    def iter_judgements(self, items: Sequence[tuple[State, Step]]) -> Iterator[tuple[int, Judgement]]:
        """``(index, judgement)`` of every item as it is ready (requests in parallel, in any order)."""
        ready, works = self._works(items)
        yield from ready
        for results in self.requests.run_unordered(lambda indices: self._judge(items, indices), works):
            yield from results

    def judge_steps(self, items: Sequence[tuple[State, Step]]) -> list[Judgement]:
        """One judgement per item, in order: GOOD (1.0), BAD (0.0) or a judge failure."""
        judgements: list[Judgement | None] = [None] * len(items)
        for index, judgement in self.iter_judgements(items):
            judgements[index] = judgement
        return judgements  # type: ignore[return-value]


class ServedGrader(_Served, OutcomeJudgeBase):
    """Outcome judge: the served LLM says YES/NO to "is the predicted answer the answer key?" (module docstring); its
    options are the fields of :class:`ServedGraderOptions` (``prompt``: ``math`` or ``qa``, or a prompt file).
    ``score_batch`` gives 1.0 (YES), 0.0 (NO, or no prediction: no request) or ``None`` (a judge failure).
    """

    Options = ServedGraderOptions
    cacheable = True

    def __init__(self, base_url: str, model: str, **options: Any) -> None:
        self.options = opts = ServedGraderOptions(base_url, model, **options)
        self._setup(opts, "grader")
        self.judge_id = opts.judge_id()
        self.prompt_version = self.prompt.prompt_version(opts.temperature, opts.max_tokens, opts.seed,
                                                         opts.extra_body)

    def messages(self, prediction: str, gold: str, question: str | None) -> list[dict[str, str]]:
        """The grader's chat messages."""
        return self.prompt.messages("user", question=question or "(not given)", answer_key=gold, prediction=prediction)

    async def _grade(self, work: tuple[int, str, str, str | None]) -> tuple[int, Judgement]:
        index, prediction, gold, question = work
        try:
            reply = await self._ask(self.messages(prediction, gold, question))
        except RequestFailed as error:
            judgement = Judgement(self.judge_id, FAILED, None, self.prompt_version, error=str(error))
        else:
            verdict = parse_verdict(reply, "YES", "NO")
            judgement = (Judgement(self.judge_id, FAILED, None, self.prompt_version,
                                   error=f"no verdict in the reply: {shorten(self.client.redact(reply), 300)!r}")
                         if verdict is None else
                         Judgement(self.judge_id, GOOD if verdict == "YES" else BAD, float(verdict == "YES"),
                                   self.prompt_version))
        self._usage.add(judgements=1, failures=int(judgement.failed))
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
        for index, judgement in self.requests.run_unordered(self._grade, works):
            judgements[index] = judgement
        return judgements  # type: ignore[return-value]

    def score_batch(self, predictions: Sequence[str | None], golds: Sequence[str],
                    questions: Sequence[str | None] | None = None) -> list[float | None]:
        return [j.score for j in self.grade_batch(predictions, golds, questions)]

    def score(self, prediction: str | None, gold: str) -> float | None:
        return self.score_batch([prediction], [gold])[0]
