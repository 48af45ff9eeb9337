"""The sample-ratio check: a chi-square goodness of fit of the observed split to the weights.

Written with `math` alone (a series and a continued fraction for the incomplete gamma function),
so the API process never imports scipy; tests check the figures against tables. The comparisons
of arms are always-valid and live in `sequential`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

_EPSILON = 3e-14
_MAX_ITERATIONS = 500


@dataclass(frozen=True)
class SampleRatioCheck:
    """Chi-square goodness of fit of the observed split to the weights."""

    chi_square: float
    p_value: float
    mismatch: bool


def chi_square_sf(x: float, df: int) -> float:
    """P(X >= x) for chi-square with df degrees of freedom: Q(df/2, x/2)."""
    if x <= 0.0:
        return 1.0
    a, half = df / 2.0, x / 2.0
    log_front = a * math.log(half) - half - math.lgamma(a)
    if half < a + 1.0:
        term = total = 1.0 / a
        for n in range(1, _MAX_ITERATIONS):
            term *= half / (a + n)
            total += term
            if abs(term) < abs(total) * _EPSILON:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300
    b = half + 1.0 - a
    c, d = 1.0 / tiny, 1.0 / b
    result = d
    for n in range(1, _MAX_ITERATIONS):
        numerator = -n * (n - a)
        b += 2.0
        d = numerator * d + b
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = b + numerator / c
        c = c if abs(c) > tiny else tiny
        result *= d * c
        if abs(d * c - 1.0) < _EPSILON:
            break
    return result * math.exp(log_front)


def sample_ratio(
    observed: Sequence[int], weights: Sequence[float], alpha: float = 0.001
) -> SampleRatioCheck:
    """Chi-square test of observed counts against the split the weights promise."""
    total, weight_sum = sum(observed), sum(weights)
    if total == 0 or len(observed) < 2:
        return SampleRatioCheck(0.0, 1.0, False)
    expected = [total * weight / weight_sum for weight in weights]
    chi_square = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    p_value = chi_square_sf(chi_square, len(observed) - 1)
    return SampleRatioCheck(chi_square, p_value, p_value < alpha)
