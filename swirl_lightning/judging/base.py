"""What a judge is: the step-judge and outcome-judge protocols, and the registry of judges by name.

A *step judge* sees the state before a step and the step (a :class:`~swirl_lightning.core.trajectory.State` and
a :class:`~swirl_lightning.core.trajectory.Step`) and gives a :class:`~swirl_lightning.core.trajectory.Judgement`:
a score and a GOOD/BAD verdict. One method serves every use: filtering recorded steps (``swirl filter``), scoring
freshly sampled actions as the ``swirl`` reward (a step without an observation: no tool ran), and the validation
GOOD rate. An *outcome judge* scores final answers against gold answers.

Judges register through the ``register_judges`` hook, the built-ins included (:mod:`.default_plugins` is their
plugin, named here by module path as an entry point names a third party's, so that this module imports no judge), and
are built by name with :func:`make_judge` (``judge.name`` and ``judge.options`` in every config), their options
checked against the judge's signature first (:mod:`.options`).

A judge that can fail (a served LLM: a request that still fails after its retries, a reply with no verdict) returns
a *failure* for that step, ``Judgement(verdict=FAILED, score=None, error=...)``, never a BAD or a 0: filtering leaves
the step out (see :mod:`.filter`), the ``swirl`` reward leaves the sample out of its batch, and the run counts the
failures and stops above ``judge.max_failure_rate`` (:class:`~swirl_lightning.judging.steps.FailureBudget`).

Every part the code calls on a judge is declared by its protocol, and :class:`StepJudgeBase` and
:class:`OutcomeJudgeBase` give the parts a judge may leave out their defaults, so no caller asks a judge whether it
has a part. Besides judging, a step judge has: ``configure_tools(tools)``, which takes the run's tools group (the
``reference`` judge runs sampled tool calls itself, built with its ``tools.plugins``; a no-op by default);
``iter_judgements(items)``, which yields ``(index, judgement)`` as each one is ready (in any order), so that
:func:`~swirl_lightning.judging.steps.judge_trajectories` stores each in the cache at once (a killed run loses no
answered request; by default the judgements of ``judge_steps`` in order); ``usage``, a
:class:`~swirl_lightning.judging.ratelimit.JudgeUsage` (requests, tokens, cost) that filter stats and training logs
report, or ``None`` for a judge that counts nothing; and ``verdict_setting_values()``, the values of the settings
besides its id and prompt version that change a verdict (``verdict_settings`` names them), which the cache key holds.
An outcome judge has ``grade_batch`` (its grades as judgements, failures with their errors), ``prompt_version``,
``cacheable`` and ``usage``.

A judge declares its options as a dataclass (``Options``, :mod:`.options`); a factory without one is checked against
its signature.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from swirl_lightning.core.config import ToolsConfig
from swirl_lightning.core.trajectory import FAILED, Judgement, State, Step  # noqa: F401 - FAILED is re-exported
from swirl_lightning.judging.ratelimit import JudgeUsage

GOOD, BAD = "GOOD", "BAD"


@runtime_checkable
class StepJudge(Protocol):
    """A judge of single steps. Everything the code reads of a judge is declared here (:class:`StepJudgeBase` gives
    the defaults of all but ``judge_id`` and ``judge_steps``)."""

    judge_id: str
    """Names the judge in every judgement and in the cache key (e.g. ``process:smollm2-135m-instruct``)."""
    prompt_version: str
    """Bumped when the prompt or the rule changes, so cached judgements of the old one are not reused."""
    threshold: float
    """A step is GOOD when its score is at least this (and above 0)."""
    cacheable: bool
    """Whether judgements may be cached by (judge id, prompt version, verdict settings, state, step text)."""
    needs_example: bool
    """Whether the judge reads each state's :class:`~swirl_lightning.core.trajectory.Example` (gold data)."""
    usage: JudgeUsage | None
    """What the judge used (requests, tokens, cost) for the logs and filter stats; ``None`` when it counts nothing."""

    def judge_steps(self, items: Sequence[tuple[State, Step]]) -> list[Judgement]:
        """One judgement per (state, step), in order. A step may have no observation (a sampled action).
        A judge that can fail gives a ``FAILED`` judgement for that step (module docstring)."""

    def iter_judgements(self, items: Sequence[tuple[State, Step]]) -> Iterator[tuple[int, Judgement]]:
        """``(index, judgement)`` of every item, each as soon as it is ready, in any order."""

    def configure_tools(self, tools: ToolsConfig) -> None:
        """Take the run's tools group (for a judge that runs sampled tool calls itself)."""

    def verdict_setting_values(self) -> dict[str, Any]:
        """The values of the settings other than ``judge_id`` and ``prompt_version`` that change a verdict."""


