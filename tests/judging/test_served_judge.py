"""The served judges against a stub OpenAI-compatible server on 127.0.0.1, counting the requests it saw: retries on
429, 5xx, time-outs and dropped connections; judge failures (never BAD or 0); limits; prompts and verdicts; a
deadline for the whole request and a cap on the reply's size; the API key redacted from every message; options
checked before the judge is built."""

import asyncio
import contextlib
import gc
import json
import random
import re
import socket
import threading
import time
import tracemalloc

import pytest

from swirl_lightning.core.trajectory import FAILED, Judgement, State, Step, from_dict, parse_action, to_dict
from swirl_lightning.judging.base import make_outcome_judge, make_step_judge
from swirl_lightning.judging.judge_prompts import JudgePrompt, parse_group_verdicts, parse_verdict
from swirl_lightning.judging.ratelimit import RateLimiter, RetryPolicy
from swirl_lightning.judging.redact import redact
from swirl_lightning.judging.served import JudgeConfigurationError, ServedGrader, ServedJudge
from swirl_lightning.testing import StubChatServer, StubResponse, run_on_virtual_clock

FAST = {"backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 5.0}


def item(text: str, state: str = "Question: what is 2+3?") -> tuple[State, Step]:
    return State("q", 0, [{"role": "user", "content": state}]), Step(text, parse_action(text, {"calc": "calc"}))


def step_of(body: dict) -> str:
    """The judged step's text, as the stub sees it in the request."""
    return body["messages"][-1]["content"].rpartition("(judge this one only):\n\n")[2]


def judge_for(server: StubChatServer, **options) -> ServedJudge:
    return ServedJudge(server.base_url, "stub-model", **{**FAST, **options})


def test_a_good_and_a_bad_verdict_and_an_invalid_step_without_a_request() -> None:
    replies = {"<answer>5</answer>": "It follows.\nVerdict: GOOD", "<answer>6</answer>": "Wrong sum.\nVerdict: **BAD**"}
    with StubChatServer(lambda body, seen: replies[step_of(body)]) as server:
        judge = judge_for(server, price_input_per_mtok=3.0, price_output_per_mtok=15.0)
        judgements = judge.judge_steps([item("<answer>5</answer>"), item("<answer>6</answer>"), item("no action")])
        assert [(j.verdict, j.score) for j in judgements] == [("GOOD", 1.0), ("BAD", 0.0), ("BAD", 0.0)]
        assert len(server.requests) == 2  # the invalid step is BAD without asking
        assert {j.judge for j in judgements} == {"served:stub-model"}
        assert {j.prompt_version for j in judgements} == {judge.prompt_version}
        assert judge.prompt_version.startswith("process-math-v1#")
        request = server.requests[0]["body"]
        assert request["model"] == "stub-model" and request["temperature"] == 0.0 and request["max_tokens"] == 256
        assert "Verdict: GOOD" in request["messages"][0]["content"]  # the system prompt asks for the verdict line
        usage = judge.usage.as_dict()
        assert usage["requests"] == 2 and usage["judgements"] == 2 and usage["failures"] == 0
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] == 8  # the stub counts words
        assert usage["cost_usd"] == pytest.approx((usage["prompt_tokens"] * 3.0 + 8 * 15.0) / 1e6)


def test_429_then_200_is_retried_and_succeeds() -> None:
    def respond(body, seen):
        if seen == 0:
            return StubResponse(status=429, raw_body='{"error": {"message": "rate limited"}}')
        return "Verdict: GOOD"

    with StubChatServer(respond) as server:
        judge = judge_for(server)
        assert [j.verdict for j in judge.judge_steps([item("<answer>5</answer>")])] == ["GOOD"]
        assert len(server.requests) == 2
        assert judge.usage.as_dict()["retries"] == 1 and judge.usage.as_dict()["failed_requests"] == 1


