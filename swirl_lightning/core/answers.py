"""Reading answers: the one place numbers are parsed and compared, and SQuAD-style text normalisation.

Every number in the library goes through here: final answers (:func:`parse_number`), gold answers
(:func:`normalise_number`), tool results against gold values (:func:`matches_reference`), annotated results
(:func:`exact_number`, :func:`round_half_up`). The outcome judges built on them are in
:mod:`swirl_lightning.judging.outcome`.
"""

from __future__ import annotations

import math
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


_WHOLE_NUMBER_RE = re.compile(r"-?(\d+(\.\d*)?|\.\d+)")


def normalise_number(text: str) -> str | None:
    """``"1,000"`` -> ``"1000"``: a text that is one number, thousands separators removed; ``None`` otherwise."""
    cleaned = text.strip().replace(",", "")
    return cleaned if _WHOLE_NUMBER_RE.fullmatch(cleaned) else None


def exact_number(text: str) -> Fraction | None:
    """A text that is one number (``1,000.50``, ``1e+20``) as an exact fraction; ``None`` otherwise (``nan`` too)."""
    try:
        return Fraction(text.strip().replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def decimal_places(written: str) -> int:
    """Digits after the decimal point of a written number: 2 for ``3.33``, 0 for ``33``."""
    return len(written.strip().partition(".")[2]) if "." in written else 0


def round_half_up(value: Fraction, places: int) -> Fraction:
    """``value`` rounded to ``places`` decimals, halves away from zero (as people round)."""
    scale = 10**places
    rounded = Fraction(math.floor(abs(value) * scale + Fraction(1, 2)), scale)
    return rounded if value >= 0 else -rounded


def matches_reference(value: Fraction, reference: str) -> bool:
    """``value`` equals the written ``reference`` number, exactly or within 1e-6 relative, or rounds to it at the
    reference's own decimal places when it has some (``0.333333`` matches ``.33``; ``33.3`` does not match ``33``)."""
    expected = parse_number(reference)
    if expected is None:
        return False
    if value == expected or math.isclose(float(value), float(expected), rel_tol=1e-6, abs_tol=1e-9):
        return True
    places = decimal_places(reference)
    return places > 0 and round_half_up(value, places) == expected


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
