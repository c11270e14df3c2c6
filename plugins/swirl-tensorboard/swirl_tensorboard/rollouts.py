"""The rollout files under a TensorBoard log folder, read, filtered and compared (no TensorBoard here: plain data).

A *source* is one file of trajectories, found under the log folder by how swirl-lightning names them:

- ``<run>/rollouts/<stage>-step<N>.jsonl``: one live evaluation (``val`` or ``test``) at optimizer step N, written
  by ``swirl fit``, ``swirl validate`` and ``swirl test``;
- ``<run>/predictions.jsonl``: ``swirl predict``'s trajectories;
- ``<folder>/<name>.jsonl`` beside ``<name>.jsonl.summary.json``: a ``swirl generate`` output (generate writes that
  summary), when ``--output`` points inside the log folder.

``<run>`` is the folder's path relative to the log folder, as TensorBoard names runs (``.`` for the log folder
itself). Each trajectory is shown through :mod:`swirl_lightning.rollout.view`, the view ``swirl data show`` prints.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swirl_lightning.core.trajectory import Trajectory, read_trajectories
from swirl_lightning.rollout.view import trajectory_summary, trajectory_view

EVALUATION_FILE = re.compile(r"(?P<stage>[A-Za-z]+)-step(?P<step>\d+)\.jsonl")

FACETS = ("result", "verdict", "tool_error", "invalid", "steps")
"""What a list is filtered by: ``result`` (correct / wrong / not scored), ``verdict`` (all GOOD / some BAD / not
judged), ``tool_error`` and ``invalid`` (yes / no: any step with a tool error, any invalid action), ``steps``
(the number of steps)."""


@dataclass(frozen=True)
class Source:
    """One file of trajectories: its run, its path within the run, what wrote it, and at which optimizer step."""

    run: str
    file: str
    stage: str
    """``val``, ``test``, ``predict`` or ``generate``."""
    step: int | None
    path: Path

    @property
    def label(self) -> str:
        return f"{self.stage} at step {self.step}" if self.step is not None else f"{self.stage}: {self.file}"

    def describe(self) -> dict[str, Any]:
        return {"run": self.run, "file": self.file, "stage": self.stage, "step": self.step, "label": self.label}


def _run_name(folder: Path, logdir: Path) -> str:
    relative = folder.relative_to(logdir).as_posix()
    return relative if relative else "."


def find_sources(logdir: str | os.PathLike) -> list[Source]:
    """Every source under ``logdir``, ordered by run, then stage, then step."""
    logdir = Path(logdir)
    sources = []
    for dirpath, dirnames, filenames in os.walk(logdir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not d.endswith(".shards"))
        folder = Path(dirpath)
        for name in sorted(filenames):
            if not name.endswith(".jsonl"):
                continue
            match = EVALUATION_FILE.fullmatch(name)
            if folder.name == "rollouts" and match and folder != logdir:
                run = _run_name(folder.parent, logdir)
                sources.append(Source(run, f"rollouts/{name}", match["stage"], int(match["step"]), folder / name))
            elif name == "predictions.jsonl":
                sources.append(Source(_run_name(folder, logdir), name, "predict", None, folder / name))
            elif name + ".summary.json" in filenames:
                sources.append(Source(_run_name(folder, logdir), name, "generate", None, folder / name))
    return sorted(sources, key=lambda s: (s.run, s.stage, -1 if s.step is None else s.step, s.file))


class RolloutStore:
    """The sources of one log folder and their trajectories, re-read when a file changes (by size and mtime)."""

    def __init__(self, logdir: str | os.PathLike, rescan_seconds: float = 5.0) -> None:
        self.logdir = Path(logdir) if logdir else None
        self.rescan_seconds = rescan_seconds
        self._sources: list[Source] = []
        self._scanned = float("-inf")
        self._cache: dict[Path, tuple[tuple[int, float], list[Trajectory]]] = {}

    def sources(self) -> list[Source]:
        if self.logdir is None or not self.logdir.is_dir():
            return []
        if time.monotonic() - self._scanned > self.rescan_seconds:
            self._sources, self._scanned = find_sources(self.logdir), time.monotonic()
        return self._sources

    def source(self, run: str, file: str) -> Source:
        """The source ``file`` of ``run``; ``KeyError`` when there is none (never a path outside the log folder)."""
        for source in self.sources():
            if source.run == run and source.file == file:
                return source
        self._scanned = float("-inf")  # a file written since the last scan
        for source in self.sources():
            if source.run == run and source.file == file:
                return source
        raise KeyError(f"no trajectories {file!r} in run {run!r}")

    def find(self, suffix: str) -> Source:
        """The source whose path ends with ``suffix`` (a link that does not know the log folder TensorBoard was
        started with: ``tb/quickstart/fit/version_0/rollouts/val-step000004.jsonl``)."""
        suffix = suffix.strip("/")
        for source in self.sources():
            if source.path.as_posix() == suffix or source.path.as_posix().endswith("/" + suffix):
                return source
        raise KeyError(f"no trajectories at {suffix!r}")

    def trajectories(self, source: Source) -> list[Trajectory]:
        stat = source.path.stat()
        stamp = (stat.st_size, stat.st_mtime)
        cached = self._cache.get(source.path)
        if cached is None or cached[0] != stamp:
            cached = (stamp, read_trajectories(source.path, allow_empty=True))  # a run's file, as it grows
            self._cache[source.path] = cached
        return cached[1]

    def overview(self) -> list[dict[str, Any]]:
        """Runs with their sources, each with its count and accuracy (the same figure as ``<stage>/accuracy``). A
        file that cannot be read is listed with its ``error`` (and no figures) instead of failing every run."""
        runs: dict[str, list[dict[str, Any]]] = {}
        for source in self.sources():
            try:
                trajectories = self.trajectories(source)
            except (OSError, UnicodeDecodeError, ValueError) as error:  # FormatError is a ValueError
                runs.setdefault(source.run, []).append({**source.describe(), "trajectories": None, "accuracy": None,
                                                        "error": f"unreadable: {error}"})
                continue
            scored = [t.outcome for t in trajectories if t.outcome is not None]
            runs.setdefault(source.run, []).append({
                **source.describe(), "trajectories": len(trajectories),
                "accuracy": sum(scored) / len(scored) if scored else None})
        return [{"run": run, "sources": sources} for run, sources in runs.items()]


def facets(summary: dict[str, Any]) -> dict[str, str]:
    """A trajectory's value of each facet (as strings, the values of the filter parameters)."""
    return {"result": summary["result"], "verdict": summary["verdict"],
            "tool_error": "yes" if summary["tool_errors"] else "no",
            "invalid": "yes" if summary["invalid_actions"] else "no", "steps": str(summary["steps"])}


