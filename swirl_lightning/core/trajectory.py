"""The trajectory format: examples, actions, steps, trajectories, the states before actions, and their JSONL files.

A *trajectory* is one sampled multi-step answer to one question: a prompt (chat messages), then steps.
Each step is one model turn (optional thinking, then exactly one action) and, for a tool call, the
tool's result, which goes back to the model as the next user turn ``QUERY -> RESULT``.

:func:`decompose` turns a trajectory with K actions into K pairs: the :class:`State` before action k
(every message before it) and step k as target. Tool results are never targets.

JSONL files hold one record per line with a ``schema_version``: 2 since the gold answer is kept
(``Trajectory.gold_answer``); a version-1 record reads as version 2 with no gold answer. Writing is append-safe: each
record is one ``write()`` of a whole line followed by flush and fsync, so a crash can at worst leave a *torn last
line* (no trailing newline). Only in a file a writer owns (``generate``'s shards) is such a line skipped
(``torn_tail="skip"``), and :class:`JsonlWriter` cuts it off before it appends; in a file a user gave, a bad last line
is an error like any other. Every bad line is an error naming ``file:line`` and the field: numbers must be finite
(JSON's ``NaN`` and ``Infinity`` are refused) and integers fit in 64 bits, keys are unique, nesting is bounded
(:mod:`swirl_lightning.core.safe_load`), the ``schema_version`` known, and a trajectory's prompt a non-empty list of
messages with a ``role`` and a ``content``. Writes never follow a symlink: a file is written under a temporary name
and renamed over the target, which replaces a link instead of writing through it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import typing
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from swirl_lightning.core.records import FormatError, from_dict, to_dict
from swirl_lightning.core.safe_load import loads_json

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

SCHEMA_VERSION = 3
"""3: ``Step.logprobs`` and ``Step.policy_version`` (what sampled each action). 2: ``Trajectory.gold_answer`` (the
example's answer, kept for reading a rollout later). 1: the first format."""
ANSWER_TAG = "answer"

ActionKind = Literal["tool", "answer", "invalid"]


@dataclass
class Example:
    """One question with its gold answer."""

    id: str
    question: str
    answer: str
    """Gold answer (a number for GSM8K, a short span for HotPotQA)."""
    source: str
    """Data set name, e.g. ``gsm8k`` or ``hotpotqa``."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Source-specific extras: the worked solution, supporting titles, ..."""


@dataclass
class Action:
    """The parsed action of one model turn: a tool call, a final answer, or invalid with a reason."""

    kind: ActionKind
    tool: str | None = None
    """Tool name, for ``kind == "tool"``."""
    tag: str | None = None
    """The tag the model wrote (a tool's tag, or ``answer``)."""
    query: str | None = None
    """The text inside the tool tag."""
    answer: str | None = None
    """The text inside ``<answer>``."""
    reason: str | None = None
    """Why the turn is invalid, for ``kind == "invalid"``."""

    def __post_init__(self) -> None:
        if self.kind not in ("tool", "answer", "invalid"):
            raise ValueError(f"kind: expected 'tool', 'answer' or 'invalid', got {self.kind!r}")


FAILED = "FAILED"
"""The verdict of a judge failure: the judge gave no verdict (a request still failing after its retries, a reply
with no verdict in it). A failure is never a score: the step is left out of filtering and of the reward batch."""


@dataclass
class Judgement:
    """One judge's verdict on one step (or on a whole trajectory's outcome)."""

    judge: str
    """Judge id, e.g. ``process:smollm2-135m-instruct`` or ``reference``."""
    verdict: str
    """``GOOD`` or ``BAD``, or ``FAILED`` when the judge gave no verdict (see ``error``)."""
    score: float | None
    """P(GOOD) for model judges, 1.0/0.0 for rule-based ones; ``None`` for a failure (never a 0)."""
    prompt_version: str | None = None
    error: str | None = None
    """Why the judge failed, for a ``FAILED`` verdict."""

    def __post_init__(self) -> None:
        if (self.score is None) != (self.verdict == FAILED):
            raise ValueError(f"score: expected a number with a verdict and null with {FAILED}, "
                             f"got {self.score!r} with {self.verdict!r}")

    @property
    def failed(self) -> bool:
        """Whether this is a judge failure rather than a verdict."""
        return self.verdict == FAILED


@dataclass
class Step:
    """One model turn and, for a tool call, what the tool returned."""

    text: str
    """The model turn's text as generated (thinking plus action)."""
    action: Action
    token_ids: list[int] | None = None
    """The sampled token ids of this turn, when known (training uses exactly these)."""
    logprobs: list[float] | None = None
    """The sampling policy's log-prob of each of ``token_ids`` (of the model's own distribution, before temperature
    and top-p), when the engine reported them."""
    policy_version: int | None = None
    """The version of the weights that sampled this turn (the optimizer step of their last sync; 0: the weights the
    run started with)."""
    observation: str | None = None
    """The user turn that followed: ``QUERY -> RESULT`` for a tool call, a corrective note for an
    invalid turn, ``None`` after an answer."""
    observation_token_ids: list[int] | None = None
    """Token ids fed to the model for the observation (user turn plus the next assistant header)."""
    tool_error: bool = False
    judgements: list[Judgement] = field(default_factory=list)
    reward: float | None = None
    """The reward used for training this step, when one was assigned."""


@dataclass
class Trajectory:
    """One sampled multi-step answer to one example."""

    example_id: str
    sample_index: int
    prompt: list[dict[str, str]]
    """Chat messages before the first action (system and user turns)."""
    steps: list[Step] = field(default_factory=list)
    final_answer: str | None = None
    outcome: float | None = None
    """1.0 when the final answer matches the gold answer, 0.0 when not, ``None`` if not judged."""
    gold_answer: str | None = None
    """The example's gold answer, when the trajectory was rolled out on an example (``None`` in version-1 files)."""
    prompt_token_ids: list[int] | None = None
    """Token ids of the rendered prompt including the first assistant header, when known."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Policy model, prompt-template version, timings, ..."""
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> tuple[str, int]:
        """The (example id, sample index) pair that identifies this trajectory in a run."""
        return (self.example_id, self.sample_index)

    def messages(self, upto_step: int | None = None) -> list[dict[str, str]]:
        """Chat messages of the prompt and the first ``upto_step`` steps (all steps when ``None``)."""
        out = [dict(m) for m in self.prompt]
        for step in self.steps[:upto_step]:
            out.append({"role": "assistant", "content": step.text})
            if step.observation is not None:
                out.append({"role": "user", "content": step.observation})
        return out


@dataclass
class State:
    """The state before one action (s_k): everything the policy saw when it chose action k of a trajectory.

    The one type for "a state" everywhere: judges see its messages, ``swirl`` samples fresh actions from its
    token ids, the data module deduplicates the states of many trajectories.
    """

    example_id: str
    step_index: int
    """k: how many actions came before this state."""
    messages: list[dict[str, str]]
    """Chat messages before action k: the prompt, earlier actions, earlier tool results."""
    token_ids: list[int] | None = None
    """The token ids the policy saw, ending with the assistant header of turn k, when known."""
    example: Example | None = None
    """The question with its gold data, for judges that need it (the reference judge)."""


def decompose(trajectory: Trajectory, example: Example | None = None) -> list[tuple[State, Step]]:
    """Split a trajectory with K actions into K (state before action k, step k) pairs.

    Tool results are part of later states, never targets. ``example`` is attached to every state.
    """
    return [(State(trajectory.example_id, k, trajectory.messages(upto_step=k), example=example), step)
            for k, step in enumerate(trajectory.steps)]


# ----------------------------------------------------------------------------------------------------
# Action parsing

_TAG_RE = re.compile(r"<([A-Za-z_][\w\-]*)>(.*?)</\1>", re.DOTALL)
_OPEN_TAG_RE = re.compile(r"<([A-Za-z_][\w\-]*)>")
# Tags a model may use around its thinking; they are not actions.
THINKING_TAGS = frozenset({"think", "thinking", "reasoning", "thought"})


def parse_action(text: str, tool_tags: Mapping[str, str]) -> Action:
    """Parse the single action in a model turn.

    ``tool_tags`` maps each registered tool's tag to the tool's name. ``<answer>..</answer>`` is always
    known. No action, two actions, an unknown tag, an unclosed tag or an empty action are recorded as an
    invalid action with the reason; parsing never raises.
    """
    known = set(tool_tags) | {ANSWER_TAG}
    actions: list[tuple[str, str]] = []
    unknown: list[str] = []
    for match in _TAG_RE.finditer(text):
        tag, body = match.group(1), match.group(2)
        if tag in known:
            actions.append((tag, body.strip()))
        elif tag not in THINKING_TAGS:
            unknown.append(tag)
    if len(actions) > 1:
        listed = ", ".join(f"<{t}>" for t, _ in actions)
        return Action(kind="invalid", reason=f"{len(actions)} actions in one turn ({listed}); write exactly one")
    if not actions:
        if unknown:
            return Action(kind="invalid", tag=unknown[0], reason=f"unknown tag <{unknown[0]}>")
        unclosed = [t for t in _OPEN_TAG_RE.findall(text) if t in known]
        if unclosed:
            return Action(kind="invalid", tag=unclosed[0], reason=f"unclosed tag <{unclosed[0]}>")
        return Action(kind="invalid", reason="no action")
    tag, body = actions[0]
    if not body:
        return Action(kind="invalid", tag=tag, reason=f"empty <{tag}>")
    if tag == ANSWER_TAG:
        return Action(kind="answer", tag=tag, answer=body)
    return Action(kind="tool", tool=tool_tags[tag], tag=tag, query=body)


# ----------------------------------------------------------------------------------------------------
# JSONL files


def read_jsonl(path: str | os.PathLike, cls: type[T], *, torn_tail: Literal["error", "skip"] = "error",
               allow_empty: bool = False) -> Iterator[T]:
    """Read records of dataclass ``cls`` from a JSONL file.

    Blank lines are skipped. Any bad line raises :class:`FormatError` naming ``file:line`` and the field, except,
    with ``torn_tail="skip"`` (a file this library writes and owns), a torn last line: a crash mid-write leaves one
    without a trailing newline, and it is skipped with a warning. ``schema_version`` must be one this library knows;
    an older one is read as the current version (every field added since has a default). A file without a record is
    a :class:`FormatError` unless ``allow_empty`` (a writer's own file, read back to resume).
    """
    path = Path(path)
    with path.open("rb") as fh:
        lines = fh.read().split(b"\n")
    last = len(lines) - 1  # index of the text after the final newline ("" when the file ends cleanly)
    has_version = "schema_version" in {f.name for f in dataclasses.fields(cls)}
    if not allow_empty and not any(raw.strip() for raw in lines):
        raise FormatError(f"{path}: no records: the file is empty; expected one {cls.__name__} (a JSON object) per line")
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        where = f"{path}:{i + 1}"
        try:
            data = loads_json(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            if i == last and torn_tail == "skip":
                warnings.warn(f"{where}: skipping a torn last line (an interrupted write): {err}", stacklevel=2)
                return
            raise FormatError(f"{where}: not valid JSON: {err}") from None
        except ValueError as err:
            raise FormatError(f"{where}: {err}") from None
        if has_version and isinstance(data, dict):
            version = data.get("schema_version", SCHEMA_VERSION)
            if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
                raise FormatError(f"{where}: schema_version {version} is newer than this library's ({SCHEMA_VERSION}); "
                                  "upgrade swirl-lightning")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise FormatError(f"{where}: schema_version: expected a version this library knows (1..{SCHEMA_VERSION}), "
                                  f"got {version!r:.40}")
            if version < SCHEMA_VERSION:
                data = {**data, "schema_version": SCHEMA_VERSION}
        try:
            record = from_dict(cls, data)
        except FormatError as err:
            raise FormatError(f"{where}: {err}") from None
        if isinstance(record, Trajectory):
            _check_trajectory(record, where)
        yield record


def _check_trajectory(trajectory: Trajectory, where: str) -> None:
    """What the types alone do not say: a prompt of messages, actions with their parts, a result between steps."""
    if not trajectory.prompt:
        raise FormatError(f"{where}: prompt: expected a non-empty list of chat messages")
    for k, message in enumerate(trajectory.prompt):
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                got = "missing" if key not in message else f"got {message[key]!r:.40}"
                raise FormatError(f"{where}: prompt[{k}].{key}: expected a string, {got}")
    for k, step in enumerate(trajectory.steps):
        action = step.action
        needed = {"tool": ("tool", "query"), "answer": ("answer",), "invalid": ()}[action.kind]
        for name in needed:
            if not isinstance(getattr(action, name), str):
                raise FormatError(f"{where}: steps[{k}].action.{name}: expected a string for a {action.kind} action")
        if step.observation is None and k < len(trajectory.steps) - 1:
            raise FormatError(f"{where}: steps[{k}].observation: expected the result the model saw before step {k + 1}")
        for name in ("token_ids", "observation_token_ids"):
            ids = getattr(step, name)
            if ids is not None and any(i < 0 for i in ids):
                raise FormatError(f"{where}: steps[{k}].{name}: expected token ids >= 0")
    if trajectory.prompt_token_ids is not None and any(i < 0 for i in trajectory.prompt_token_ids):
        raise FormatError(f"{where}: prompt_token_ids: expected token ids >= 0")


def read_trajectories(path: str | os.PathLike, *, torn_tail: Literal["error", "skip"] = "error",
                      allow_empty: bool = False) -> list[Trajectory]:
    """All trajectories in a JSONL file (see :func:`read_jsonl`)."""
    return list(read_jsonl(path, Trajectory, torn_tail=torn_tail, allow_empty=allow_empty))


def _open_no_follow(path: Path, flags: int) -> int:
    """``os.open`` that refuses to write through a symlink (``O_NOFOLLOW`` where the platform has it)."""
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o644)


class JsonlWriter:
    """Append-safe JSONL writer: one whole line per ``write()``, flushed and fsynced; never through a symlink.

    Opening an existing file cuts off a torn last line left by a crash, so appends start clean.
    """

    def __init__(self, path: str | os.PathLike, *, fsync: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        if self.path.is_symlink():
            raise FileExistsError(f"{self.path} is a symlink; writes never follow one: remove it or choose another path")
        _truncate_torn_tail(self.path)
        self._fh = os.fdopen(_open_no_follow(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab")

    def write(self, record: Any) -> None:
        """Append one record (a dataclass or a dict) as one line."""
        data = to_dict(record) if dataclasses.is_dataclass(record) else record
        line = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"
        self._fh.write(line.encode("utf-8"))
        self._fh.flush()
        if self._fsync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _temporary(path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    if os.path.lexists(tmp):
        tmp.unlink()  # a leftover of a crash, or a planted link: unlink removes the link itself
    return tmp


def write_jsonl(path: str | os.PathLike, records: typing.Iterable[Any]) -> None:
    """Write records to a new file atomically (temporary file, then rename over the target, link or not)."""
    path = Path(path)
    tmp = _temporary(path)
    with JsonlWriter(tmp, fsync=False) as writer:
        for record in records:
            writer.write(record)
        os.fsync(writer._fh.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, then rename): never half a file, never through a link."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    with os.fdopen(_open_no_follow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _truncate_torn_tail(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        cut = data.rfind(b"\n") + 1  # 0 when the whole file is one torn line
        warnings.warn(f"{path}: dropping a torn last line of {len(data) - cut} bytes (an interrupted write)", stacklevel=3)
        fh.truncate(cut)