@pytest.mark.parametrize("fault, error", [
    (StubResponse(status=500, raw_body='{"error": {"message": "boom"}}'), "HTTP 500: boom"),
    (StubResponse(status=503, raw_body="Service Unavailable"), "HTTP 503"),
    (StubResponse(raw_body="<html>not json</html>"), "unreadable response"),
    (StubResponse(drop=True), "connection error"),
])
def test_a_fault_every_time_is_retried_then_a_failure_never_bad_or_zero(fault, error) -> None:
    with StubChatServer(lambda body, seen: fault) as server:
        judge = judge_for(server, max_retries=2)
        (judgement,) = judge.judge_steps([item("<answer>5</answer>")])
        assert judgement.failed and judgement.verdict == FAILED and judgement.score is None
        assert error in judgement.error and "gave up after 3 attempts" in judgement.error
        assert len(server.requests) == 3  # the first attempt and 2 retries
        assert judge.usage.as_dict()["failures"] == 1


def test_a_dropped_connection_then_an_answer_is_retried() -> None:
    with StubChatServer(lambda body, seen: StubResponse(drop=True) if seen == 0 else "Verdict: BAD") as server:
        judge = judge_for(server)
        assert [j.verdict for j in judge.judge_steps([item("<answer>5</answer>")])] == ["BAD"]
        assert len(server.requests) == 2


@pytest.mark.parametrize("reply", ["I am not sure about this one.", "", "Verdict: maybe", "this step is good"])
def test_unparseable_verdicts_are_failures_and_not_retried(reply) -> None:
    with StubChatServer(lambda body, seen: reply) as server:
        judge = judge_for(server)
        (judgement,) = judge.judge_steps([item("<answer>5</answer>")])
        assert judgement.failed and judgement.score is None and "no verdict in the reply" in judgement.error
        assert len(server.requests) == 1


def test_timeouts_are_enforced() -> None:
    with StubChatServer(lambda body, seen: StubResponse(text="Verdict: GOOD", delay_s=3.0)) as server:
        judge = judge_for(server, timeout_s=0.3, max_retries=1)
        started = time.monotonic()
        (judgement,) = judge.judge_steps([item("<answer>5</answer>")])
        elapsed = time.monotonic() - started
        assert judgement.failed and "timed out after 0.3 s" in judgement.error
        assert len(server.requests) == 2 and elapsed < 2.0  # two attempts of 0.3 s, not two of 3 s


def test_a_refused_key_or_model_stops_at_once() -> None:
    with StubChatServer(lambda body, seen: "Verdict: GOOD", api_key="right-key") as server:
        judge = judge_for(server)  # no api_key_env: a placeholder key, which this server refuses
        with pytest.raises(JudgeConfigurationError, match="HTTP 401.*api_key_env"):
            judge.judge_steps([item("<answer>5</answer>")])
        assert len(server.requests) == 1


def test_the_api_key_comes_from_the_named_variable_only(monkeypatch) -> None:
    monkeypatch.setenv("STUB_JUDGE_KEY", "sk-test-123")
    with StubChatServer(lambda body, seen: "Verdict: GOOD", api_key="sk-test-123") as server:
        judge = judge_for(server, api_key_env="STUB_JUDGE_KEY")
        assert judge.judge_steps([item("<answer>5</answer>")])[0].verdict == "GOOD"
        assert server.requests[0]["authorization"] == "Bearer sk-test-123"
    monkeypatch.delenv("STUB_JUDGE_KEY")
    with pytest.raises(ValueError, match="environment variable STUB_JUDGE_KEY is not set"):
        ServedJudge("http://127.0.0.1:9/v1", "m", api_key_env="STUB_JUDGE_KEY")
    with pytest.raises(ValueError, match="NAME of an environment variable") as error:
        ServedJudge("http://127.0.0.1:9/v1", "m", api_key_env="sk-live-abc.def")
    assert "sk-live" not in str(error.value)  # a key put where its variable's name belongs is never echoed


def test_concurrency_is_bounded() -> None:
    with StubChatServer(lambda body, seen: StubResponse(text="Verdict: GOOD", delay_s=0.2)) as server:
        judge = judge_for(server, concurrency=3)
        judgements = judge.judge_steps([item(f"<answer>{n}</answer>") for n in range(9)])
        assert [j.verdict for j in judgements] == ["GOOD"] * 9 and len(server.requests) == 9
        assert server.max_in_flight == 3


