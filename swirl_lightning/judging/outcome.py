"""The rule-based outcome judges: ``numeric`` (GSM8K: the last number of the answer equals the gold number),
``qa_em`` (normalised exact match) and ``qa_f1`` (token F1, HotpotQA's yes/no rule). The LM ``grader`` is in
:mod:`.local_lm`."""

from __future__ import annotations

from dataclasses import dataclass

from swirl_lightning.core.answers import exact_match, parse_number, token_f1
from swirl_lightning.judging.base import OutcomeJudgeBase
from swirl_lightning.judging.options import JudgeOptions


@dataclass(frozen=True)
class NoOptions(JudgeOptions):
    """A rule-based outcome judge has no options."""


class NumericJudge(OutcomeJudgeBase):
    """GSM8K outcome: 1.0 when the last number of the prediction equals the gold number exactly."""

    Options = NoOptions
    judge_id = "numeric"

    def score(self, prediction: str | None, gold: str) -> float:
        value, expected = parse_number(prediction), parse_number(gold)
        return float(value is not None and value == expected)


class ExactMatchJudge(OutcomeJudgeBase):
    """QA outcome: normalised exact match."""

    Options = NoOptions
    judge_id = "qa_em"

    def score(self, prediction: str | None, gold: str) -> float:
        return exact_match(prediction, gold)


class TokenF1Judge(OutcomeJudgeBase):
    """QA outcome: token F1 (filter with an outcome threshold below 1.0 to accept partial answers)."""

    Options = NoOptions
    judge_id = "qa_f1"

    def score(self, prediction: str | None, gold: str) -> float:
        return token_f1(prediction, gold)
