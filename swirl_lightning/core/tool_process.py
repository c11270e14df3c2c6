"""The process a tool worker runs in: apart from its caller, and killed with every process it starts.

The caller forks a *keeper*, which starts a session of its own and forks the *server* (the function that runs the
tools), itself the leader of a new session and process group. So:

- a tool that signals its process group (``os.killpg(0, ...)``) or its parent (``os.getppid()``) reaches the server
  or the keeper, never the caller: the caller sees a lost worker, as after any crash;
- every process a tool starts (``subprocess.Popen``, ``os.fork``) is in the server's group, and the keeper kills that
  group when the server ends; the caller kills it when it stops the worker (a time-out, ``close``), and the keeper
  when the caller dies (it gets ``SIGTERM`` then, through ``PR_SET_PDEATHSIG``).

Where the OS allows it (root, ``unshare(CLONE_NEWPID)``), the server also gets a PID namespace of its own: the keeper
forks an *init* (PID 1 there), which forks the server (PID 2) and reaps orphans. Inside it no process outside the
namespace can be signalled at all, whatever pid a tool finds in ``/proc``; and when the init ends, the kernel kills
every process left in the namespace, including those that started sessions of their own. Without a namespace a tool
that looks up its caller's pid (``/proc/<ppid>/stat``) can still signal it: ``swirl generate`` then records that
rollout as failed on restart (:mod:`swirl_lightning.rollout.inflight`).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

_CLONE_NEWPID = 0x20000000
# Slots of the memory the caller shares with the keeper (and, through forks, the init).
_GROUP, _CODE, _HAS_CODE, _NAMESPACE = range(4)


def die_with_parent(parent_pid: int | None = None, signal_number: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``signal_number`` to this process when its parent dies (a SIGKILLed parent cannot clean up).
    With ``parent_pid``, leave at once if the parent is no longer that one (it died before this process could ask)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal_number))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's close() and atexit still stop it
        pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def pid_namespaces_allowed() -> bool:
    """Whether this process may create PID namespaces (root on Linux); :class:`ToolProcess` still falls back when
    ``unshare`` fails (a container without ``CAP_SYS_ADMIN``)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0 and os.path.exists("/proc/self/ns/pid")


def _unshare_pids() -> bool:
    """Put this process's future children in a new PID namespace; ``False`` when the OS refuses."""
    try:
        return ctypes.CDLL(None, use_errno=True).unshare(_CLONE_NEWPID) == 0
    except (OSError, AttributeError):
        return False


def _exit_code(status: int) -> int:
    """A wait status as ``multiprocessing`` reports exit codes: the code, or minus the signal."""
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _close_connections(args: tuple[Any, ...]) -> None:
    # The server must hold the only copy of its pipe end, so that the caller reads EOF the moment the server dies.
    for arg in args:
        if isinstance(arg, Connection):
            arg.close()


def _keep(target: Callable[..., None], args: tuple[Any, ...], shared: Any, caller: int, namespace: bool) -> None:
    """The keeper: a session of its own, the server (or the namespace's init) below it, its group killed at the end."""
    die_with_parent(caller, signal.SIGTERM)  # SIGTERM, not SIGKILL: the handler below kills the tools' processes
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setsid()
    namespace = namespace and _unshare_pids()
    shared[_NAMESPACE] = int(namespace)
    keeper = os.getpid()
    child = os.fork()
    if child == 0:
        os.setsid()  # a group of its own: one killpg reaches every process a tool starts
        if namespace:
            die_with_parent(0)  # the parent lives outside the namespace: getppid() reads 0
            _init(target, args, shared)
        else:
            die_with_parent(keeper)
            _run_server(target, args)
        os._exit(0)
    shared[_GROUP] = child
    _close_connections(args)

    def end(*_: object) -> None:
        shared[_GROUP] = 0  # before the reap frees the pid: the caller never signals a reused one
        try:
            os.killpg(child, signal.SIGKILL)
        except OSError:
            pass
        os._exit(0)

    signal.signal(signal.SIGTERM, end)
    # Wait without reaping: the group's leader stays a zombie, so its pid names this group until it is killed.
    info = os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT)
    if not namespace and info is not None:
        shared[_CODE] = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        shared[_HAS_CODE] = 1
    end()


def _init(target: Callable[..., None], args: tuple[Any, ...], shared: Any) -> None:
    """PID 1 of the namespace: forks the server, so that tool code never runs as an init (whose signals to itself
    are ignored), reaps orphans, and ends with the server (the kernel then kills what is left in the namespace)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    server = os.fork()
    if server == 0:
        die_with_parent(1)
        _run_server(target, args)
        os._exit(0)
    _close_connections(args)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid == server:
            shared[_CODE] = _exit_code(status)
            shared[_HAS_CODE] = 1
            os._exit(0)


def _run_server(target: Callable[..., None], args: tuple[Any, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A fork inherits the caller's handlers. Lightning's SIGTERM handler logs and carries on: a SIGTERM would not end
    # the server.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    target(*args)


class ToolProcess:
    """``target(*args)`` in a server process apart from the caller (see the module's text); :meth:`stop` kills it with
    every process it started. ``pid_namespace`` asks for a PID namespace where the OS allows one."""

    def __init__(self, target: Callable[..., None], args: tuple[Any, ...], pid_namespace: bool = True,
                 name: str = "swirl-tool-worker") -> None:
        context = multiprocessing.get_context("fork")
        self._shared = context.RawArray("i", 4)
        wanted = pid_namespace and pid_namespaces_allowed()
        with warnings.catch_warnings():
            # Python 3.12+ warns that forking a threaded process may deadlock the child; the child only runs tools.
            warnings.filterwarnings("ignore", message=".*use of fork\\(\\) may lead to deadlocks",
                                    category=DeprecationWarning)
            self._keeper = context.Process(target=_keep, args=(target, args, self._shared, os.getpid(), wanted),
                                           daemon=True, name=name)
            self._keeper.start()

    @property
    def in_pid_namespace(self) -> bool:
        """Whether the server runs in a PID namespace of its own (known once it has started)."""
        return bool(self._shared[_NAMESPACE])

    def exit_code(self, wait_s: float = 0.5) -> int | None:
        """The server's exit code (minus the signal that killed it), or ``None`` when nothing saw it end."""
        self._keeper.join(wait_s)
        return self._shared[_CODE] if self._shared[_HAS_CODE] else None

    def stop(self) -> None:
        """Kill the server and every process in its group (or namespace), then the keeper."""
        group = self._shared[_GROUP]
        if group:
            try:
                os.killpg(group, signal.SIGKILL)
            except OSError:
                pass
        if self._keeper.is_alive():
            self._keeper.kill()  # also when a tool stopped it (SIGSTOP): SIGKILL ends a stopped process
        self._keeper.join(5)
