"""Running an untrusted Python snippet in a fresh, bounded process.

Each run gets a new interpreter (``python -I -S``: no site-packages, no ``PYTHON*`` variables, no user folder), an
empty environment and a temporary working folder that is deleted afterwards, under ``resource`` limits:

- CPU seconds (``RLIMIT_CPU``) and a wall-clock timeout (the whole process tree is killed);
- address space (``RLIMIT_AS``): a memory bomb gets ``MemoryError``;
- file size (``RLIMIT_FSIZE``): stdout and stderr go to files, so this also caps the output, and an endless ``print``
  loop ends at the cap;
- processes (``RLIMIT_NPROC``): a fork bomb gets ``BlockingIOError``.

As root (where ``unshare`` and ``setpriv`` exist), the snippet also runs:

- in a new network namespace: no interface but a loopback that is down, so no socket reaches the host, the local
  network or the internet (``127.0.0.1`` included);
- in a new PID namespace, as its PID 1: it cannot name any process outside, and when it ends the kernel kills every
  process it left behind, even one that started a session of its own;
- as an unprivileged user of its own (:func:`sandbox_uid`: a uid with no name, no groups and no files, one per tool
  worker process): it cannot read the caller's ``/proc/PID/environ`` (where a served judge's API key lives), files
  readable only by their owner, nor signal any process of another user, another worker's snippets included.
  ``RLIMIT_NPROC`` only binds a user without ``CAP_SYS_RESOURCE``, and it counts every process of the uid, so this
  switch is what makes the process cap real, and a uid per worker keeps one worker's fork bomb from starving the
  others.

Without root none of the three is available: the snippet runs as the caller's user, in the caller's network, in a
session of its own (killed as a group at the end). It still gets the empty environment, the limits and the timeout,
but it can read what the caller can read (``/proc/<caller>/environ`` included) and open sockets. Run the tool as root
(in a container) where the snippets are not trusted; :func:`isolation` says which mode is in force. (Root without
util-linux's ``unshare`` and ``setpriv`` also gets this mode, as root: then not even the limits bind.)
"""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

UID_ENV = "SWIRL_PYTHON_UID"
_UID_BASE, _UID_SPAN = 65000, 534
"""Debian reserves uids 65000-65533 (allocated to nothing); within 16 bits, so a user namespace that maps 65536 ids
(rootless containers) has them."""

# The runner the fresh interpreter executes. It first lowers its own resource limits (argv: CPU seconds, address space,
# file size, processes), hard limits included, which no unprivileged process can raise again: set here rather than in a
# preexec_fn, which is unsafe in a process with threads (the tool worker may have some). Then it runs snippet.py and
# shows the value of a last bare expression (as a notebook does: ``48 / 2 + 48`` answers ``72.0``) so that a model need
# not remember ``print``. At the soft CPU limit it says so and leaves (the hard limit, a second later, kills a snippet
# that took the signal over).
_RUNNER = """
import ast, os, resource, signal, sys
cpu, memory, size, processes = map(int, sys.argv[1:5])
del sys.argv[1:]
for kind, soft, hard in ((resource.RLIMIT_CPU, cpu, cpu + 1), (resource.RLIMIT_AS, memory, memory),
                         (resource.RLIMIT_FSIZE, size, size), (resource.RLIMIT_NPROC, processes, processes),
                         (resource.RLIMIT_CORE, 0, 0)):
    ceiling = resource.getrlimit(kind)[1]
    if ceiling != resource.RLIM_INFINITY:
        soft, hard = min(soft, ceiling), min(hard, ceiling)
    resource.setrlimit(kind, (soft, hard))
def cpu_limit(*_):
    sys.stderr.write("\\nTimeoutError: CPU time limit exceeded\\n")
    os._exit(124)
signal.signal(signal.SIGXCPU, cpu_limit)
source = open("snippet.py", encoding="utf-8").read()
tree = ast.parse(source, "snippet.py", "exec")
last = None
if tree.body and isinstance(tree.body[-1], ast.Expr):
    last = ast.Expression(tree.body.pop().value)
scope = {"__name__": "__main__", "__builtins__": __builtins__}
exec(compile(tree, "snippet.py", "exec"), scope)
if last is not None:
    value = eval(compile(last, "snippet.py", "eval"), scope)
    if value is not None:
        print(repr(value))
"""


