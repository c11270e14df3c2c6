"""How many GSM8K calculator annotations ``<<expr=result>>`` the calculator reproduces.

Run from the repository root: ``PYTHONPATH=. python plugins/swirl-calculator/tests/gsm8k_reproduction.py
[train.jsonl]`` (``PYTHONPATH`` is not needed once swirl-lightning is installed). Each annotation falls
in one group:

- ``exact``: the value shown equals the annotated result (``0.2`` and ``.20`` are equal);
- ``rounded``: the annotation is the exact value rounded to the decimals it shows (``10/3=3.33``);
- ``truncated``: the annotation is the exact value cut to the decimals it shows (``2/3=.66``);
- ``mismatch``: the annotation is arithmetically wrong or the calculator read the expression differently;
- ``error: ...``: the calculator refused the expression (grouped by the start of its message).

A step reproduces when it is ``exact`` or ``rounded`` (a model writing the annotation would round too).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections import Counter, defaultdict
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path

from swirl_calculator import CalculatorError, evaluate, format_number

DEFAULT_TRAIN = Path(os.environ.get("SWIRL_GSM8K_TRAIN", "/work/shared/data/gsm8k/train.jsonl"))
REPRODUCED = ("exact", "rounded")
_ANNOTATION = re.compile(r"<<([^<>]*)>>")


def read_annotations(path: Path) -> list[tuple[str, str, int]]:
    """All ``(expression, result, line number)`` annotations in a GSM8K JSONL file."""
    annotations = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                answer = json.loads(line)["answer"]
            except (json.JSONDecodeError, KeyError) as error:
                raise ValueError(f"{path}:{number}: expected a JSON object with an 'answer' ({error})") from None
            for annotation in _ANNOTATION.findall(answer):
                expression, _, result = annotation.rpartition("=")
                annotations.append((expression, result, number))
    return annotations


def classify(expression: str, annotated: str) -> str:
    """The group (see the module docstring) of one annotation."""
    try:
        value = evaluate(expression)
    except CalculatorError as error:
        return "error: " + str(error).split(":")[0]
    try:
        target = Decimal(annotated.strip())
    except InvalidOperation:
        return "unreadable annotation"
    shown = Fraction(Decimal(format_number(value)))
    if shown == Fraction(target):
        return "exact"
    places = max(0, -target.as_tuple().exponent)
    exact = Fraction(value)
    scaled = abs(exact) * 10**places
    sign = 1 if exact >= 0 else -1
    if Fraction(sign * math.floor(scaled + Fraction(1, 2)), 10**places) == Fraction(target):
        return "rounded"
    if Fraction(sign * math.floor(scaled), 10**places) == Fraction(target):
        return "truncated"
    return "mismatch"


def measure(path: Path = DEFAULT_TRAIN) -> tuple[Counter, dict[str, list[str]]]:
    """Count the groups over every annotation in ``path``; keep up to 10 examples of each group."""
    counts: Counter = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    for expression, result, number in read_annotations(path):
        group = classify(expression, result)
        counts[group] += 1
        if group not in REPRODUCED and len(examples[group]) < 10:
            examples[group].append(f"line {number}: <<{expression}={result}>>")
    return counts, examples


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_TRAIN
    counts, examples = measure(path)
    total = sum(counts.values())
    reproduced = sum(counts[group] for group in REPRODUCED)
    print(f"{path}: {reproduced}/{total} annotations reproduced ({reproduced / total:.2%})")
    for group, count in counts.most_common():
        print(f"  {group}: {count}")
        for example in examples.get(group, []):
            print(f"      {example}")


if __name__ == "__main__":
    main()
