"""The two statistics the benchmarks report: a proportion's interval and a paired before/after test.

Both are exact or well-behaved at the sizes we have (a few hundred questions, accuracies near 0), where the normal
approximations are not.
"""

from __future__ import annotations

import math


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