@dataclass(frozen=True)
class Limits:
    """The bounds of one run."""

    timeout_s: float = 5.0
    """Wall-clock seconds before the process tree is killed (keep it under ``tools.timeout_s``)."""
    cpu_s: int = 5
    """CPU seconds of each process (``RLIMIT_CPU``)."""
    memory_mb: int = 512
    """Address space of each process, in MiB (``RLIMIT_AS``)."""
    output_bytes: int = 65536
    """Most bytes of stdout, of stderr and of any file the snippet writes (``RLIMIT_FSIZE``)."""
    processes: int = 16
    """Most processes a snippet may add to those its uid already has (``RLIMIT_NPROC``; binding only for a uid
    without ``CAP_SYS_RESOURCE``, so not for root)."""
    max_code_chars: int = 20000
    """Longest snippet accepted."""

    def __post_init__(self) -> None:
        for name in ("timeout_s", "cpu_s", "memory_mb", "output_bytes", "processes", "max_code_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"Limits.{name}: expected a number > 0, got {value!r}")


@dataclass(frozen=True)
class RunResult:
    """What one run printed and how it ended."""

    stdout: str
    stderr: str
    exit_code: int | None
    """The interpreter's exit code, minus the signal that killed it, or ``None`` after a timeout."""
    timed_out: bool
    elapsed_s: float

    @property
    def ok(self) -> bool:
        """Whether the snippet ran to its end without an exception."""
        return self.exit_code == 0 and not self.timed_out


def isolation() -> str:
    """``namespaces`` (root: new network and PID namespaces, a uid of its own) or ``limits`` (resource limits, a
    session of its own and an empty environment only)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("unshare") and shutil.which("setpriv"):
        return "namespaces"
    return "limits"


def sandbox_uid() -> int:
    """The uid (and gid) snippets of this process run as in ``namespaces`` mode: ``$SWIRL_PYTHON_UID`` (65534 for
    ``nobody``), else one of the reserved uids 65000-65533 chosen by this process's id."""
    raw = os.environ.get(UID_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) == 0:
            raise ValueError(f"${UID_ENV}: expected a uid other than 0, got {raw!r}")
        return int(raw)
    return _UID_BASE + os.getpid() % _UID_SPAN


def _command(mode: str, uid: int, limits: Limits) -> list[str]:
    # RLIMIT_NPROC counts every process of the uid, the ones it has already included: a user's desktop has hundreds.
    processes = _processes_of(uid) + limits.processes
    python = [sys.executable, "-I", "-S", "-X", "utf8", "-c", _RUNNER, str(int(limits.cpu_s)),
              str(limits.memory_mb * 1024 * 1024), str(limits.output_bytes), str(processes)]
    if mode != "namespaces":
        return python
    # unshare forks the interpreter as PID 1 of the new PID namespace and kills it when unshare itself dies
    # (--kill-child); setpriv drops to the sandbox uid with no supplementary groups and no way back (no_new_privs). Changing
    # the uid clears the parent-death signal that --kill-child set, so setpriv sets it again (--pdeathsig): a snippet
    # that starts a session of its own still dies with unshare.
    return [shutil.which("unshare") or "unshare", "--net", "--pid", "--kill-child",
            shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--no-new-privs", "--pdeathsig", "SIGKILL", *python]


def _processes_of(uid: int) -> int:
    """How many processes ``uid`` has now (``/proc/*/status``)."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as status:
                    for line in status:
                        if line.startswith("Uid:"):
                            count += int(line.split()[1]) == uid
                            break
            except OSError:
                pass  # gone meanwhile
    return count


def run_snippet(code: str, limits: Limits = Limits()) -> RunResult:
    """Run ``code`` in a fresh sandboxed interpreter (see the module's text) and return what it printed.

    Raises :class:`ValueError` for a snippet that is not text or longer than ``limits.max_code_chars``; whatever the
    snippet itself does comes back in the :class:`RunResult`.
    """
    if not isinstance(code, str):
        raise ValueError(f"expected the Python code as text, got {type(code).__name__}")
    if len(code) > limits.max_code_chars:
        raise ValueError(f"code too long ({len(code)} chars, max {limits.max_code_chars})")
    mode = isolation()
    uid = sandbox_uid() if mode == "namespaces" else os.getuid()
    folder = tempfile.mkdtemp(prefix="swirl-python-")
    try:
        with open(os.path.join(folder, "snippet.py"), "w", encoding="utf-8", errors="surrogatepass") as handle:
            handle.write(code)
        if mode == "namespaces":
            os.chown(folder, uid, uid)  # the snippet may write its own files there, and owns nothing else
        # Output goes to files the caller opened, outside the working folder: RLIMIT_FSIZE caps them, no pipe can
        # fill up and block the child, and nothing the snippet does to its folder reaches them.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            started = time.monotonic()
            process = subprocess.Popen(_command(mode, uid, limits), cwd=folder, env={}, stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=err, start_new_session=True, close_fds=True)
            timed_out = False
            try:
                process.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(process)
            elapsed = time.monotonic() - started
            code_or_none = None if timed_out else process.returncode
            return RunResult(_read(out, limits.output_bytes), _read(err, limits.output_bytes), code_or_none,
                             timed_out, elapsed)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the run's session (its group) and reap the interpreter; in namespaces mode the kernel then ends every
    process left in the PID namespace."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        pass
    process.wait()


def _read(handle: object, limit: int) -> str:
    handle.seek(0)  # type: ignore[attr-defined]
    return handle.read(limit).decode("utf-8", errors="replace")  # type: ignore[attr-defined]


def check_syntax(code: str) -> str | None:
    """The one-line syntax error of ``code`` (as the sandbox would report it), or ``None`` when it parses; lets a
    caller answer a broken snippet without starting a process."""
    try:
        ast.parse(code, "snippet.py", "exec")
    except SyntaxError as error:
        return f"SyntaxError: {error.msg} (line {error.lineno})"
    except (ValueError, RecursionError, MemoryError) as error:
        return f"{type(error).__name__}: the code cannot be parsed"
    return None
