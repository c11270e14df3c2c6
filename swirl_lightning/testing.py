"""Fakes for tests, here and in plugin authors' own suites: a scripted policy, tools, a task, a judge, a tiny model,
a stub OpenAI-compatible server for served judges, an event loop on a virtual clock (:func:`run_on_virtual_clock`, for
rate limits and backoffs), and :func:`registered` to plug them in for one ``with`` block.

Example: run a tool through a full rollout without any model::

    from swirl_lightning.testing import ScriptedPolicy, rollout_once, make_tool
    tools = {"calculator": make_tool(lambda q: str(eval(q)), name="calculator", tag="math_exp")}
    trajectory = rollout_once("What is 2+3?", ["<math_exp>2+3</math_exp>", "<answer>5</answer>"], tools)
    assert trajectory.steps[0].observation == "2+3 -> 5"

A tool that takes its episode (``register(fn, takes_episode=True)``) can be called directly with
:func:`episode`, or through a rollout whose example carries ``metadata``::

    lookup = make_tool(lambda q, e: e.metadata["facts"][q], name="lookup", takes_episode=True)
    assert lookup.fn("sky", episode({"facts": {"sky": "blue"}})) == "blue"
    rollout_once("Sky?", ["<lookup>sky</lookup>", "<answer>blue</answer>"], {"lookup": lookup},
                 metadata={"facts": {"sky": "blue"}})
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from swirl_lightning.core.config import ToolsConfig
from swirl_lightning.core.tasks import Task
from swirl_lightning.core.tool_executor import ToolExecutor
from swirl_lightning.core.tools import Episode, Tool, describe
from swirl_lightning.core.trajectory import Example, Judgement, State, Step, Trajectory
from swirl_lightning.core.transport import free_port  # noqa: F401 - a port for a test's server, here with the fakes
from swirl_lightning.judging.base import StepJudgeBase

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

Script = Callable[[list[dict[str, str]]], str] | Sequence[str]
T = TypeVar("T")


class ScriptedPolicy:
    """An engine whose turns come from a script instead of a model.

    ``script`` is either a list of turn texts (the same for every conversation; turns past its end
    repeat the last one) or a function from the conversation's chat messages so far to the next turn.
    It drives conversations one at a time with the same calls a real engine makes, text only.
    """

    def __init__(self, script: Script):
        from swirl_lightning.rollout.engine import GenerationStats

        self.script = script
        self.turns_played = 0
        self.stats = GenerationStats()  # stays at zero: no model, no tokens (what `swirl generate` reports)
        self.policy_version = 0

    def next_turn(self, messages: list[dict[str, str]], turn: int) -> str:
        self.turns_played += 1
        if callable(self.script):
            return self.script(messages)
        return self.script[min(turn, len(self.script) - 1)]

    def run(self, conversations: Iterable, on_finished: Callable) -> None:
        """Play each conversation to its end, calling ``on_finished`` after each."""
        for conversation in conversations:
            conversation.prompt_ids()
            turn = 0
            while True:
                text = self.next_turn(conversation.messages(), turn)
                turn += 1
                if conversation.on_turn_end([], text, "stop") is None:
                    break
            on_finished(conversation)


def make_tool(fn: Callable[..., str], name: str | None = None, tag: str | None = None,
              warm_up: Callable[[], object] | None = None, takes_episode: bool = False) -> Tool:
    """A :class:`Tool` from a function, as if a plugin had registered it (distribution ``None``)."""
    name = name or fn.__name__
    return Tool(name=name, tag=tag or name, description=describe(fn), fn=fn, distribution=None, version="",
                warm_up=warm_up, takes_episode=takes_episode)


def episode(metadata: Mapping[str, object] | None = None, example_id: str = "test-0", source: str = "test") -> Episode:
    """An :class:`~swirl_lightning.core.tools.Episode` to call a tool that takes its episode with, outside a
    rollout (``tool.fn(query, episode(...))`` or ``ToolExecutor.run(name, query, episode(...))``)."""
    return Episode(example_id=example_id, source=source, metadata=dict(metadata or {}))


def rollout_once(
    question: str,
    script: Script,
    tools: Mapping[str, Tool],
    *,
    max_actions: int = 5,
    gold: str = "",
    timeout_s: float = 5.0,
    metadata: Mapping[str, object] | None = None,
) -> Trajectory:
    """Roll out one scripted conversation and return its trajectory; ``metadata`` is the example's (what a tool
    that takes its episode sees in ``episode.metadata``)."""
    from swirl_lightning.rollout.conversation import RolloutConversation, RolloutSettings

    settings = RolloutSettings(tools=tools, executor=ToolExecutor(tools, ToolsConfig(timeout_s=timeout_s)),
                               max_actions=max_actions, policy_name="scripted")
    conversation = RolloutConversation(Example("q0", question, gold, "test", dict(metadata or {})), 0, settings,
                                       seed=0)
    ScriptedPolicy(script).run([conversation], lambda c: None)
    return conversation.trajectory


def tiny_model_and_tokenizer(seed: int = 0, **config_overrides):
    """A randomly initialised 2-layer Llama with the SmolLM2 tokenizer and chat template (fp32, eval)."""
    import torch
    from transformers import LlamaForCausalLM

    from swirl_lightning.core.models import SMOLLM2_ALIAS, load_tokenizer, tiny_llama_config

    tokenizer = load_tokenizer(SMOLLM2_ALIAS)
    torch.manual_seed(seed)
    config = tiny_llama_config(len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                               **config_overrides)
    return LlamaForCausalLM(config).eval(), tokenizer


class ListTask(Task):
    """A task whose questions are given as a list: a throwaway task for tests (register it with
    :func:`registered`)."""

    def __init__(self, name: str, examples: Sequence[Example], tools: tuple[str, ...] = (), outcome_judge: str = "qa_em",
                 max_actions: int = 3) -> None:
        # Task's class settings (ClassVars), set per instance for a throwaway task: hence the ignore
        self.name, self.examples, self.tools, self.outcome_judge, self.max_actions = (  # type: ignore[misc]
            name, list(examples), tools, outcome_judge, max_actions)

    def load(self, split: str, limit: int | None = None, path=None) -> list[Example]:
        return self.examples[:limit]


class ConstantJudge(StepJudgeBase):
    """A step judge that gives every valid step the same score (invalid ones 0): a throwaway judge for tests."""

    def __init__(self, score: float = 1.0) -> None:
        self.score, self.judge_id = score, f"constant:{score:g}"

    def judge_steps(self, items: Sequence[tuple[State, Step]]) -> list[Judgement]:
        return [self.judgement(0.0 if step.action.kind == "invalid" else self.score) for _, step in items]


@contextlib.contextmanager
def registered(*, tasks: Sequence[Task] = (), judges: Mapping[str, Callable] = {}, tools: Sequence[Tool] = (),
               objectives: Sequence[type] = ()):
    """Register throwaway tasks, judges (name -> factory), tools and objectives (``Objective`` subclasses) as a plugin
    for the duration of a ``with`` block, in this process, then unregister them."""
    import swirl_lightning
    from swirl_lightning.core.plugins import get_plugin_manager

    class Plugin:
        @swirl_lightning.hookimpl
        def register_tasks(self, register):
            for task in tasks:
                register(task)

        @swirl_lightning.hookimpl
        def register_judges(self, register):
            for name, factory in judges.items():
                register(factory, name=name)

        @swirl_lightning.hookimpl
        def register_objectives(self, register):
            for objective in objectives:
                register(objective)

        @swirl_lightning.hookimpl
        def register_tools(self, register):
            for tool in tools:
                register(tool.fn, name=tool.name, tag=tool.tag, warm_up=tool.warm_up,
                         takes_episode=tool.takes_episode)

    manager, plugin = get_plugin_manager(), Plugin()
    manager.register(plugin, name=f"swirl-testing-{id(plugin)}")
    try:
        yield plugin
    finally:
        manager.unregister(plugin)


@contextlib.contextmanager
def plugged_in_alone(plugin: object, name: str = "plugin-under-test"):
    """For a ``with`` block, ``plugin`` (an object or module with ``@hookimpl`` functions) is the only plugin loaded,
    besides the built-in tasks and judges: no installed distribution's plugin loads (``SWIRL_LOAD_PLUGINS`` is
    empty), as a plugin author tests one plugin whatever else is installed. The process-wide manager is rebuilt on
    the way in and out."""
    import os

    from swirl_lightning.core.plugins import get_plugin_manager, reset_plugin_manager

    saved = os.environ.get("SWIRL_LOAD_PLUGINS")
    os.environ["SWIRL_LOAD_PLUGINS"] = ""
    reset_plugin_manager()
    get_plugin_manager().register(plugin, name=name)
    try:
        yield plugin
    finally:
        get_plugin_manager().unregister(plugin)
        if saved is None:
            os.environ.pop("SWIRL_LOAD_PLUGINS", None)
        else:
            os.environ["SWIRL_LOAD_PLUGINS"] = saved
        reset_plugin_manager()


def json_paths(value: object, prefix: tuple = ()) -> Iterator[tuple[tuple, object]]:
    """Every (path, value) inside a JSON value, the value itself first (path ``()``): where a fuzz test mutates it."""
    yield prefix, value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from json_paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from json_paths(child, prefix + (index,))


# ----------------------------------------------------------------------------------------------------
# An event loop on a virtual clock, for what waits (rate limits, backoffs)


def run_on_virtual_clock(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on an event loop whose clock starts at 0 and jumps ahead whenever the loop would wait for a
    timer (no I/O is ready), so that waits take no real time and ``asyncio.get_running_loop().time()`` reads exact
    seconds: a limiter's pacing can be asserted to the second without sleeping."""
    loop = asyncio.SelectorEventLoop()
    now = [0.0]
    select = loop._selector.select  # type: ignore[attr-defined]  # the loop waits for its next timer here

    def select_or_jump(timeout: float | None = None) -> list:
        ready = select(0)
        if not ready and timeout:
            now[0] += timeout
        return ready

    loop._selector.select = select_or_jump  # type: ignore[attr-defined]
    loop.time = lambda: now[0]  # type: ignore[method-assign]
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


