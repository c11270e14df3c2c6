"""Judge options as dataclasses, and the parts of the judge protocols every judge has (issue 24, item 4)."""

import dataclasses
import inspect
import re

import pluggy
import pytest

import swirl_lightning.core.hookspecs
import swirl_lightning.judging.base
from swirl_lightning import hookimpl
from swirl_lightning.cli import main as swirl
from swirl_lightning.core.config import ToolsConfig
from swirl_lightning.core.trajectory import State, Step, parse_action
from swirl_lightning.judging.base import (
    OutcomeJudgeBase,
    StepJudgeBase,
    available_judges,
    make_judge,
    make_outcome_judge,
    make_step_judge,
    step_judge_id,
)
from swirl_lightning.judging.options import JudgeOptions, describe_options, options_class

BUILTINS = available_judges()


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_builtin_judge_declares_its_options_as_a_dataclass_its_constructor_takes(name) -> None:
    factory = BUILTINS[name]
    declared = options_class(factory)
    assert declared is not None and issubclass(declared, JudgeOptions) and dataclasses.is_dataclass(declared)
    parameters = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return  # the served judges: their constructors take the fields themselves
    for field in dataclasses.fields(declared):  # a constructor with its own parameters has the same defaults
        assert field.name in parameters, f"{name}: {field.name} is an option its constructor does not take"
        assert parameters[field.name].default == field.default, f"{name}: {field.name} defaults differ"


def test_the_judge_id_comes_from_the_options_without_a_client_a_key_or_a_model(monkeypatch) -> None:
    monkeypatch.delenv("NO_SUCH_JUDGE_KEY", raising=False)
    served = {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "NO_SUCH_JUDGE_KEY"}
    assert step_judge_id("served", served) == "served:m"  # building it would need the key
    with pytest.raises(ValueError, match="NO_SUCH_JUDGE_KEY is not set"):
        make_step_judge("served", served)
    assert step_judge_id("process", {"model": "no/such-model", "model_name": "mine"}) == "process:mine"
    assert step_judge_id("reference") == "reference" and step_judge_id("random", {"p": 0.2}) == "random"


def test_a_bad_value_is_found_by_the_options_before_anything_is_built() -> None:
    with pytest.raises(ValueError, match=re.escape("judge.options: judge 'process' has no option 'modle'")):
        make_step_judge("process", {"modle": "x"})
    with pytest.raises(ValueError, match="batch_size: expected a positive integer, got 0"):
        make_step_judge("process", {"model": "no/such-model", "batch_size": 0})  # no load was tried
    with pytest.raises(ValueError, match="judge.options.p: expected a probability"):
        make_step_judge("random", {"p": 1.5})
    with pytest.raises(ValueError, match="concurrency: expected a positive integer"):
        make_step_judge("served", {"base_url": "http://127.0.0.1:9/v1", "model": "m", "concurrency": 0})
    with pytest.raises(ValueError, match="NAME of an environment variable"):
        step_judge_id("served", {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "sk-live.x"})


@dataclasses.dataclass(frozen=True)
class StrictOptions(JudgeOptions):
    """Options of a third party's judge."""

    score: float
    """What every step scores."""
    label: str = "strict"
    """The judge id."""

    def judge_id(self) -> str:
        return self.label


class StrictJudge(StepJudgeBase):
    """A third party's judge that declares its options."""

    Options = StrictOptions

    def __init__(self, **options) -> None:
        self.options = StrictOptions(**options)
        self.judge_id = self.options.label

    def judge_steps(self, items):
        return [self.judgement(self.options.score) for _ in items]


class Grades(OutcomeJudgeBase):
    judge_id = "grades"

    def score(self, prediction, gold):
        return None if prediction == "?" else float(prediction == gold)


def plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("swirl_lightning")
    pm.add_hookspecs(swirl_lightning.core.hookspecs)
    pm.register(swirl_lightning.judging.base)

    class Plugin:
        @hookimpl
        def register_judges(self, register) -> None:
            register(StrictJudge, name="strict")
            register(Grades, name="grades")

    pm.register(Plugin(), name="third-party")
    return pm


def test_a_third_party_judge_declares_its_options_with_a_dataclass() -> None:
    pm = plugin_manager()
    assert make_judge("strict", pm, score=1.0, label="s").judge_id == "s"
    assert step_judge_id("strict", {"score": 0.0}, pm) == "strict"
    with pytest.raises(ValueError, match=re.escape("judge.options: judge 'strict' needs score (a number), missing")):
        make_step_judge("strict", {}, pm)
    with pytest.raises(ValueError, match=re.escape("judge.options.label: expected a string, got 3")):
        make_step_judge("strict", {"score": 1.0, "label": 3}, pm)
    text = describe_options("strict", StrictJudge)
    assert "score (a number; required): What every step scores." in text
    assert "label (a string; default 'strict'): The judge id." in text


def test_the_base_classes_give_every_part_of_the_protocols() -> None:
    pm = plugin_manager()
    judge = make_step_judge("strict", {"score": 1.0}, pm, tools=ToolsConfig())  # configure_tools: a no-op
    assert judge.usage is None and judge.verdict_setting_values() == {}
    answer = Step("<answer>1</answer>", parse_action("<answer>1</answer>", {}))
    items = [(State("q", 0, [{"role": "user", "content": "q"}]), answer)] * 2
    assert [(i, j.verdict) for i, j in judge.iter_judgements(items)] == [(0, "GOOD"), (1, "GOOD")]
    grades = make_outcome_judge("grades", pm)
    assert (grades.prompt_version, grades.cacheable, grades.usage) == (None, False, None)
    judged = grades.grade_batch(["1", "2", "?"], ["1", "1", "1"])
    assert [j.verdict for j in judged] == ["GOOD", "BAD", "FAILED"] and judged[2].error


def test_swirl_judges_list_shows_each_judges_options(capsys) -> None:
    assert swirl(["judges", "list", "served", "random"]) == 0
    out = capsys.readouterr().out
    assert "served:\n  base_url (a string; required)" in out and "timeout_s (a number; default 60.0)" in out
    assert "random:\n  p (a number; default 0.5): The probability of GOOD" in out