def listing(trajectories: list[Trajectory], filters: dict[str, str]) -> dict[str, Any]:
    """The rows that pass ``filters`` (facet -> value; unknown facets are an error) and, per facet, the count of
    each value among the trajectories that pass the *other* filters (what choosing that value would show)."""
    unknown = set(filters) - set(FACETS)
    if unknown:
        raise ValueError(f"unknown filter(s) {', '.join(sorted(unknown))}; expected some of {', '.join(FACETS)}")
    rows = []
    for index, trajectory in enumerate(trajectories):
        summary = trajectory_summary(trajectory)
        rows.append({"index": index, **summary, "facets": facets(summary)})
    counts = {}
    for facet in FACETS:
        others = {k: v for k, v in filters.items() if k != facet}
        counts[facet] = dict(Counter(row["facets"][facet] for row in rows
                                     if all(row["facets"][k] == v for k, v in others.items())))
    shown = [row for row in rows if all(row["facets"][k] == v for k, v in filters.items())]
    return {"total": len(rows), "shown": len(shown), "counts": counts, "rows": shown}


def _pairs(before: list[Trajectory], after: list[Trajectory]) -> list[tuple[int, int]]:
    index = {t.key: i for i, t in enumerate(after)}
    return [(i, index[t.key]) for i, t in enumerate(before) if t.key in index]