def test_a_judge_let_go_leaves_no_thread_behind() -> None:
    """Each judge's requests run on an event loop and a pool of threads of its own: both end with the judge (a run
    that builds judges again and again, such as the test suite, must not pile them up)."""
    def judge_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("served-judge")}

    before = judge_threads()
    with StubChatServer(lambda body, seen: "Verdict: GOOD") as server:
        judge = judge_for(server, concurrency=3)
        judge.judge_steps([item(f"<answer>{n}</answer>") for n in range(6)])
        its_own = judge_threads() - before
        assert len(its_own) >= 2  # the loop and its request threads
        del judge
        gc.collect()
        deadline = time.monotonic() + 5
        while any(t.is_alive() for t in its_own) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not [t.name for t in its_own if t.is_alive()]


def test_requests_per_minute_are_paced() -> None:
    with StubChatServer(lambda body, seen: "Verdict: GOOD") as server:
        judge = judge_for(server, concurrency=4, requests_per_minute=120)  # 2 a second, at most 2 at once
        started = time.monotonic()
        judge.judge_steps([item(f"<answer>{n}</answer>") for n in range(6)])
        assert time.monotonic() - started >= 1.8  # 2 at once, then 4 more at 0.5 s each
        assert judge.usage.as_dict()["wait_seconds"] >= 1.5


def test_rate_limiter_holds_requests_and_tokens_per_minute() -> None:
    async def times(limiter: RateLimiter, *steps) -> list[float]:
        loop, seen = asyncio.get_running_loop(), []
        for step in steps:
            await step(limiter)
            seen.append(loop.time())
        return seen

    acquire = lambda tokens=0: lambda limiter: limiter.acquire(tokens)  # noqa: E731
    # 60 a minute: one a second after the first
    assert run_on_virtual_clock(times(RateLimiter(requests_per_minute=60), *[acquire()] * 5))[-1] == pytest.approx(4.0)
    # 6000 tokens a minute (100 a second): 300 tokens, larger than the bucket, hold the next request until they are
    # paid; the server said 400 for an estimate of 100: the 300 more are owed too
    seen = run_on_virtual_clock(times(RateLimiter(tokens_per_minute=6000), acquire(300), acquire(100),
                                      lambda limiter: limiter.settle(estimated=100, actual=400), acquire(100)))
    assert seen[1] == pytest.approx(3.0) and seen[3] == pytest.approx(7.0)
    with pytest.raises(ValueError, match="positive number per minute"):
        RateLimiter(requests_per_minute=-1)


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    policy, rng = RetryPolicy(max_retries=5, backoff_s=1.0, max_backoff_s=8.0), random.Random(0)
    for retry, cap in enumerate([1, 2, 4, 8, 8]):
        delays = [policy.delay(retry, rng) for _ in range(200)]
        assert cap / 2 <= min(delays) and max(delays) <= cap and len(set(delays)) > 100
    assert policy.delay(0, rng, retry_after=5.0) == 5.0
    assert policy.delay(0, rng, retry_after=100.0) == 8.0  # capped


def test_group_mode_judges_all_actions_of_a_state_in_one_request() -> None:
    def respond(body, seen):
        assert "Step 3:" in body["messages"][-1]["content"]
        return "1 is fine, 2 is not, 3 unclear.\nStep 1: GOOD\nStep 2: BAD"

    with StubChatServer(respond) as server:
        judge = judge_for(server, group=True)
        items = [item(f"<answer>{n}</answer>", state=f"state {s}") for s in range(2) for n in range(3)]
        judgements = judge.judge_steps(items)
        assert len(server.requests) == 2  # one per state
        assert [j.verdict for j in judgements] == ["GOOD", "BAD", FAILED] * 2
        assert "no verdict for step 3" in judgements[2].error
        assert judge.prompt_version != judge_for(server).prompt_version  # group verdicts are cached apart


