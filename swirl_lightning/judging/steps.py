"""Judging many steps: every step of many trajectories (filtering, validation), or freshly sampled actions (the
``swirl`` reward), with judgements cached on disk by content hash so a step is never judged twice.

Judge failures (``FAILED`` judgements: see :mod:`.base`) are never cached, so the next run asks again (a failure
found in a cache file, from elsewhere, is read as no judgement at all), and are counted by a :class:`FailureBudget`
that stops the run above ``judge.max_failure_rate``. A cache file that is not one (corrupt, or another program's
database) is a :class:`JudgementCacheError` naming the file and how to start over.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from swirl_lightning.core.models import cache_dir
from swirl_lightning.core.safe_load import loads_json
from swirl_lightning.core.trajectory import Example, Judgement, State, Step, Trajectory, decompose, from_dict, to_dict
from swirl_lightning.judging.base import StepJudge, verdict_for


class JudgementCacheError(ValueError):
    """The cache file cannot be used (corrupt, another schema); the message names it and how to start over."""


class JudgementCache:
    """Step judgements on disk, by :func:`judgement_key` (a :class:`JudgementStore`).

    One SQLite file (default ``$SWIRL_CACHE_DIR/judgements/judgements.sqlite``) in WAL mode: readers never
    block, each write is one transaction, and several processes may share it. A connection is opened per
    process, so the cache survives a fork.
    """

    COLUMNS = ("key", "value")

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else cache_dir() / "judgements" / "judgements.sqlite"
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    def _unusable(self, reason: object) -> JudgementCacheError:
        return JudgementCacheError(f"judgement cache {self.path}: {reason}; delete the file to start a new cache, "
                                   "or judge without it (--cache false)")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = sqlite3.connect(self.path, timeout=60)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("CREATE TABLE IF NOT EXISTS judgements (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                columns = tuple(row[1] for row in conn.execute("PRAGMA table_info(judgements)"))
            except sqlite3.DatabaseError as err:
                raise self._unusable(err) from None
            if columns != self.COLUMNS:  # a table of the same name from another program, or another version
                conn.close()
                raise self._unusable(f"its table 'judgements' has the columns {', '.join(columns)}, not "
                                     f"{', '.join(self.COLUMNS)}")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def get_many(self, keys: Iterable[str]) -> dict[str, Judgement]:
        """The cached judgements among ``keys``. A stored failure (this class stores none, an older version or another
        program may have) is left out: it is no verdict, so the step is judged again."""
        keys, found = list(dict.fromkeys(keys)), {}
        conn = self._connection()
        try:
            for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
                chunk = keys[start : start + 500]
                rows = conn.execute(f"SELECT key, value FROM judgements WHERE key IN ({','.join('?' * len(chunk))})",
                                    chunk).fetchall()
                for key, value in rows:
                    judgement = self._judgement(key, value)
                    if not judgement.failed:
                        found[key] = judgement
        except sqlite3.DatabaseError as err:
            raise self._unusable(err) from None
        return found

    def _judgement(self, key: str, value: object) -> Judgement:
        try:
            if not isinstance(value, (str, bytes)):
                raise ValueError(f"expected the JSON text of a judgement, got {type(value).__name__}")
            return from_dict(Judgement, loads_json(value))
        except ValueError as err:  # not JSON, over a bound, or not a judgement
            raise self._unusable(f"the row {key[:12]}... is not a judgement ({str(err)[:200]})") from None

    def put_many(self, judgements: dict[str, Judgement]) -> None:
        """Store judgements by key, in one transaction; judge failures are not stored (the next run asks again)."""
        rows = [(key, json.dumps(to_dict(j))) for key, j in judgements.items() if not j.failed]
        if not rows:
            return
        try:
            with self._connection() as conn:
                conn.executemany("INSERT OR REPLACE INTO judgements (key, value) VALUES (?, ?)", rows)
        except sqlite3.DatabaseError as err:
            raise self._unusable(err) from None

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None


def judgement_key(judge_id: str, prompt_version: str, state: list[dict[str, str]], step_text: str,
                  settings: Mapping[str, Any] | None = None) -> str:
    """The content hash a step judgement is cached under: the judge, its prompt version, its ``settings`` that change a
    verdict (:func:`verdict_settings`), the state and the step. A judge whose verdict depends on anything else (the
    gold data, say) must say so in its prompt version or set ``cacheable = False``."""
    parts: list[Any] = [judge_id, prompt_version, state, step_text]
    if settings:
        parts.append(dict(settings))
    payload = json.dumps(parts, ensure_ascii=False, sort_keys=True, default=repr)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def verdict_settings(judge: StepJudge) -> dict[str, Any]:
    """The values of the judge's settings that change a verdict (``verdict_setting_values``; see
    :class:`~swirl_lightning.judging.base.StepJudgeBase`): what else the cache key must hold."""
    return judge.verdict_setting_values()


class JudgementStore(Protocol):
    """Where judgements are cached, such as :class:`JudgementCache`."""

    def get_many(self, keys: Iterable[str]) -> dict[str, Judgement]:
        """The stored verdicts among ``keys`` (never a failure)."""

    def put_many(self, judgements: dict[str, Judgement]) -> None:
        """Store judgements by key."""


class JudgeFailureError(RuntimeError):
    """Too many judge failures: the run stops (the message says how many, the limit and the last error)."""


@dataclass
class FailureBudget:
    """Counts judged steps and judge failures over a run; :meth:`add` raises :class:`JudgeFailureError` once the
    failure rate is above ``max_rate`` after at least ``after`` steps (or at any count with ``final=True``)."""

    max_rate: float = 0.1
    after: int = 50
    judged: int = 0
    failed: int = 0
    last_error: str | None = None

    @classmethod
    def from_config(cls, judge: Any) -> FailureBudget:
        """The budget of a :class:`~swirl_lightning.core.config.JudgeConfig`."""
        return cls(judge.max_failure_rate, judge.failure_rate_after)

    @property
    def rate(self) -> float:
        return self.failed / self.judged if self.judged else 0.0

    def add(self, judgements: Iterable[Judgement], final: bool = False) -> None:
        """Count ``judgements`` (cache hits too: a rerun that asks only for earlier failures is measured over all its
        steps), then check the rate."""
        for judgement in judgements:
            self.judged += 1
            if judgement.failed:
                self.failed += 1
                self.last_error = judgement.error
        self.check(final)

    def check(self, final: bool = False) -> None:
        """Raise :class:`JudgeFailureError` when the rate is over the limit (and the count is large enough)."""
        if self.failed and self.rate > self.max_rate and (final or self.judged >= self.after):
            raise JudgeFailureError(
                f"the judge failed on {self.failed} of {self.judged} steps ({self.rate:.1%}), above "
                f"judge.max_failure_rate {self.max_rate:.1%}; last error: {self.last_error}. Check the judge server "
                "and its limits; judged steps are cached and failures are not, so a rerun asks only for the rest")

    def as_dict(self) -> dict[str, Any]:
        return {"judged": self.judged, "failed": self.failed, "failure_rate": self.rate,
                "max_failure_rate": self.max_rate, "last_error": self.last_error}


def _set_judgement(step: Step, judgement: Judgement) -> None:
    step.judgements = [j for j in step.judgements if j.judge != judgement.judge] + [judgement]


def judge_trajectories(trajectories: Sequence[Trajectory], judge: StepJudge, examples: dict[str, Example] | None = None,
                       cache: JudgementStore | None = None, batch_size: int = 16, progress: bool = True,
                       failures: FailureBudget | None = None) -> dict[str, int]:
    """Judge every step of every trajectory, adding each judgement to ``step.judgements`` (replacing an
    earlier one by the same judge id). States come from :func:`~swirl_lightning.core.trajectory.decompose`.

    Each state carries its example (``examples`` by example id). Cached judgements are reused (their verdict
    re-derived with the judge's current ``threshold``); new ones are stored after each batch, or each as it
    arrives (``iter_judgements``), so an interrupted (even killed) run keeps its work. Judge
    failures are set on their steps but never cached, and counted in ``failures`` (which raises
    :class:`JudgeFailureError` above its rate; a budget of ``max_rate=1`` is made when none is given). Returns the
    counts ``steps``, ``from_cache``, ``judged`` (fresh judgements, failures included) and ``failed``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    failures = failures if failures is not None else FailureBudget(max_rate=1.0)
    failed_before = failures.failed
    store = cache if judge.cacheable else None  # where verdicts are cached, if anywhere
    settings = verdict_settings(judge)
    pending: list[tuple[State, Step, str | None]] = []
    for trajectory in trajectories:
        example = (examples or {}).get(trajectory.example_id)
        if judge.needs_example and example is None:
            raise ValueError(f"judge {judge.judge_id} needs the examples (name the task); none for trajectory {trajectory.key}")
        for state, step in decompose(trajectory, example):
            key = judgement_key(judge.judge_id, judge.prompt_version, state.messages, step.text,
                                settings) if store is not None else None
            pending.append((state, step, key))
    cached = store.get_many(k for _, _, k in pending if k) if store is not None else {}
    todo, hits = [], []
    for state, step, key in pending:
        if key is not None and key in cached and not cached[key].failed:  # another make's store may hold failures
            hit = cached[key]
            assert hit.score is not None  # not a failure: a score
            hits.append(Judgement(hit.judge, verdict_for(hit.score, judge.threshold), hit.score, hit.prompt_version))
            _set_judgement(step, hits[-1])
        else:
            todo.append((state, step, key))
    failures.judged += len(hits)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc=f"judging ({judge.judge_id})", unit="step", disable=not (progress and todo))
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            items = [(state, step) for state, step, _ in chunk]
            arrived = 0
            for index, judgement in judge.iter_judgements(items):
                # stored as each arrives: a killed run loses no answered request
                _set_judgement(chunk[index][1], judgement)
                key = chunk[index][2]
                if store is not None and key:
                    store.put_many({key: judgement})
                arrived += 1
                failures.add([judgement])
                bar.update(1)
            if arrived != len(chunk):
                raise RuntimeError(f"judge {judge.judge_id} returned {arrived} judgements for {len(chunk)} steps")
    finally:
        bar.close()
    return {"steps": len(pending), "from_cache": len(pending) - len(todo), "judged": len(todo),
            "failed": failures.failed - failed_before}


def action_rewards(judge: StepJudge, items: Sequence[tuple[State, Step]],
                   failures: FailureBudget | None = None) -> list[float | None]:
    """The judge's score of each freshly sampled action at its state (a step with no observation): the ``swirl``
    reward; ``None`` for a judge failure (never a 0: the sample is left out of the batch), counted in ``failures``.
    No cache: a sampled action is judged once."""
    if judge.needs_example and any(state.example is None for state, _ in items):
        raise ValueError(f"judge {judge.judge_id} needs each state's question; set task to the task the "
                         "trajectories answer")
    judgements = judge.judge_steps(items)
    if len(judgements) != len(items):
        raise RuntimeError(f"judge {judge.judge_id} returned {len(judgements)} judgements for {len(items)} actions")
    if failures is not None:
        failures.add(judgements)
    return [None if j.failed else j.score for j in judgements]
