"""No poison pill: a rollout whose tool call took ``swirl generate`` down is recorded as failed on restart.

A tool is kept apart from its caller (:mod:`swirl_lightning.core.tool_process`), but where the OS gives no PID
namespace a tool can still find and kill its caller, and any tool can exhaust the machine's memory. Such a rollout
would kill every resumed run at the same place. So each rank marks, in ``<shard>.inflight``, the rollout whose tool
call is running, and clears the mark when the call returns. Tool calls of one rank run one at a time, so the mark
names at most one rollout. A mark found at start-up means the last run died inside that call: the rollout is recorded
as failed instead of being run again.

The mark is written without ``fsync``: it guards against a killed process, whose writes the page cache keeps, not a
lost machine. An exception (Ctrl-C included) clears it: only a run that died in the call leaves it behind.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path


class InFlightToolCalls:
    """The mark of the rollout whose tool call is running, in ``path`` (one per rank)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def left_behind(self) -> dict[str, object] | None:
        """The mark a run that died in a tool call left: ``example_id``, ``sample_index`` and ``tool``; ``None``
        when there is none (or it cannot be read: a run killed while writing it had not called the tool yet)."""
        try:
            mark = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(mark, dict) or not isinstance(mark.get("example_id"), str) \
                or not isinstance(mark.get("sample_index"), int):
            return None
        return mark

    @contextlib.contextmanager
    def call(self, example_id: str, sample_index: int, tool: str) -> Iterator[None]:
        """Mark the rollout ``(example_id, sample_index)`` as inside a call of ``tool`` for the ``with`` block."""
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        mark = json.dumps({"example_id": example_id, "sample_index": sample_index, "tool": tool}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, mark, 0)
        try:
            yield
        finally:
            os.ftruncate(self._fd, 0)

    def close(self) -> None:
        """Close the file and remove it (no call is running)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)