# ----------------------------------------------------------------------------------------------------
# A stub OpenAI-compatible server, for served judges


@dataclasses.dataclass
class StubResponse:
    """What :class:`StubChatServer` answers one request with: a reply text (status 200), another status, a delay,
    a body that is not JSON (text or raw bytes), or a dropped connection (no answer at all). A hostile server: a
    stall between the headers and the body (``body_delay_s``), a body sent ``drip_bytes`` at a time every
    ``drip_s`` seconds, a body without ``Content-Length`` (``send_length=False``: it ends when the connection
    closes)."""

    text: str = ""
    status: int = 200
    delay_s: float = 0.0
    drop: bool = False
    raw_body: str | bytes | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body_delay_s: float = 0.0
    drip_bytes: int | None = None
    drip_s: float = 0.0
    send_length: bool = True


class StubChatServer:
    """A chat-completions server on 127.0.0.1 (standard library only) whose answers come from ``respond``:
    ``respond(request, seen)`` gets the request's JSON body and how many requests with the same messages came
    before, and returns a reply text or a :class:`StubResponse`. It records every request (``requests``: the body
    and the ``Authorization`` header), the most requests in flight at once, and with ``api_key`` answers 401 to
    any other key. Use it as a context manager; ``base_url`` is what a served judge takes.
    """

    def __init__(self, respond: Callable[[dict, int], str | StubResponse], api_key: str | None = None) -> None:
        import threading

        self.respond, self.api_key = respond, api_key
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()  # ends every wait of a handler when the server stops
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the stub server serves inside its with block"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def count(self, predicate: Callable[[dict], bool] = lambda request: True) -> int:
        """How many recorded requests match ``predicate`` (which gets the request body)."""
        with self._lock:
            return sum(predicate(r["body"]) for r in self.requests)

    def _handle(self, handler) -> None:  # noqa: ANN001 - a BaseHTTPRequestHandler
        import json

        body = json.loads(handler.rfile.read(int(handler.headers.get("Content-Length", 0))) or b"{}")
        key = json.dumps(body.get("messages"), sort_keys=True)
        with self._lock:
            seen = sum(json.dumps(r["body"].get("messages"), sort_keys=True) == key for r in self.requests)
            self.requests.append({"body": body, "authorization": handler.headers.get("Authorization")})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.api_key is not None and handler.headers.get("Authorization") != f"Bearer {self.api_key}":
                answer = StubResponse(status=401, raw_body='{"error": {"message": "bad key"}}')
            else:
                reply = self.respond(body, seen)
                answer = reply if isinstance(reply, StubResponse) else StubResponse(text=reply)
            self._closing.wait(answer.delay_s)
            if answer.drop:
                handler.close_connection = True
                return
            words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
            payload = answer.raw_body if answer.raw_body is not None else json.dumps({
                "id": "stub", "object": "chat.completion", "created": 0, "model": body.get("model", ""),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": answer.text}}],
                "usage": {"prompt_tokens": words, "completion_tokens": len(answer.text.split()),
                          "total_tokens": words + len(answer.text.split())}})
            data = payload if isinstance(payload, bytes) else payload.encode("utf-8")
            handler.send_response(answer.status)
            handler.send_header("Content-Type", "application/json")
            if answer.send_length:
                handler.send_header("Content-Length", str(len(data)))
            else:
                handler.send_header("Connection", "close")
                handler.close_connection = True
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            self._closing.wait(answer.body_delay_s)
            step = answer.drip_bytes or max(len(data), 1)
            for start in range(0, len(data), step):
                if start and answer.drip_s and self._closing.wait(answer.drip_s):
                    handler.close_connection = True
                    return
                handler.wfile.write(data[start : start + step])
        except (BrokenPipeError, ConnectionResetError):  # the client gave up first (its time-out)
            handler.close_connection = True
        finally:
            with self._lock:
                self.in_flight -= 1

    def __enter__(self) -> StubChatServer:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the standard library's name
                stub._handle(self)

            def log_message(self, *args) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        assert self._server is not None  # set by __enter__
        self._server.shutdown()
        self._server.server_close()


