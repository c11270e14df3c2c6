"""One HTTP POST with a total deadline and a cap on the reply's size (standard library only).

A socket time-out bounds each read, not the request: a server that sends its reply a few bytes at a time holds such
a request for as long as it likes, and one that stalls after its headers gets a second time-out. Here a timer shuts
the request's socket down when its deadline passes, which wakes whatever read or write is blocked on it, and the
reply is read in chunks and refused once it is larger than the cap (a ``Content-Length`` over the cap is refused
before the body is read). Outside the deadline: the host name's lookup (the standard library cannot bound it), and a
TLS handshake, which the socket's time-out bounds per read (the socket is watched from the end of the handshake).

Proxies come from the environment (``HTTPS_PROXY``, ``NO_PROXY``), as :mod:`urllib.request` reads them. Redirects are
not followed: the request's ``Authorization`` header would go to whatever host the redirect names.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any


class RequestTimedOut(Exception):
    """The deadline passed before the whole reply came."""


class ReplyTooLarge(Exception):
    """The reply is larger than the cap."""


class ConnectionFailed(Exception):
    """No reply: the connection failed, or the server broke the HTTP protocol (the message says how)."""


@dataclass(frozen=True)
class HttpReply:
    """A server's answer, whatever its status: the status, the headers and the whole body."""

    status: int
    headers: Message
    body: bytes


class _Deadline:
    """Shuts down every socket it watches once ``seconds`` have passed since it was made."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._done = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:  # it passed while connecting
                self._shut(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        # shutdown, not close: closing a socket does not wake a thread blocked reading it, shutting it down does.
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # closed already
            pass

    def close(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


class _Watched:
    """A connection whose socket its request's deadline watches once connected (the TCP connect is bounded by the
    connection's time-out)."""

    def __init__(self, host: str, *, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)  # type: ignore[call-arg]
        self.deadline = deadline

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.deadline.watch(self.sock)  # type: ignore[attr-defined]


class _HTTPConnection(_Watched, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req, deadline=self.deadline)  # type: ignore[arg-type]  # do_open passes deadline on


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        # do_open passes deadline on to the connection; _context: HTTPSHandler's own (not in the stubs)
        return self.do_open(_HTTPSConnection, req, context=self._context,  # type: ignore[arg-type, attr-defined]
                            deadline=self.deadline)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx answer comes back as it is


def _read(response: Any, max_bytes: int) -> bytes:
    """The body of ``response``, or :class:`ReplyTooLarge` as soon as it is longer than ``max_bytes``."""
    length = str(response.headers.get("Content-Length", "")).strip()
    # ASCII digits only ("²" is a digit to isdigit), and no int() of a number too long to convert.
    if length.isascii() and length.isdigit() and (len(length) > 18 or int(length) > max_bytes):
        announced = length if len(length) <= 18 else f"{length[:18]}..."
        raise ReplyTooLarge(f"reply over max_reply_bytes ({max_bytes}): {announced} bytes announced")
    chunks, size = [], 0
    while chunk := response.read(65536):
        size += len(chunk)
        if size > max_bytes:
            raise ReplyTooLarge(f"reply over max_reply_bytes ({max_bytes})")
        chunks.append(chunk)
    return b"".join(chunks)


def post(url: str, body: bytes, headers: Mapping[str, str], *, timeout_s: float, max_reply_bytes: int) -> HttpReply:
    """POST ``body`` to ``url`` and return the reply, of any status, within ``timeout_s`` seconds in all (connecting,
    sending, waiting and reading). Raises :class:`RequestTimedOut`, :class:`ReplyTooLarge` or
    :class:`ConnectionFailed`."""
    deadline = _Deadline(timeout_s)
    started = time.monotonic()
    opener = urllib.request.build_opener(_HTTPHandler(deadline), _HTTPSHandler(deadline), _NoRedirects())
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        try:
            response = opener.open(request, timeout=timeout_s)
        except urllib.error.HTTPError as error:  # a status that is no success: its body says why
            response = error
        with response:
            reply = HttpReply(response.status, response.headers, _read(response, max_reply_bytes))
        # A body that ends with the connection may have been cut short by the deadline.
        if deadline.expired:
            raise RequestTimedOut(f"timed out after {timeout_s:g} s")
        return reply
    except (OSError, http.client.HTTPException) as error:
        cause = error.reason if isinstance(error, urllib.error.URLError) else error
        if deadline.expired or isinstance(cause, TimeoutError) or time.monotonic() - started >= timeout_s:
            raise RequestTimedOut(f"timed out after {timeout_s:g} s") from None
        raise ConnectionFailed(f"{type(cause).__name__}: {cause}") from None
    finally:
        deadline.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
