"""A sandboxed Python tool for swirl-lightning, called by the model as ``<python>print(48 / 2 + 48)</python>``.

Each call runs the snippet in a fresh interpreter under the limits of :mod:`swirl_python.sandbox` (root: new network
and PID namespaces, an unprivileged uid of its own). The model sees what the snippet printed (and the value of a last bare
expression), or the last line of its error: ``ZeroDivisionError: division by zero``.

The limits can be changed per run through the environment: ``SWIRL_PYTHON_TIMEOUT_S`` (default 5),
``SWIRL_PYTHON_CPU_S`` (5), ``SWIRL_PYTHON_MEMORY_MB`` (512), ``SWIRL_PYTHON_OUTPUT_BYTES`` (65536),
``SWIRL_PYTHON_PROCESSES`` (16).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from swirl_lightning import hookimpl
from swirl_python.sandbox import Limits, RunResult, check_syntax, isolation, run_snippet

__all__ = ["Limits", "PythonError", "isolation", "limits_from_environment", "python", "register_tools", "run_snippet",
           "show"]

NO_OUTPUT = "(no output: print the result, or end with an expression)"

_ENVIRONMENT = {"timeout_s": ("SWIRL_PYTHON_TIMEOUT_S", float), "cpu_s": ("SWIRL_PYTHON_CPU_S", int),
                "memory_mb": ("SWIRL_PYTHON_MEMORY_MB", int), "output_bytes": ("SWIRL_PYTHON_OUTPUT_BYTES", int),
                "processes": ("SWIRL_PYTHON_PROCESSES", int)}
_WRAPPERS = ("unshare: ", "setpriv: ")
_SIGNALS = {signal.SIGXCPU: "CPU time limit exceeded", signal.SIGKILL: "killed (a limit was exceeded)",
            signal.SIGSEGV: "crashed (segmentation fault)", signal.SIGXFSZ: "output or file size limit exceeded"}


class PythonError(Exception):
    """The snippet failed; the message is the last line of its error, as the model sees it."""


def python(code: str) -> str:
    """Run Python code in a sandbox (no network, no files kept); the result is what it prints, or its last expression."""
    syntax = check_syntax(code) if isinstance(code, str) else None
    if syntax is not None:  # no process for a snippet that cannot run
        raise PythonError(syntax)
    limits = limits_from_environment()
    return show(run_snippet(code, limits), limits)


def show(result: RunResult, limits: Limits) -> str:
    """What the model sees of ``result``: its stdout, or :class:`PythonError` with the error's last line."""
    if result.timed_out:
        raise PythonError(f"timed out after {limits.timeout_s:g} s")
    if len(result.stdout.encode("utf-8", errors="replace")) >= limits.output_bytes:
        raise PythonError(f"output too long (more than {limits.output_bytes} bytes): print less")
    if result.exit_code is not None and result.exit_code < 0:
        number = -result.exit_code
        raise PythonError(_SIGNALS.get(number, f"killed by signal {number}"))
    if result.exit_code != 0:
        # unshare and setpriv speak for a child killed by a signal ("unshare: sigprocmask unblock failed"): not the
        # snippet's error, and nothing the model can act on.
        lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(_WRAPPERS)]
        if lines:
            raise PythonError(lines[-1].strip())
        killed = any(line.startswith(_WRAPPERS) for line in result.stderr.splitlines())
        raise PythonError("killed (a limit was exceeded)" if killed else f"exited with code {result.exit_code}")
    output = result.stdout.rstrip()
    return output if output else NO_OUTPUT


def limits_from_environment() -> Limits:
    """The :class:`Limits` with the ``SWIRL_PYTHON_*`` overrides of the environment applied."""
    changes = {}
    for field, (name, kind) in _ENVIRONMENT.items():
        raw = os.environ.get(name, "").strip()
        if raw:
            try:
                changes[field] = kind(raw)
            except ValueError:
                raise ValueError(f"${name}: expected a {kind.__name__} > 0, got {raw!r}") from None
    return Limits(**changes)


@hookimpl
def register_tools(register: Callable[..., None]) -> None:
    """Register :func:`python` as the tool ``python``, called with the tag ``python``."""
    register(python, tag="python")
