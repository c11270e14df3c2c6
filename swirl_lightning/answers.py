"""Final answers: number parsing, SQuAD-style normalisation, and the rule-based outcome judges.

``numeric`` (GSM8K: exact after number normalisation), ``qa_em`` and ``qa_f1`` (SQuAD normalisation;
HotpotQA's yes/no rule for F1). Each has ``judge_id`` and ``score(prediction, gold) -> float``.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from fractions import Fraction

_NUMBER_RE = re.compile(r"(?:(?<![\d.])-)?(?:\d+(?:\.\d+)?|\.\d+)(?:/\d+(?:\.\d+)?)?")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def parse_number(text: str | None) -> Fraction | None:
    """The last number in ``text`` as an exact fraction: ``$1,000`` -> 1000, ``3.50`` -> 7/2, ``1/2`` -> 1/2.

    Currency signs, thousands separators and words around the number are ignored (``10 dollars`` -> 10);
    a minus sign counts only when no digit stands right before it (``5-3`` -> 3). ``None`` if no number.
    """
    if text is None:
        return None
    cleaned = _THOUSANDS_RE.sub("", text.replace("\u2212", "-"))
    cleaned = re.sub(r"[$€£]\s*", "", cleaned)
    matches = _NUMBER_RE.findall(cleaned)
    if not matches:
        return None
    numerator, _, denominator = matches[-1].partition("/")
    try:
        value = Fraction(numerator)
        return value / Fraction(denominator) if denominator else value
    except ZeroDivisionError:
        return None


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str | None, gold: str) -> float:
    """1.0 when the normalised prediction equals the normalised gold answer."""
    return float(prediction is not None and normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str | None, gold: str) -> float:
    """Token F1 of the normalised answers (SQuAD); a yes/no answer scores 0 unless equal (HotpotQA)."""
    if prediction is None:
        return 0.0
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if (pred in ("yes", "no", "noanswer") or ref in ("yes", "no", "noanswer")) and pred != ref:
        return 0.0
    pred_tokens, ref_tokens = pred.split(), ref.split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


class NumericJudge:
    """GSM8K outcome: 1.0 when the last number of the prediction equals the gold number exactly."""

    judge_id = "numeric"

    def score(self, prediction: str | None, gold: str) -> float:
        value, expected = parse_number(prediction), parse_number(gold)
        return float(value is not None and value == expected)


class ExactMatchJudge:
    """QA outcome: normalised exact match."""

    judge_id = "qa_em"

    def score(self, prediction: str | None, gold: str) -> float:
        return exact_match(prediction, gold)


class TokenF1Judge:
    """QA outcome: token F1 (filter with an outcome threshold below 1.0 to accept partial answers)."""

    judge_id = "qa_f1"

    def score(self, prediction: str | None, gold: str) -> float:
        return token_f1(prediction, gold)


def outcome_for_task(task: str) -> str:
    """The default outcome judge name of a task: ``numeric`` for gsm8k, ``qa_em`` for hotpotqa and jsonl."""
    from swirl_lightning.tasks import TASKS

    if task not in TASKS:
        raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")
    outcome = TASKS[task].outcome
    return "qa_em" if outcome == "qa" else outcome