@runtime_checkable
class OutcomeJudge(Protocol):
    """A judge of final answers against gold answers (:class:`OutcomeJudgeBase` gives the defaults of all but
    ``judge_id`` and ``score``)."""

    judge_id: str
    prompt_version: str | None
    """The version of the rule or prompt, when the judge has one: its grades are cached only then."""
    cacheable: bool
    """Whether grades may be cached by (judge id, prompt version, question, prediction, gold answer)."""
    usage: JudgeUsage | None
    """What the judge used (requests, tokens, cost); ``None`` when it counts nothing."""

    def score_batch(self, predictions: Sequence[str | None], golds: Sequence[str],
                    questions: Sequence[str | None] | None = None) -> list[float | None]:
        """1.0/0.0 per answer (or a partial credit such as token F1); a missing prediction scores 0. ``None`` is a
        judge failure (a served grader that got no verdict), never a 0."""

    def score(self, prediction: str | None, gold: str) -> float | None:
        """The score of one answer."""

    def grade_batch(self, predictions: Sequence[str | None], golds: Sequence[str],
                    questions: Sequence[str | None] | None = None) -> list[Judgement]:
        """One judgement per answer: GOOD (a score of 1), BAD, or a failure with its error."""


STEP_JUDGE_PARTS = ("judge_id", "prompt_version", "threshold", "cacheable", "needs_example", "judge_steps", "usage",
                    "iter_judgements", "configure_tools", "verdict_setting_values")
OUTCOME_JUDGE_PARTS = ("judge_id", "score_batch", "score", "grade_batch", "prompt_version", "cacheable", "usage")


class StepJudgeBase:
    """Defaults for the parts of :class:`StepJudge`: subclass it and set ``judge_id`` and ``judge_steps``."""

    judge_id: str  # set by the subclass
    prompt_version = "v1"
    threshold = 0.5
    cacheable = True
    needs_example = False
    usage: JudgeUsage | None = None
    verdict_settings: tuple[str, ...] = ("max_message_chars",)
    """Attributes other than ``judge_id`` and ``prompt_version`` that change a verdict: the cache key holds the values
    of those the judge has, so a changed setting never reuses old verdicts. ``max_message_chars`` shortens what the
    judge reads; ``threshold`` is not one (a cached score gets the current threshold's verdict)."""

    def judge_steps(self, items: Sequence[tuple[State, Step]]) -> list[Judgement]:
        raise NotImplementedError(f"{type(self).__name__} must define judge_steps")

    def iter_judgements(self, items: Sequence[tuple[State, Step]]) -> Iterator[tuple[int, Judgement]]:
        """The judgements of :meth:`judge_steps`, in order (a judge that answers out of order overrides this)."""
        judgements = self.judge_steps(items)
        if len(judgements) != len(items):
            raise RuntimeError(f"judge {self.judge_id} returned {len(judgements)} judgements for {len(items)} steps")
        yield from enumerate(judgements)

    def configure_tools(self, tools: ToolsConfig) -> None:
        """Nothing: a judge that runs no tool call needs no tools."""

    def verdict_setting_values(self) -> dict[str, Any]:
        """The values of the ``verdict_settings`` this judge has (a name it lacks is left out)."""
        return {name: getattr(self, name) for name in self.verdict_settings if hasattr(self, name)}

    def judgement(self, score: float) -> Judgement:
        """The judgement of a score, with this judge's id, threshold and prompt version."""
        return Judgement(self.judge_id, verdict_for(score, self.threshold), float(score), self.prompt_version)

    def failure(self, error: str) -> Judgement:
        """A judge failure: no verdict, no score, and why."""
        return Judgement(self.judge_id, FAILED, None, self.prompt_version, error=error)


class OutcomeJudgeBase:
    """Defaults for the parts of :class:`OutcomeJudge`: subclass it and set ``judge_id`` and ``score``."""

    judge_id: str  # set by the subclass
    prompt_version: str | None = None
    cacheable = False
    usage: JudgeUsage | None = None

    def score(self, prediction: str | None, gold: str) -> float | None:
        raise NotImplementedError(f"{type(self).__name__} must define score")

    def score_batch(self, predictions: Sequence[str | None], golds: Sequence[str],
                    questions: Sequence[str | None] | None = None) -> list[float | None]:
        """:meth:`score` of each answer."""
        return [self.score(p, g) for p, g in zip(predictions, golds)]

    def grade_batch(self, predictions: Sequence[str | None], golds: Sequence[str],
                    questions: Sequence[str | None] | None = None) -> list[Judgement]:
        """The scores of :meth:`score_batch` as judgements: a ``None`` score is a failure, 1 is GOOD."""
        return [Judgement(self.judge_id, FAILED, None, self.prompt_version, error="the outcome judge gave no score")
                if score is None else Judgement(self.judge_id, GOOD if score >= 1 else BAD, float(score),
                                                self.prompt_version)
                for score in self.score_batch(predictions, golds, questions)]


