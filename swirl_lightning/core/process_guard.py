"""Run a server command so that it never outlives the process that started it.

``python -m swirl_lightning.core.process_guard COMMAND...`` is a small *guard* process between a run and a server it
manages (the vLLM server of the ``vllm`` engine). The guard starts ``COMMAND`` as the leader of a new process group and
kills that whole group (``SIGTERM``, then ``SIGKILL`` after a grace period) when:

- the guard gets ``SIGTERM``, ``SIGINT`` or ``SIGHUP`` (the run stopping the server);
- the run dies in any way, ``SIGKILL`` included: Linux sends the guard ``SIGTERM`` then (``PR_SET_PDEATHSIG``);
- the command itself ends (its children, such as vLLM's engine-core process, go with it).

A server's own children share its group, so none is left behind. The guard exits with the command's exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

GRACE_S = 10.0
"""Seconds between ``SIGTERM`` and ``SIGKILL`` to the group."""


def kill_group(pgid: int, grace_s: float = GRACE_S) -> None:
    """``SIGTERM`` the process group, then ``SIGKILL`` whatever is left of it after ``grace_s`` seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str]) -> int:
    from swirl_lightning.core.tool_process import die_with_parent

    if not argv:
        print("usage: python -m swirl_lightning.core.process_guard COMMAND [ARGS...]", file=sys.stderr)
        return 2
    started: list[subprocess.Popen] = []

    def stop(signum: int, _frame: object) -> None:
        if started:
            kill_group(started[0].pid)
        os._exit(128 + signum)

    # The handlers come first: a stop that arrives while the command starts still kills its group.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    die_with_parent(int(os.environ.get("SWIRL_GUARD_PARENT", os.getppid())), signal.SIGTERM)
    child = subprocess.Popen(argv, start_new_session=True)
    started.append(child)
    code = child.wait()
    kill_group(child.pid, grace_s=2.0)  # children the server left running
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
