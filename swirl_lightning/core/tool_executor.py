"""Running tool calls where they can be stopped: the wrapper every rollout calls tools through.

Each :class:`ToolExecutor` keeps one worker process, forked from the caller the first time a tool is called (so it
holds the very tool objects the caller registered, and the calculator stays fast: a call is one round trip through a
pipe). A tool's ``warm_up`` runs there once, before its first call, under its own (long) timeout. A call's
:class:`~swirl_lightning.core.tools.Episode` travels with it (pickled) to a tool that takes its episode. Whatever a tool
does happens in that process: an exception, ``sys.exit``, ``os._exit`` or a crash, a hang or a busy loop (the worker
is killed at the timeout), a change of the working folder, text that cannot be encoded, or a 10 MB answer (cut at
``max_output_chars``) all come back as an error observation the model sees, and the next call gets a fresh worker
when the old one is gone. Error messages never carry this machine's absolute paths (they go into training data).
The worker runs apart from its caller, in a session of its own (and a PID namespace of its own where the OS allows),
so a tool that signals its parent or its process group does not reach the caller; it dies, with every process its
tools started, at a timeout, with :meth:`ToolExecutor.close` and with its caller
(:mod:`swirl_lightning.core.tool_process`).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, cast

from swirl_lightning.core.config import ToolsConfig
from swirl_lightning.core.tool_process import ToolProcess, die_with_parent  # noqa: F401 - die_with_parent: re-exported

if TYPE_CHECKING:
    from swirl_lightning.core.tools import Episode, Tool


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one tool call."""

    output: str
    """What the model sees: the tool's output, or ``Error: <message>``; capped, with a visible marker."""
    error: str | None
    """The error (exception, exit, timeout, non-``str`` or unencodable output), or ``None`` when the call succeeded."""
    elapsed_s: float
    """Wall-clock seconds until the result or the timeout."""
    truncated: bool
    """Whether ``output`` was cut to the executor's ``max_output_chars``."""


def truncation_marker(total_chars: int, shown_chars: int) -> str:
    """The visible note appended to a capped output."""
    return f"\n… [output truncated: {total_chars} chars, showing {shown_chars}]"


_ABSOLUTE_PATH_RE = re.compile(r"(?<![\w.~:/])/(?:[^\s'\"`:,;()\[\]{}<>/]+/)+([^\s'\"`:,;()\[\]{}<>/]+)")


def without_host_paths(text: str) -> str:
    """``text`` with every absolute path reduced to its last part (``/home/me/data/corpus.jsonl`` -> ``corpus.jsonl``)."""
    return _ABSOLUTE_PATH_RE.sub(r"\1", text)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _serve(connection: Connection, tools: Mapping[str, Tool], max_output_chars: int) -> None:
    """The worker's loop: ``(kind, name, query, episode)`` requests in, ``(error, output, total_chars)`` replies
    out."""
    home = os.getcwd()
    warm: set[str] = set()
    while True:
        try:
            kind, name, query, episode = connection.recv()
        except (EOFError, OSError):
            return
        reply: tuple[str | None, str, int]
        try:
            tool = tools[name]
            if kind == "warm":
                if name not in warm and tool.warm_up is not None:
                    tool.warm_up(episode) if tool.takes_episode else tool.warm_up()
                warm.add(name)
                reply = (None, "", 0)
            else:
                value = tool.fn(query, episode) if tool.takes_episode else tool.fn(query)
                if not isinstance(value, str):
                    reply = (f"tool {name!r} returned {type(value).__name__}, expected str", "", 0)
                else:
                    value.encode("utf-8")  # a lone surrogate would break the tokenizer later
                    reply = (None, value[:max_output_chars], len(value))
        except UnicodeEncodeError as error:
            reply = (f"tool {name!r} returned text that is not valid Unicode ({error.reason} at position "
                     f"{error.start})", "", 0)
        except BaseException as error:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too: the caller decides
            reply = (_describe(error), "", 0)
        finally:
            if os.getcwd() != home:
                os.chdir(home)  # a tool that moved does not move the next call
        try:
            connection.send(reply)
        except (OSError, ValueError):
            return


class _Worker:
    """One worker process (see :mod:`swirl_lightning.core.tool_process`) and the caller's end of its pipe."""

    def __init__(self, tools: Mapping[str, Tool], max_output_chars: int, pid_namespace: bool):
        self.connection, child = multiprocessing.Pipe()
        self.process = ToolProcess(_serve, (child, tools, max_output_chars), pid_namespace=pid_namespace)
        child.close()
        self.warm: set[str] = set()

    def ask(self, kind: str, name: str, query: str, timeout_s: float | None,
            episode: Episode | None = None) -> tuple[str | None, str, int] | str:
        """The worker's reply, or a string saying why there is none (``timeout`` or ``exited``)."""
        try:
            self.connection.send((kind, name, query, episode))
            if not self.connection.poll(timeout_s):
                return "timeout"
            return self.connection.recv()
        except (EOFError, OSError, BrokenPipeError):
            return "exited"

    def exit_code(self) -> int | None:
        return self.process.exit_code()

    def stop(self) -> None:
        self.process.stop()
        self.connection.close()