def test_the_served_grader_says_yes_or_no_and_fails_without_a_verdict() -> None:
    def respond(body, seen):
        prediction = body["messages"][-1]["content"].rpartition("Predicted answer: ")[2]
        return {"$10.00": "Same number.\nVerdict: YES", "11": "Verdict: NO"}.get(prediction, "hmm")

    with StubChatServer(respond) as server:
        grader = ServedGrader(server.base_url, "stub-model", **FAST)
        assert grader.judge_id == "served_grader:stub-model" and grader.prompt_version.startswith("grader-math-v1#")
        scores = grader.score_batch(["$10.00", "11", None, "ten-ish"], ["10"] * 4, ["q"] * 4)
        assert scores == [1.0, 0.0, 0.0, None]  # no prediction: wrong without asking; no verdict: a failure
        assert len(server.requests) == 3
        assert "Answer key: 10" in server.requests[0]["body"]["messages"][-1]["content"]


def test_shipped_prompts_load_and_say_what_the_paper_says() -> None:
    math, search = JudgePrompt.load("math", "process"), JudgePrompt.load("search", "process")
    assert (math.version, search.version) == ("process-math-v1", "process-search-v1")
    assert "not whether you believe it is true" in search.sections["system"]
    assert "Missing evidence means BAD" in search.sections["system"]
    assert "likely to help answer the question" in search.sections["system"]
    assert "10.00, $10" in JudgePrompt.load("math", "grader").sections["system"]
    assert JudgePrompt.load("qa", "grader").version == "grader-qa-v1"
    assert math.prompt_version(0.0, 256) != math.prompt_version(0.0, 128)  # settings are part of the version
    with pytest.raises(ValueError, match="expected one of math, search or a prompt file"):
        JudgePrompt.load("physics", "process")


