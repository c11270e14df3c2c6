"""Mutated server replies (hypothesis) fed to the served judge through a stub server on 127.0.0.1: JSON nested deep,
replies over the size cap, odd encodings and invalid UTF-8, values of the wrong type, wrong lengths, bodies that
drip or stall. Each ends as a verdict or a one-line judge failure within the deadline: never a hang, never an
exception out of the judge (a RecursionError included)."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swirl_lightning.core.trajectory import FAILED, State, Step, parse_action
from swirl_lightning.judging.served import ServedJudge
from swirl_lightning.testing import StubChatServer, StubResponse, json_paths

TIMEOUT_S = 0.5
SLACK_S = 1.0  # thread start-up and parsing a reply at the cap, on a loaded machine
MAX_REPLY_BYTES = 64 * 1024
# Values that break naive readers: wrong types, huge and non-finite numbers, empty containers.
HOSTILE = [None, True, -1, 10**40, 1e308, float("nan"), "", "x", [], {}, [[]], {"content": 1}, "Verdict: GOOD"]
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-32", "latin-1", "cp1252"]


def completion(content: object = "It follows.\nVerdict: GOOD") -> dict:
    return {"id": "x", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}


def replaced(value, path, new):
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


@st.composite
def reply_body(draw) -> tuple[bytes, str | None]:
    """A body, and the verdict it must give when it arrives whole and in time (``None``: any outcome is fine)."""
    kind = draw(st.sampled_from(["valid", "mutated", "nested", "huge", "encoded", "junk"]))
    if kind == "valid":
        verdict = draw(st.sampled_from(["GOOD", "BAD"]))
        return json.dumps(completion(f"Some reasoning.\nVerdict: {verdict}")).encode(), verdict
    if kind == "mutated":
        base = completion()
        path = draw(st.sampled_from([p for p, _ in json_paths(base)]))
        return json.dumps(replaced(base, path, draw(st.sampled_from(HOSTILE)))).encode(), None
    if kind == "nested":
        depth = draw(st.integers(1, 300_000))
        opening, closing = draw(st.sampled_from([("[", "]"), ('{"a": ', "}")]))
        inner = opening * depth + "1" + closing * depth
        where = draw(st.sampled_from(["top", "content", "choices", "usage"]))
        text = {"top": inner,
                "content": json.dumps(completion("§")).replace('"§"', inner),
                "choices": json.dumps(completion()).replace('"choices": [', f'"choices": [{inner}, ', 1),
                "usage": json.dumps(completion()).replace('"prompt_tokens": 10', f'"prompt_tokens": {inner}')}[where]
        return text.encode(), None
    if kind == "huge":
        size = draw(st.integers(MAX_REPLY_BYTES - 200, 4 * MAX_REPLY_BYTES))
        return json.dumps(completion("Verdict: GOOD " + "x" * size)).encode(), None
    if kind == "encoded":
        text = json.dumps(completion("Schön ☃ — Verdict: GOOD"), ensure_ascii=False)
        return text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace"), None
    return draw(st.binary(max_size=512)), None


@st.composite
def server_reply(draw) -> tuple[StubResponse, str | None]:
    """A reply: a body, perhaps cut short or with a byte changed, a status, a length header, and timing."""
    body, verdict = draw(reply_body())
    if body and draw(st.integers(0, 4)) == 0:
        cut = draw(st.integers(0, len(body) - 1))
        body, verdict = (body[:cut], None) if draw(st.booleans()) else (
            body[:cut] + bytes([draw(st.integers(0, 255))]) + body[cut + 1:], None)
    status = draw(st.sampled_from([200] * 8 + [400, 422, 429, 500, 503, 599]))
    headers, send_length = {}, draw(st.booleans())
    if draw(st.integers(0, 5)) == 0:  # a length that lies
        send_length = False
        headers["Content-Length"] = draw(st.sampled_from(["-1", "abc", "²", "9" * 30, "0", str(len(body) + 7)]))
    if status == 429:
        headers["Retry-After"] = draw(st.sampled_from(["1", "nan", "inf", "-5", "soon"]))
    timing = draw(st.sampled_from(["at once"] * 5 + ["drip", "stall"]))
    reply = StubResponse(raw_body=body, status=status, headers=headers, send_length=send_length)
    if timing == "drip":
        reply.drip_bytes, reply.drip_s = draw(st.integers(1, 256)), draw(st.floats(0.01, 0.1))
    elif timing == "stall":
        reply.body_delay_s = draw(st.sampled_from([0.1, 60.0]))
    whole_in_time = status == 200 and send_length and not headers and timing == "at once"
    return reply, verdict if whole_in_time else None


@pytest.fixture(scope="module")
def stub():
    """One stub server for every example; ``stub.next`` is what it answers next."""
    with StubChatServer(lambda body, seen: stub_server.next) as stub_server:
        stub_server.next = "Verdict: GOOD"
        yield stub_server


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=server_reply())
def test_the_served_judge_gives_a_verdict_or_a_failure_in_time_on_any_reply(stub, case) -> None:
    reply, verdict = case
    stub.next = reply
    judge = ServedJudge(stub.base_url, "stub-model", timeout_s=TIMEOUT_S, max_retries=0,
                        max_reply_bytes=MAX_REPLY_BYTES)
    text = "<answer>5</answer>"
    started = time.monotonic()
    (judgement,) = judge.judge_steps([(State("q", 0, [{"role": "user", "content": "q"}]),
                                       Step(text, parse_action(text, {})))])
    elapsed = time.monotonic() - started
    assert elapsed < TIMEOUT_S + SLACK_S, f"{elapsed:.2f} s"
    if judgement.verdict == FAILED:
        assert judgement.score is None and judgement.error and "\n" not in judgement.error
        assert "Traceback" not in judgement.error
    else:
        assert (judgement.verdict, judgement.score) in (("GOOD", 1.0), ("BAD", 0.0))
    if verdict is not None:  # a whole chat completion, in time: its verdict
        assert judgement.verdict == verdict, judgement.error
