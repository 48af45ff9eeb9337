"""Pure statistics for comparing arms: two-proportion z-test, Welch's t-test, chi-square SRM.

Written with `math` alone (continued fractions for the incomplete beta and gamma functions), so
the API process never imports scipy; tests check the figures against scipy and by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist, fmean, variance

_NORMAL = NormalDist()
_EPSILON = 3e-14
_MAX_ITERATIONS = 500


@dataclass(frozen=True)
class Difference:
    """Treatment minus control, its confidence interval, and a two-sided p-value."""

    difference: float
    low: float
    high: float
    p_value: float


@dataclass(frozen=True)
class SampleRatioCheck:
    """Chi-square goodness of fit of the observed split to the weights."""

    chi_square: float
    p_value: float
    mismatch: bool


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Lentz's continued fraction for the incomplete beta function."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, _MAX_ITERATIONS):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1.0) < _EPSILON:
            break
    return result


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    return regularized_beta(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(probability: float, df: float) -> float:
    """The t value below which `probability` of the distribution lies (bisection)."""
    low, high = -1e3, 1e3
    for _ in range(200):
        middle = (low + high) / 2.0
        tail = t_two_sided_p(middle, df) / 2.0
        below = tail if middle < 0 else 1.0 - tail
        low, high = (middle, high) if below < probability else (low, middle)
    return (low + high) / 2.0


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


def two_proportions(
    successes: int, trials: int, control_successes: int, control_trials: int, level: float = 0.95
) -> Difference:
    """Rate difference with a Wald interval; p-value from the pooled z-test."""
    if trials == 0 or control_trials == 0:
        raise ValueError("both groups need at least one trial")
    rate, control = successes / trials, control_successes / control_trials
    difference = rate - control
    spread = math.sqrt(rate * (1 - rate) / trials + control * (1 - control) / control_trials)
    pooled = (successes + control_successes) / (trials + control_trials)
    pooled_spread = math.sqrt(pooled * (1 - pooled) * (1 / trials + 1 / control_trials))
    p_value = 1.0 if pooled_spread == 0 else 2 * _NORMAL.cdf(-abs(difference) / pooled_spread)
    margin = _NORMAL.inv_cdf(0.5 + level / 2) * spread
    return Difference(difference, difference - margin, difference + margin, min(1.0, p_value))


def welch(values: Sequence[float], control: Sequence[float], level: float = 0.95) -> Difference:
    """Difference of means with Welch's interval and two-sided p-value."""
    if len(values) < 2 or len(control) < 2:
        raise ValueError("both groups need at least two values")
    difference = fmean(values) - fmean(control)
    share, control_share = variance(values) / len(values), variance(control) / len(control)
    spread = math.sqrt(share + control_share)
    if spread == 0:
        return Difference(difference, difference, difference, 1.0 if difference == 0 else 0.0)
    df = (share + control_share) ** 2 / (
        share**2 / (len(values) - 1) + control_share**2 / (len(control) - 1)
    )
    margin = t_quantile(0.5 + level / 2, df) * spread
    p_value = t_two_sided_p(difference / spread, df)
    return Difference(difference, difference - margin, difference + margin, p_value)


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
