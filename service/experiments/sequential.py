"""Always-valid comparisons: the mSPRT with a normal mixture, the delta method for ratio
metrics at the user level, and Holm's step-down adjustment. Pure `math`, no scipy.

The mSPRT (Johari, Pekelis, Walsh, "Always valid inference", 2017/2022) compares two arms
through their estimated difference `d` and its variance `V`. With a normal mixing distribution
N(0, tau2) over the true difference, the mixture likelihood ratio against "no difference" is

    Lambda = sqrt(V / (V + tau2)) * exp(tau2 * d**2 / (2 * V * (V + tau2)))

and the always-valid p-value is min(1, 1/Lambda). Under no difference the chance that *any*
look, however often one looks, shows p < alpha is at most alpha; so results may be read (and
an experiment stopped) at any time. The matching confidence sequence is

    d +- sqrt(V * (V + tau2) / tau2 * (2 * log(1/alpha) + log((V + tau2) / V))).

Choosing tau2: it is the spread of the differences the test is tuned for. Ladder uses the
planned minimum detectable effect, tau2 = mde**2, for the primary metric when the experiment
has a plan, and otherwise DEFAULT_RELATIVE_EFFECT (10 %) of the control's value as the
standard deviation (see `mixing_variance`). The power depends little on it: the boundary at
the planned sample moves by a few percent for tau between half and twice the MDE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_RELATIVE_EFFECT = 0.10


@dataclass(frozen=True)
class AlwaysValid:
    """Treatment minus control, its always-valid interval, and its always-valid p-value."""

    difference: float
    low: float
    high: float
    p_value: float


@dataclass(frozen=True)
class RatioEstimate:
    """One arm's ratio of sums over its users (sum numerators / sum denominators), the
    delta-method variance of that estimate, and how many users it rests on."""

    value: float
    variance: float
    users: int


def log_likelihood_ratio(difference: float, variance: float, tau2: float) -> float:
    """log Lambda of the normal-mixture mSPRT; inf for a nonzero difference known exactly."""
    if tau2 <= 0:
        return 0.0
    if variance <= 0:
        return 0.0 if difference == 0 else math.inf
    total = variance + tau2
    return 0.5 * math.log(variance / total) + tau2 * difference**2 / (2 * variance * total)


def msprt(difference: float, variance: float, tau2: float, alpha: float = 0.05) -> AlwaysValid:
    """The always-valid p-value and (1 - alpha) confidence sequence of a difference."""
    p_value = min(1.0, math.exp(-log_likelihood_ratio(difference, variance, tau2)))
    margin = half_width(variance, tau2, alpha)
    return AlwaysValid(difference, difference - margin, difference + margin, p_value)


def half_width(variance: float, tau2: float, alpha: float = 0.05) -> float:
    """Half the width of the confidence sequence (inf when tau2 is 0: nothing can be told)."""
    if variance <= 0:
        return 0.0
    if tau2 <= 0:
        return math.inf
    spread = variance * (variance + tau2) / tau2
    return math.sqrt(spread * (2 * math.log(1 / alpha) + math.log((variance + tau2) / variance)))


def mixing_variance(scale: float, relative_effect: float = DEFAULT_RELATIVE_EFFECT) -> float:
    """tau2 when no MDE is planned: (relative_effect * |scale|)**2, the scale being the
    control's value of the metric (a rate, a mean latency, a cost per request)."""
    return (relative_effect * abs(scale)) ** 2


def ratio(numerators: Sequence[float], denominators: Sequence[float]) -> RatioEstimate:
    """sum(numerators) / sum(denominators) over users, with its delta-method variance.

    Each user is one unit (Deng, Knoblich, Lu, "Applying the delta method in metric analytics",
    KDD 2018): with user means y, x and R = y/x,
    Var(R) ~ (s_yy - 2 R s_xy + R**2 s_xx) / (n * x**2), the sample (co)variances taken over
    users. A user with a thousand requests is one unit, not a thousand. NaN without a
    denominator.
    """
    if len(numerators) != len(denominators):
        raise ValueError("one numerator and one denominator per user")
    n = len(numerators)
    total = sum(denominators)
    if n == 0 or total == 0:
        return RatioEstimate(math.nan, math.nan, n)
    value = sum(numerators) / total
    if n < 2:
        return RatioEstimate(value, math.nan, n)
    # Var(y - R x) over users equals s_yy - 2 R s_xy + R**2 s_xx, and its mean is exactly 0.
    residual = sum((y - value * x) ** 2 for y, x in zip(numerators, denominators, strict=True))
    mean_denominator = total / n
    return RatioEstimate(value, residual / (n - 1) / (n * mean_denominator**2), n)


def difference(arm: RatioEstimate, control: RatioEstimate) -> tuple[float, float]:
    """Arm minus control and its variance: independent arms, so the variances add."""
    return arm.value - control.value, arm.variance + control.variance


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (reject where <= alpha)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda index: p_values[index])
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted
