"""The calculator must reproduce the GSM8K calculator annotations the reference trajectories are built from."""

from __future__ import annotations

import pytest

from gsm8k_reproduction import DEFAULT_TRAIN, REPRODUCED, classify, measure


@pytest.mark.parametrize(
    ("expression", "annotated", "group"),
    [
        ("12/60", ".20", "exact"),
        ("10/3", "3.33", "rounded"),
        ("2/3", ".66", "truncated"),
        ("2+2", "5", "mismatch"),
        ("2+foo", "5", "error: unknown name 'foo'"),
    ],
)
def test_classify_tells_exact_rounded_truncated_and_wrong_apart(expression: str, annotated: str, group: str) -> None:
    assert classify(expression, annotated) == group


@pytest.mark.skipif(not DEFAULT_TRAIN.exists(), reason=f"GSM8K train split not found at {DEFAULT_TRAIN}")
def test_at_least_99_percent_of_gsm8k_annotations_reproduce() -> None:
    counts, examples = measure(DEFAULT_TRAIN)
    total = sum(counts.values())
    reproduced = sum(counts[group] for group in REPRODUCED)
    assert total > 20_000
    assert reproduced / total >= 0.99, dict(examples)
