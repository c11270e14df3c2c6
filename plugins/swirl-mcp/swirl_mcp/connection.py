"""A blocking face on the asynchronous MCP client: one event-loop thread per process, one session per server.

SWiRL tools are plain functions called in the tool worker process; the ``mcp`` SDK is ``async``. Each process gets one
daemon thread running an event loop (created on first use and again after a fork, since a forked child has no copy of
the thread). A :class:`Connection` holds one server's session open in a task of that loop (anyio requires a session
to be left by the task that entered it), and its calls are submitted to the loop with a timeout.

A stdio server is started through a small guard that asks Linux to kill it when the thread that started it dies
(``PR_SET_PDEATHSIG``): the loop thread lives as long as its process, so the server dies with the tool worker, even
when the worker is killed at a timeout; it also ends on its own when its stdin closes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Coroutine
from typing import Any

from swirl_mcp.config import ServerConfig

# Runs before the server's own command: die with the parent thread (checked once more, in case it is already gone).
_GUARD = ("import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGKILL); "
          "int(sys.argv[1]) == os.getppid() or os._exit(1); os.execvp(sys.argv[2], sys.argv[2:])")


class McpUnavailable(Exception):
    """The server could not be reached: start-up failed, it crashed, or it did not answer in time."""


_loop_lock = threading.Lock()
_loop: tuple[int, asyncio.AbstractEventLoop] | None = None


def event_loop() -> asyncio.AbstractEventLoop:
    """This process's MCP event loop, running in a daemon thread (a new one after a fork)."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop[0] != os.getpid():
            sdk_log = logging.getLogger("mcp")
            if sdk_log.level == logging.NOTSET:
                # The SDK logs a traceback for each line a server prints that is not JSON-RPC (a stray print), and
                # each failure that the model already sees as an observation: noise in a run's output. A caller that
                # set the "mcp" logger's level keeps its choice.
                sdk_log.setLevel(logging.CRITICAL)
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="swirl-mcp-loop", daemon=True).start()
            _loop = (os.getpid(), loop)
        return _loop[1]


def run(coroutine: Coroutine[Any, Any, Any], timeout_s: float) -> Any:
    """Run ``coroutine`` on the MCP loop and wait at most ``timeout_s``; :class:`TimeoutError` after that (the
    coroutine is cancelled)."""
    future = asyncio.run_coroutine_threadsafe(coroutine, event_loop())
    try:
        return future.result(timeout_s)
    except TimeoutError:
        future.cancel()
        raise


def _transport(server: ServerConfig) -> Any:
    if server.url is not None:
        from mcp.client.streamable_http import streamable_http_client

        return streamable_http_client(server.url)
    from mcp import StdioServerParameters
    from mcp.client.stdio import get_default_environment, stdio_client

    # The server's stderr is its log, not the run's: it would interleave with progress lines. The SDK passes errlog on
    # to the process as its stderr, so subprocess.DEVNULL (no file to keep open) does.
    errlog = subprocess.DEVNULL
    command = list(server.command)
    if command[0] == "python":  # the run's own interpreter, whatever `python` is on the PATH
        command[0] = sys.executable
    parameters = StdioServerParameters(command=sys.executable, args=["-c", _GUARD, str(os.getpid()), *command],
                                       env={**get_default_environment(), **dict(server.env)})
    return stdio_client(parameters, errlog=errlog)


class Connection:
    """One open session with one server; :meth:`close` ends it (and a stdio server with it)."""

    def __init__(self, server: ServerConfig) -> None:
        self.server = server
        self.client: Any = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Future | None = None
        self._error: BaseException | None = None

    def open(self) -> Connection:
        """Start (or reach) the server and finish the handshake, within ``startup_timeout_s``; raises
        :class:`McpUnavailable` with the reason."""
        ready = threading.Event()

        async def hold() -> None:
            from mcp import Client

            self._stop = asyncio.Event()
            try:
                async with Client(_transport(self.server), mode=self.server.mode) as client:
                    self.client = client
                    ready.set()
                    await self._stop.wait()
            except BaseException as error:  # noqa: BLE001 - reported to open() or to the next call
                self._error = error
                raise
            finally:
                self.client = None
                ready.set()

        self._task = asyncio.run_coroutine_threadsafe(hold(), event_loop())
        if not ready.wait(self.server.startup_timeout_s):
            self._task.cancel()  # still in the handshake: cancelling it stops a stdio server too
            self.client, self._task = None, None
            raise McpUnavailable(f"MCP server {self.server.name!r} did not start within "
                                 f"{self.server.startup_timeout_s:g} s")
        if self.client is None:
            raise McpUnavailable(f"MCP server {self.server.name!r} failed to start: {describe(self._error)}")
        return self

    @property
    def alive(self) -> bool:
        """Whether the session is still open (a crashed server closes it)."""
        return self.client is not None and self._task is not None and not self._task.done()

    def call(self, coroutine_of: Any, timeout_s: float) -> Any:
        """``coroutine_of(client)`` on the loop, within ``timeout_s``; :class:`McpUnavailable` when the server is
        gone or silent (the connection is then closed, so that the next call starts afresh)."""
        if not self.alive:
            raise McpUnavailable(f"MCP server {self.server.name!r} is not connected")
        try:
            return run(coroutine_of(self.client), timeout_s)
        except TimeoutError:
            self.close(wait=False)
            raise McpUnavailable(f"MCP server {self.server.name!r} did not answer within {timeout_s:g} s") from None
        except Exception as error:
            if not self.alive or _is_connection_error(error):
                self.close(wait=False)
                raise McpUnavailable(f"MCP server {self.server.name!r} stopped ({describe(error)})") from None
            raise

    def close(self, wait: bool = True) -> None:
        """End the session; a stdio server's process is stopped by the SDK (stdin closed, then killed). With
        ``wait=False`` that happens in the background: a hung server takes seconds to stop, and the next call need
        not wait for it."""
        loop = event_loop()
        if self._stop is not None:
            loop.call_soon_threadsafe(self._stop.set)
        if self._task is not None and wait:
            try:
                self._task.result(10)
            except BaseException:  # noqa: BLE001 - closing: how it ended no longer matters
                self._task.cancel()
        self.client, self._task = None, None


def _is_connection_error(error: BaseException) -> bool:
    text = str(error).lower()
    return "connection closed" in text or isinstance(error, (ConnectionError, EOFError, OSError))


def describe(error: BaseException | None) -> str:
    """One line for ``error``, reaching through exception groups (anyio wraps a task's failure in one)."""
    while isinstance(getattr(error, "exceptions", None), tuple) and error.exceptions:  # an exception group
        error = error.exceptions[0]
    if error is None:
        return "unknown error"
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