def verdict_for(score: float, threshold: float) -> str:
    """``GOOD`` when ``score >= threshold``; a score of 0 (an invalid step, a failed call) is BAD at any threshold."""
    return GOOD if score > 0 and score >= threshold else BAD


# ----------------------------------------------------------------------------------------------------
# The registry

DEFAULT_PLUGIN = "swirl_lightning.judging.default_plugins"
"""The plugin of the built-in judges, loaded by name (as llm loads its ``default_plugins``): each judge imports this
module, so this module must not import them."""

def available_judges(pm: Any = None) -> dict[str, Callable[..., Any]]:
    """Judge name -> factory, from every plugin's ``register_judges`` (the built-ins always included).

    A plugin whose hook raises is skipped with a warning naming its distribution; a name registered twice is an
    error naming both plugins.
    """
    from swirl_lightning.core.plugins import collect_registrations

    def check(factory: Any, name: str | None, owner: str) -> tuple[str, Callable[..., Any]]:
        judge_name = name or getattr(factory, "__name__", None)
        if not callable(factory) or not judge_name:
            raise ValueError(f"{owner}: register(factory, name=...) expects a callable factory and a name")
        return judge_name, factory

    return collect_registrations("register_judges", check, builtin=DEFAULT_PLUGIN, pm=pm)


def _factory(name: str, options: dict[str, Any] | None, pm: Any, where: str) -> Callable[..., Any]:
    """The factory of judge ``name``, once ``options`` are checked against it (:func:`.options.check_options`): a
    bad name or option is a ``ValueError`` naming it, found before the judge (a model, a client) is built."""
    from swirl_lightning.judging.options import check_options

    factories = available_judges(pm)
    if name not in factories:
        raise ValueError(f"judge: expected one of {', '.join(sorted(factories))}, got {name!r}")
    check_options(name, factories[name], options or {}, where)
    return factories[name]


def check_judge_options(name: str, options: dict[str, Any] | None, where: str = "judge.options",
                        pm: Any = None) -> None:
    """Raise ``ValueError`` for an unknown judge name or a bad option, without building anything."""
    _factory(name, options, pm, where)


def make_judge(name: str, pm: Any = None, **options: Any) -> Any:
    """A judge by registered name, built with ``options`` (e.g. ``make_judge("process", model="tiny-random")``)."""
    return _factory(name, options, pm, "options")(**options)


def make_step_judge(name: str, options: dict[str, Any] | None = None, pm: Any = None,
                    tools: ToolsConfig | None = None) -> StepJudge:
    """A step judge by name, checked against :class:`StepJudge` (a clear error naming what it lacks). ``tools``, the
    run's tools group, goes to its ``configure_tools`` (the ``reference`` judge runs sampled tool calls itself), so
    that it builds them as the rollouts do."""
    judge = _factory(name, options, pm, "judge.options")(**(options or {}))
    _conforms(judge, name, STEP_JUDGE_PARTS, "a step judge", "StepJudge", "StepJudgeBase")
    if tools is not None:
        judge.configure_tools(tools)
    return judge


def step_judge_id(name: str, options: dict[str, Any] | None = None, pm: Any = None) -> str:
    """The id of the step judge ``name`` with ``options``, without building it when its ``Options`` know the id (a
    served judge then makes no client and reads no API key, a local one loads no model)."""
    from swirl_lightning.judging.options import known_judge_id

    known = known_judge_id(_factory(name, options, pm, "judge.options"), options or {})
    return known if known is not None else make_step_judge(name, options, pm).judge_id


def make_outcome_judge(name: str, pm: Any = None, options: dict[str, Any] | None = None) -> OutcomeJudge:
    """An outcome judge by name (built with ``options``), checked against :class:`OutcomeJudge`."""
    judge = _factory(name, options, pm, "judge.outcome_options")(**(options or {}))
    _conforms(judge, name, OUTCOME_JUDGE_PARTS, "an outcome judge", "OutcomeJudge", "OutcomeJudgeBase")
    return judge


def _conforms(judge: Any, name: str, parts: Sequence[str], kind: str, protocol: str, base: str) -> None:
    """Raise ``TypeError`` naming the parts of the protocol a freshly built judge lacks (or has as ``None`` where
    the protocol wants a value: an outcome judge's ``prompt_version`` of ``None`` is no step judge's version): found
    once, when it is built, so that the code that uses it calls every part without asking."""
    optional = {"usage"} | ({"prompt_version"} if protocol == "OutcomeJudge" else set())  # may be None
    missing = [part for part in parts if getattr(judge, part, None) is None and part not in optional]
    if missing:
        raise TypeError(f"judge {name!r} is not {kind}: it lacks {', '.join(missing)} "
                        f"(see swirl_lightning.judging.base.{protocol}; {base} gives the defaults)")