def change_of(before: dict[str, Any], after: dict[str, Any]) -> str:
    """``gained`` (wrong or unscored -> correct), ``lost``, ``changed`` (another answer, steps or verdict) or
    ``same``."""
    if before["result"] != "correct" and after["result"] == "correct":
        return "gained"
    if before["result"] == "correct" and after["result"] != "correct":
        return "lost"
    keys = ("final_answer", "steps", "verdict", "tool_errors", "invalid_actions")
    return "changed" if any(before[k] != after[k] for k in keys) else "same"


def in_order(first: Source, second: Source) -> tuple[Source, Source]:
    """The two sources of a comparison, the earlier optimizer step first (as given when a step is unknown or equal)."""
    if first.step is not None and second.step is not None and second.step < first.step:
        return second, first
    return first, second


def comparison(before: list[Trajectory], after: list[Trajectory], filters: dict[str, str],
               filter_on: str = "before") -> dict[str, Any]:
    """The questions (example, sample) both sides hold, filtered on the facets of one side (``filter_on``: the
    list being browsed), each with both summaries and what changed from ``before`` to ``after``; with counts of
    each change. A row's ``index`` is its position in the filtered side's file."""
    filtered = before if filter_on == "before" else after
    shown = {row["index"] for row in listing(filtered, filters)["rows"]}
    rows = []
    for i, j in _pairs(before, after):
        index = i if filter_on == "before" else j
        if index not in shown:
            continue
        a, b = trajectory_summary(before[i]), trajectory_summary(after[j])
        rows.append({"index": index, "example_id": a["example_id"], "sample_index": a["sample_index"],
                     "question": a["question"], "before": a, "after": b, "change": change_of(a, b)})
    return {"pairs": len(_pairs(before, after)), "shown": len(rows),
            "changes": dict(Counter(row["change"] for row in rows)), "rows": rows}


STEP_FIELDS = ("kind", "thinking", "tool", "query", "answer", "invalid_reason", "result", "tool_error", "verdict")
SUMMARY_FIELDS = ("result", "final_answer", "steps", "verdict", "tool_errors", "invalid_actions", "finish_reason")


def pair_views(before: Trajectory, after: Trajectory) -> dict[str, Any]:
    """Both views of one question, and what differs: the summary fields, and per step index the fields that
    differ (``added`` / ``removed`` for a step only one side has)."""
    a, b = trajectory_view(before), trajectory_view(after)
    steps = []
    for k in range(max(len(a["step_views"]), len(b["step_views"]))):
        if k >= len(a["step_views"]):
            steps.append({"index": k + 1, "status": "added", "fields": []})
        elif k >= len(b["step_views"]):
            steps.append({"index": k + 1, "status": "removed", "fields": []})
        else:
            fields = [f for f in STEP_FIELDS if a["step_views"][k][f] != b["step_views"][k][f]]
            steps.append({"index": k + 1, "status": "changed" if fields else "same", "fields": fields})
    return {"before": a, "after": b, "change": change_of(a, b),
            "differences": {"summary": [f for f in SUMMARY_FIELDS if a[f] != b[f]], "steps": steps}}


def find_pair(before: list[Trajectory], after: list[Trajectory], example_id: str,
              sample_index: int) -> tuple[Trajectory, Trajectory]:
    """The trajectories of one question on both sides; ``KeyError`` when a side lacks it."""
    key = (example_id, sample_index)
    left = next((t for t in before if t.key == key), None)
    right = next((t for t in after if t.key == key), None)
    if left is None or right is None:
        raise KeyError(f"question {example_id!r} (sample {sample_index}) is not on both sides")
    return left, right