def stop_process(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """Terminate a server a test started, and kill it if it has not left after ``grace_s`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def transformers_serve(model: str, *, startup_timeout_s: float = 180.0, log_path: str | None = None,
                       extra_args: Sequence[str] = ()):
    """``transformers serve`` (transformers' own OpenAI-compatible server, the ``transformers[serving]`` extra) on
    127.0.0.1 and a free port, serving ``model`` (a local folder) on the CPU, for the ``with`` block; yields its
    ``base_url``. The server process is stopped at the end (terminated, then killed if it lingers)."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    command = [sys.executable, "-c", "from transformers.cli.transformers import main; main()", "serve", model,
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", *extra_args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"transformers serve exited with code {process.returncode} before answering"
                                   + (f"; see {log_path}" if log_path else ""))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"transformers serve did not answer on port {port} within {startup_timeout_s:g} s")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_process(process)
        if not isinstance(log, int):  # our log file (not DEVNULL)
            log.close()


def fake_vllm_python(folder: str | os.PathLike) -> str:
    """An executable standing in for the vLLM virtualenv's Python (``engine.python``): started as a managed server, it
    runs :func:`fake_vllm_server` with this Python. Its path, for ``--engine.python``."""
    import stat
    import sys
    from pathlib import Path

    path = Path(folder) / "python"
    path.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'from swirl_lightning.testing import fake_vllm_server; "
                    "fake_vllm_server()' \"$@\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def fake_vllm_server() -> None:
    """What :func:`fake_vllm_python` runs: a server on ``--port`` that answers ``/health`` and ``/v1/models``, never
    answers a model turn (a run stays in flight), and starts a child process, as vLLM starts its engine core. It
    writes its pid and the child's, one per line, to the file ``$SWIRL_FAKE_VLLM_PIDS`` once it listens."""
    import http.server
    import json
    import sys
    import time

    port = int(sys.argv[sys.argv.index("--port") + 1])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server spelling
            body = json.dumps({"data": [{"id": "base", "parent": None}]}).encode() if self.path == "/v1/models" else b""
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            if self.path == "/v1/completions":
                time.sleep(3600)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    with open(os.environ["SWIRL_FAKE_VLLM_PIDS"], "w") as pids:
        pids.write(f"{os.getpid()}\n{child.pid}\n")
    server.serve_forever()