def test_a_prompt_file_of_ones_own(tmp_path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("version: mine-v2\n# a comment\n=== system\nJudge {nothing}.\n=== user\n{{ transcript }} | {{ step }}\n")
    prompt = JudgePrompt.load(str(path), "process")
    messages = prompt.messages("user", transcript="T", step="S")
    assert prompt.version == "mine-v2" and messages[1]["content"] == "T | S"
    assert messages[0]["content"] == "Judge {nothing}."  # unknown braces are left alone
    path.write_text("=== system\nx\n=== user\ny\n")
    with pytest.raises(ValueError, match="no 'version: ...' line"):
        JudgePrompt.load(str(path), "process")
    path.write_text("version: v\n=== system\nx\n=== users\ny\n")
    with pytest.raises(ValueError, match=r"mine.txt:4: unknown section 'users'"):
        JudgePrompt.load(str(path), "process")


def test_an_old_single_brace_placeholder_or_a_misspelt_name_is_an_error_naming_it(tmp_path) -> None:
    path = tmp_path / "old.txt"
    path.write_text("version: old-v1\n=== system\nJudge.\n=== user\n{transcript} | {step}\n")
    with pytest.raises(ValueError, match=r"old.txt:5: write the placeholder \{transcript\} as \{\{ transcript \}\}"):
        JudgePrompt.load(str(path), "process")
    path.write_text("version: old-v1\n=== system\nJudge.\n=== user\n{{ transcript }} | {{ stepp }}\n")
    with pytest.raises(ValueError, match="'stepp' is undefined"):
        JudgePrompt.load(str(path), "process").messages("user", transcript="T", step="S")


def _single_brace_rendering(prompt: JudgePrompt, section: str, **values: object) -> list[dict[str, str]]:
    """How the prompt rendered before Jinja2: single-brace placeholders replaced one after another."""
    def old(text: str) -> str:
        text = re.sub(r"\{\{ (\w+) \}\}", r"{\1}", text)
        for key, value in values.items():
            text = text.replace("{" + key + "}", str(value))
        return text

    return [{"role": "system", "content": old(prompt.sections["system"])},
            {"role": "user", "content": old(prompt.sections[section])}]


@pytest.mark.parametrize("kind, name", [("process", "math"), ("process", "search"), ("grader", "math"),
                                        ("grader", "qa")])
def test_the_shipped_prompts_render_the_same_text_as_before_jinja2(kind, name) -> None:
    prompt = JudgePrompt.load(name, kind)
    if kind == "grader":
        cases = [("user", {"question": "What is 2+3?\nExplain.", "answer_key": "5", "prediction": "$5.00"})]
    else:
        context = "User: Question: what is 2+3? {braces} stay\n\nAssistant: <calc>2+3</calc>"
        cases = [("user", {"transcript": context, "step": "<answer>5</answer>"}),
                 ("user_group", {"transcript": context, "steps": "Step 1:\n<answer>5</answer>\n\nStep 2:\nno", "count": 2})]
    for section, values in cases:
        assert prompt.messages(section, **values) == _single_brace_rendering(prompt, section, **values)


@pytest.mark.parametrize("reply, verdict", [
    ("The step is good.\nVerdict: GOOD", "GOOD"),
    ("verdict - bad", "BAD"),
    ("**Verdict:** BAD", "BAD"),
    ("First I thought GOOD, but no.\nVerdict: BAD", "BAD"),
    ("Verdict: GOOD. Hmm, actually\nVerdict: BAD", "BAD"),
    ("So this is BAD", "BAD"),
    ("a good step", None),  # lower-case prose is no verdict
    ("GOODNESS", None),
])
def test_parse_verdict(reply, verdict) -> None:
    assert parse_verdict(reply, "GOOD", "BAD") == verdict


def test_parse_group_verdicts() -> None:
    reply = "Step 1: GOOD\nstep 2 - bad\nStep 2: GOOD\nStep 7: BAD"
    assert parse_group_verdicts(reply, 3, "GOOD", "BAD") == {1: "GOOD", 2: "GOOD"}


def test_a_failed_judgement_round_trips_and_old_records_still_read() -> None:
    failed = Judgement("served:m", FAILED, None, "process-math-v1#abc", error="timed out")
    assert from_dict(Judgement, to_dict(failed)) == failed and failed.failed
    old = from_dict(Judgement, {"judge": "reference", "verdict": "GOOD", "score": 1.0, "prompt_version": "v1"})
    assert old.error is None and not old.failed
    with pytest.raises(ValueError, match="null with FAILED"):
        Judgement("m", "BAD", None)
    with pytest.raises(ValueError, match="null with FAILED"):
        Judgement("m", FAILED, 0.0)


# ----------------------------------------------------------------------------------------------------
# A deadline for the whole request, and a cap on the reply's size

GOOD_BODY = json.dumps({"choices": [{"message": {"role": "assistant", "content": "It follows.\nVerdict: GOOD"}}]})
SLACK_S = 0.5  # thread start-up and a loaded machine: the deadline itself is exact


@contextlib.contextmanager
def dripping_headers(interval_s: float = 0.05):
    """A server on 127.0.0.1 that reads a request, then sends its status line and headers one byte at a time,
    forever (no socket time-out per read ever fires); yields its base_url."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:  # the listener closed
                return
            with connection:
                connection.recv(65536)
                head = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 10**6
                try:
                    for byte in head:
                        if stop.wait(interval_s):
                            return
                        connection.sendall(bytes([byte]))
                except OSError:  # the client gave up
                    continue

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        stop.set()
        listener.close()


@pytest.mark.parametrize("hostile", [
    StubResponse(raw_body=GOOD_BODY, drip_bytes=2, drip_s=0.1),
    StubResponse(raw_body=GOOD_BODY, body_delay_s=60),
    StubResponse(raw_body=GOOD_BODY, send_length=False, drip_bytes=1, drip_s=0.1),
], ids=["body-drips", "stalls-after-headers", "drips-without-length"])
def test_a_reply_that_drips_or_stalls_ends_at_the_deadline_as_a_failure(hostile) -> None:
    with StubChatServer(lambda body, seen: hostile) as server:
        judge = judge_for(server, timeout_s=1.0, max_retries=0)
        started = time.monotonic()
        (judgement,) = judge.judge_steps([item("<answer>5</answer>")])
        elapsed = time.monotonic() - started
    assert judgement.failed and judgement.score is None and "timed out after 1 s" in judgement.error
    assert 1.0 <= elapsed < 1.0 + SLACK_S  # the deadline bounds the request, not each read


def test_headers_that_drip_end_at_the_deadline_too() -> None:
    with dripping_headers() as base_url:
        judge = ServedJudge(base_url, "stub-model", **{**FAST, "timeout_s": 1.0, "max_retries": 1})
        started = time.monotonic()
        (judgement,) = judge.judge_steps([item("<answer>5</answer>")])
        elapsed = time.monotonic() - started
    assert judgement.failed and "timed out after 1 s (gave up after 2 attempts)" in judgement.error
    assert 2.0 <= elapsed < 2.0 + 0.05 + 2 * SLACK_S  # each attempt has its own deadline (and a backoff between)


@pytest.mark.parametrize("send_length", [True, False], ids=["length-announced", "no-length"])
def test_a_50_mb_reply_is_a_one_line_failure_without_the_memory(send_length) -> None:
    body = b'{"choices": [{"message": {"content": "Verdict: GOOD ' + b"x" * 50_000_000 + b'"}}]}'
    with StubChatServer(lambda request, seen: StubResponse(raw_body=body, send_length=send_length)) as server:
        judge = judge_for(server, timeout_s=5.0, max_retries=3)
        tracemalloc.start()
        try:
            started = time.monotonic()
            (judgement,) = judge.judge_steps([item("<answer>5</answer>")])
            elapsed = time.monotonic() - started
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert judgement.failed and judgement.score is None and "\n" not in judgement.error
    assert judgement.error.startswith(f"reply over max_reply_bytes ({8 * 2**20})")
    assert len(server.requests) == 1  # asking again would fetch as much again
    assert elapsed < 5.0 and peak < 12 * 2**20  # read up to the cap at most, never the 50 MB


def test_max_reply_bytes_is_an_option() -> None:
    with StubChatServer(lambda body, seen: "Verdict: GOOD " + "x" * 500) as server:
        assert judge_for(server).judge_steps([item("<answer>5</answer>")])[0].verdict == "GOOD"
        (judgement,) = judge_for(server, max_reply_bytes=400).judge_steps([item("<answer>5</answer>")])
        assert judgement.failed and "over max_reply_bytes (400)" in judgement.error


def test_deeply_nested_json_in_a_reply_is_an_unreadable_response_not_a_recursion_error() -> None:
    nested = '{"choices": [{"message": {"content": ' + "[" * 200_000 + "]" * 200_000 + "}}]}"
    with StubChatServer(lambda body, seen: StubResponse(raw_body=nested)) as server:
        (judgement,) = judge_for(server, max_retries=0).judge_steps([item("<answer>5</answer>")])
    assert judgement.failed and "unreadable response: nested deeper than" in judgement.error


def test_a_redirect_is_not_followed_and_stops_the_run() -> None:
    """Following it would send the API key to whatever host the redirect names."""
    elsewhere = StubResponse(status=307, headers={"Location": "http://attacker.invalid/v1/chat/completions"})
    with StubChatServer(lambda body, seen: elsewhere) as server:
        with pytest.raises(JudgeConfigurationError, match="HTTP 307: redirected to http://attacker.invalid"):
            judge_for(server).judge_steps([item("<answer>5</answer>")])
        assert len(server.requests) == 1


# ----------------------------------------------------------------------------------------------------
# The API key in no message


def test_redact_removes_the_key_authorization_values_and_bearer_tokens() -> None:
    key = "sk-live-0123456789abcdef"
    text = (f"Incorrect API key provided: Bearer {key}. You sent {key[:-1]}x and {key}; "
            '{"authorization": "Basic dXNlcjpwYXNz", "Proxy-Authorization": "Negotiate qwerty"}\n'
            "Authorization: Bearer other-token\nAuthorization header missing, bearer   tok.en")
    clean = redact(text, [key])
    assert key not in clean and "dXNlcjpwYXNz" not in clean and "qwerty" not in clean and "other-token" not in clean
    assert "tok.en" not in clean and "Authorization header missing" in clean and f"{key[:-1]}x" in clean
    assert redact(clean, [key]) == clean  # what is redacted stays as it is
    assert redact("no secrets here: a GOOD step", [""]) == "no secrets here: a GOOD step"


def test_a_server_that_echoes_the_key_never_gets_it_into_a_judgement_or_an_error(monkeypatch) -> None:
    key = "sk-echo-" + "5f3a" * 8
    monkeypatch.setenv("STUB_JUDGE_KEY", key)
    echoed = {"X-Echo": f"Bearer {key}"}
    faults = {
        "<answer>1</answer>": StubResponse(status=500, headers=echoed,
                                           raw_body=json.dumps({"error": {"message": f"overloaded; your key: {key}"}})),
        "<answer>2</answer>": StubResponse(status=400, raw_body=f"Authorization: Bearer {key} is not allowed here"),
        "<answer>3</answer>": f"Thinking about key {key} and Bearer {key}... no verdict",
        "<answer>4</answer>": StubResponse(raw_body=f"<html>{key}</html>", headers=echoed),
    }
    with StubChatServer(lambda body, seen: faults[step_of(body)]) as server:
        judge = judge_for(server, api_key_env="STUB_JUDGE_KEY", max_retries=1)
        judgements = judge.judge_steps([item(step) for step in faults])
        assert [j.verdict for j in judgements] == [FAILED] * 4
        assert all(key not in j.error and "[redacted]" in j.error for j in judgements), [j.error for j in judgements]
        refusing = StubResponse(status=401,
                                raw_body=json.dumps({"error": {"message": f"Incorrect API key provided: {key}"}}))
        server.respond = lambda body, seen: refusing
        with pytest.raises(JudgeConfigurationError) as error:
            judge.judge_steps([item("<answer>5</answer>")])
        assert key not in str(error.value) and "Incorrect API key provided: [redacted]" in str(error.value)
    assert {r["authorization"] for r in server.requests} == {f"Bearer {key}"}  # it was sent, and only there


# ----------------------------------------------------------------------------------------------------
# Options checked before the judge is built


@pytest.mark.parametrize("options, message", [
    ({"model": "m"}, "judge.options: judge 'served' needs base_url (a string), missing here"),
    ({}, "judge.options: judge 'served' needs base_url (a string) and model (a string), missing here"),
    ({"base_url": "http://127.0.0.1:9/v1", "model": "m", "timeout": 5}, "judge.options: judge 'served' has no option "
                                                                         "'timeout'; its options are base_url, model,"),
    ({"base_url": "http://127.0.0.1:9/v1", "model": "m", "timeout_s": "soon"},
     "judge.options.timeout_s: expected a number, got 'soon'"),
    ({"base_url": "http://127.0.0.1:9/v1", "model": "m", "group": "yes"},
     "judge.options.group: expected true or false, got 'yes'"),
    ({"base_url": "http://127.0.0.1:9/v1", "model": "m", "max_tokens": 1.5},
     "judge.options.max_tokens: expected an integer, got 1.5"),
    ({"base_url": "http://127.0.0.1:9/v1", "model": "m", "seed": "7"},
     "judge.options.seed: expected an integer or null"),
    ({"base_url": "127.0.0.1:8000", "model": "m"}, "base_url: expected http(s)://HOST[:PORT]/v1, got '127.0.0.1:8000'"),
    ({"base_url": "http://127.0.0.1:9/v1", "model": "m", "max_reply_bytes": 0}, "max_reply_bytes: expected a positive"),
])
def test_bad_served_options_are_value_errors_naming_the_option(options, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make_step_judge("served", options)


def test_the_outcome_judges_options_are_named_as_such() -> None:
    with pytest.raises(ValueError, match=re.escape("judge.outcome_options: judge 'served_grader' needs base_url")):
        make_outcome_judge("served_grader", options={"model": "m"})