class ToolExecutor:
    """Runs tool calls for a rollout in a worker process: a timeout per call, errors as observations, capped output.

    Its limits are those of ``config``, the run's :class:`~swirl_lightning.core.config.ToolsConfig` (its defaults when
    ``None``): ``timeout_s`` per call, ``max_output_chars``, ``warm_up_timeout_s`` for each tool's ``warm_up`` (an index
    build may take minutes) and ``pid_namespace``. A failed or timed-out warm-up is that call's error and is retried on
    the next call. Use it as a context manager, or call :meth:`close`, to stop the worker (it also stops when the
    caller exits).
    """

    def __init__(self, tools: Mapping[str, Tool], config: ToolsConfig | None = None) -> None:
        # The limits are the run's tools group (checked there): one place holds them and their defaults.
        config = ToolsConfig() if config is None else config
        self.tools = dict(tools)
        self.timeout_s, self.max_output_chars = config.timeout_s, config.max_output_chars
        self.warm_up_timeout_s, self.pid_namespace = config.warm_up_timeout_s, config.pid_namespace
        self._worker: _Worker | None = None

    def run(self, name: str, query: str, episode: Episode | None = None) -> ToolResult:
        """Call tool ``name`` on ``query``; raises :class:`~swirl_lightning.core.tools.UnknownToolError` for an
        unregistered name. A tool registered with ``takes_episode=True`` gets ``episode`` as its second argument
        (``None`` when none is given); any other tool ignores it. Every failure of the tool itself comes back as a
        :class:`ToolResult` with ``error`` set and ``output`` ``Error: <message>``, so the rollout can show it to the
        model and go on."""
        from swirl_lightning.core.tools import UnknownToolError

        if name not in self.tools:
            raise UnknownToolError([name], self.tools)
        if self._worker is None:
            self._worker = _Worker(self.tools, self.max_output_chars, self.pid_namespace)
        worker = self._worker
        # Only a tool that reads its episode pays for pickling it (a task's metadata may be large).
        sent = episode if self.tools[name].takes_episode else None
        if name not in worker.warm:  # a tool that takes its episode warms up for the first call's episode
            reply = worker.ask("warm", name, "", self.warm_up_timeout_s, sent)
            problem = self._problem(reply, name, self.warm_up_timeout_s, "its warm-up")
            if problem is not None:
                return self._error(f"tool {name!r} failed to start: {problem}", 0.0)
            worker.warm.add(name)
        started = time.perf_counter()
        reply = worker.ask("call", name, query, self.timeout_s, sent)
        elapsed = time.perf_counter() - started
        problem = self._problem(reply, name, self.timeout_s, "the call")
        if problem is not None:
            return self._error(problem, elapsed)
        _, output, total = cast("tuple[str | None, str, int]", reply)  # no problem: the worker's answer
        if total > len(output):
            return ToolResult(output + truncation_marker(total, len(output)), None, elapsed, truncated=True)
        return ToolResult(output, None, elapsed, truncated=False)

    def _problem(self, reply: Any, name: str, timeout_s: float | None, what: str) -> str | None:
        """Why a reply is not a success (and the worker replaced when it is gone); ``None`` for a success."""
        if reply == "timeout":
            self._replace()
            return f"tool {name!r} timed out after {timeout_s:g} s ({what} was stopped)"
        if reply == "exited":
            code = self._worker.exit_code() if self._worker is not None else None
            self._replace()
            return f"tool {name!r} exited during {what}" + (f" (exit code {code})" if code is not None else "")
        return reply[0]

    def _replace(self) -> None:
        if self._worker is not None:
            self._worker.stop()
        self._worker = None  # the next call forks a fresh worker

    def _error(self, message: str, elapsed: float) -> ToolResult:
        message = without_host_paths(message)
        text = f"Error: {message}"
        if len(text) <= self.max_output_chars:
            return ToolResult(text, message, elapsed, truncated=False)
        capped = text[: self.max_output_chars] + truncation_marker(len(text), self.max_output_chars)
        return ToolResult(capped, message, elapsed, truncated=True)

    def close(self) -> None:
        """Stop the worker process (a later call starts a new one)."""
        self._replace()

    def __enter__(self) -> ToolExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit the modules it needs may be gone
            pass
