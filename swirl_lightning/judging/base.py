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

Four optional parts a step judge may have: ``configure_tools(tools)`` takes the run's tools group, for a judge that
runs sampled tool calls itself (the ``reference`` judge builds them with its ``tools.plugins``);
``iter_judgements(items)`` yields ``(index, judgement)`` as each one is ready (in any order), so that
:func:`~swirl_lightning.judging.steps.judge_trajectories` stores each in the cache at once (a killed run loses no
answered request); ``usage`` is a :class:`~swirl_lightning.judging.ratelimit.JudgeUsage` (requests, tokens, cost) that
filter stats and training logs report; ``verdict_settings`` names the attributes besides its id and prompt version
that change a verdict, whose values the cache key holds (:class:`StepJudgeBase` names ``max_message_chars``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from swirl_lightning.core.config import ToolsConfig
from swirl_lightning.core.trajectory import FAILED, Judgement, State, Step  # noqa: F401 - FAILED is re-exported

GOOD, BAD = "GOOD", "BAD"


@runtime_checkable
class StepJudge(Protocol):
    """A judge of single steps. Everything the code reads of a judge is declared here."""

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

    def judge_steps(self, items: Sequence[tuple[State, Step]]) -> list[Judgement]:
        """One judgement per (state, step), in order. A step may have no observation (a sampled action).
        A judge that can fail gives a ``FAILED`` judgement for that step (module docstring)."""


@runtime_checkable
class OutcomeJudge(Protocol):
    """A judge of final answers against gold answers."""

    judge_id: str

    def score_batch(self, predictions: Sequence[str | None], golds: Sequence[str],
                    questions: Sequence[str | None] | None = None) -> list[float | None]:
        """1.0/0.0 per answer (or a partial credit such as token F1); a missing prediction scores 0. ``None`` is a
        judge failure (a served grader that got no verdict), never a 0."""

    def score(self, prediction: str | None, gold: str) -> float:
        """The score of one answer."""


class StepJudgeBase:
    """Defaults for the optional parts of :class:`StepJudge`: subclass it and set ``judge_id`` and ``judge_steps``."""

    judge_id: str  # set by the subclass
    prompt_version = "v1"
    threshold = 0.5
    cacheable = True
    needs_example = False
    verdict_settings: tuple[str, ...] = ("max_message_chars",)
    """Attributes other than ``judge_id`` and ``prompt_version`` that change a verdict: the cache key holds the values
    of those the judge has, so a changed setting never reuses old verdicts. ``max_message_chars`` shortens what the
    judge reads; ``threshold`` is not one (a cached score gets the current threshold's verdict)."""

    def judgement(self, score: float) -> Judgement:
        """The judgement of a score, with this judge's id, threshold and prompt version."""
        return Judgement(self.judge_id, verdict_for(score, self.threshold), float(score), self.prompt_version)

    def failure(self, error: str) -> Judgement:
        """A judge failure: no verdict, no score, and why."""
        return Judgement(self.judge_id, FAILED, None, self.prompt_version, error=error)


class OutcomeJudgeBase:
    """:meth:`OutcomeJudge.score_batch` from a per-answer ``score``."""

    score: Callable[[str | None, str], float]  # the subclass's method

    def score_batch(self, predictions: Sequence[str | None], golds: Sequence[str],
                    questions: Sequence[str | None] | None = None) -> list[float]:
        return [self.score(p, g) for p, g in zip(predictions, golds)]


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
    run's tools group, goes to a judge that runs sampled tool calls itself (``configure_tools(tools)``, as the
    ``reference`` judge has one), so that it builds them as the rollouts do."""
    judge = _factory(name, options, pm, "judge.options")(**(options or {}))
    if tools is not None and hasattr(judge, "configure_tools"):
        judge.configure_tools(tools)
    missing = [a for a in ("judge_id", "prompt_version", "threshold", "cacheable", "needs_example", "judge_steps")
               if not hasattr(judge, a)]
    if missing:
        raise TypeError(f"judge {name!r} is not a step judge: it lacks {', '.join(missing)} "
                        "(see swirl_lightning.judging.base.StepJudge; StepJudgeBase gives the defaults)")
    return judge


def make_outcome_judge(name: str, pm: Any = None, options: dict[str, Any] | None = None) -> OutcomeJudge:
    """An outcome judge by name (built with ``options``), checked against :class:`OutcomeJudge`."""
    judge = _factory(name, options, pm, "judge.outcome_options")(**(options or {}))
    missing = [a for a in ("judge_id", "score_batch", "score") if not hasattr(judge, a)]
    if missing:
        raise TypeError(f"judge {name!r} is not an outcome judge: it lacks {', '.join(missing)} "
                        "(see swirl_lightning.judging.base.OutcomeJudge; OutcomeJudgeBase gives score_batch)")
    return judge
