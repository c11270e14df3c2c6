"""The statistics the benchmarks report: a proportion's interval, a paired before/after test on right/wrong
outcomes, and the paired change of per-state mean rewards.

All three are exact or well-behaved at the sizes we have (a few hundred questions, accuracies near 0), where the normal
approximations are not.
"""

from __future__ import annotations

import math
import random


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (sensible at 0 and at small n, unlike the normal one);
    ``(0, 1)`` when there are no trials."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def exact_sign_test_p(up: int, down: int) -> float:
    """Two-sided exact sign test: under no change, ``up ~ Binomial(up + down, 1/2)``. On paired right/wrong outcomes
    (questions gained and lost) this is the exact McNemar test."""
    n = up + down
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(up, down) + 1)) / 2**n)


def paired_rise(first: list[float | None], last: list[float | None], rounds: int = 2000, seed: int = 0) -> dict:
    """The mean per-state change from ``first`` to ``last`` (the same states, in order) with a bootstrap 95% interval
    over states, and the sign test over the states whose mean reward moved. A state without a figure at either end
    (no judge verdict) is left out and counted."""
    pairs = [(a, b) for a, b in zip(first, last, strict=True) if a is not None and b is not None]
    diffs = [b - a for a, b in pairs]
    if not diffs:
        return {"rise": None, "rise_ci95": None, "states_up": 0, "states_down": 0, "states_same": 0,
                "states_left_out": len(first), "sign_test_p": 1.0}
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=len(diffs))) / len(diffs) for _ in range(rounds))
    up, down = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    return {"rise": sum(diffs) / len(diffs), "rise_ci95": [means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]],
            "states_up": up, "states_down": down, "states_same": len(diffs) - up - down,
            "states_left_out": len(first) - len(pairs), "sign_test_p": exact_sign_test_p(up, down)}
