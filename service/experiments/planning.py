"""How many users an experiment needs: the sample at which ladder's sequential test (the
mSPRT of `sequential`) detects the planned effect with the stated power, and the fixed-sample
figure beside it.

The sequential plan is the smallest n per arm at which a single look at the end rejects with
the stated power; results are looked at many times, and each extra look only adds chances to
reject, so the power with peeking is at least this. With more than two arms every comparison
is planned at alpha / (arms - 1) (Bonferroni, which is Holm's first and strictest step).
The primary metric is the share of positive feedback, one scored response per user assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.experiments import sequential

_NORMAL = NormalDist()
MAX_USERS_PER_ARM = 10**9


class ExperimentPlan(BaseModel):
    """What an experiment was planned for; results show progress against it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    baseline: float = Field(gt=0, lt=1, description="The control's positive-feedback share.")
    mde: float = Field(ge=0.001, lt=1, description="Smallest absolute lift worth detecting.")
    traffic_per_day: float = Field(
        gt=0, le=1e9, description="New users per day entering the experiment (all arms)."
    )
    power: float = Field(0.8, gt=0, lt=1, description="Chance to detect a lift of mde.")

    @model_validator(mode="after")
    def _reachable(self) -> ExperimentPlan:
        if self.baseline + self.mde >= 1:
            raise ValueError("baseline + mde must stay below 1")
        return self


@dataclass(frozen=True)
class SamplePlan:
    """Users per arm and days for the sequential test, and the fixed-sample test's figures."""

    users_per_arm: int
    days: float
    fixed_users_per_arm: int
    fixed_days: float
    alpha_per_comparison: float
    tau2: float


def comparison_alpha(alpha: float, arms: int) -> float:
    """The level each arm-vs-control comparison is planned at (Bonferroni over arms - 1)."""
    return alpha / max(1, arms - 1)


def unit_variances(baseline: float, mde: float) -> tuple[float, float]:
    """Per-user variances of a Bernoulli metric in the control and at the planned lift."""
    treated = min(max(baseline + mde, 1e-9), 1 - 1e-9)
    return baseline * (1 - baseline), treated * (1 - treated)


def sequential_power(
    users_per_arm: int, baseline: float, mde: float, alpha: float, tau2: float
) -> float:
    """The chance that one look at n users per arm rejects, the true lift being mde."""
    control, treated = unit_variances(baseline, mde)
    variance = (control + treated) / users_per_arm
    boundary = sequential.half_width(variance, tau2, alpha)
    spread = math.sqrt(variance)
    return _NORMAL.cdf((mde - boundary) / spread) + _NORMAL.cdf((-mde - boundary) / spread)


def sequential_users(baseline: float, mde: float, alpha: float, power: float, tau2: float) -> int:
    """The smallest users per arm with sequential_power >= power (bisection; power grows
    with n)."""
    low, high = 1, 2
    while sequential_power(high, baseline, mde, alpha, tau2) < power:
        low, high = high, high * 2
        if high > MAX_USERS_PER_ARM:
            raise ValueError("the planned effect is too small to detect")
    while high - low > 1:
        middle = (low + high) // 2
        if sequential_power(middle, baseline, mde, alpha, tau2) >= power:
            high = middle
        else:
            low = middle
    return high


def fixed_users(baseline: float, mde: float, alpha: float, power: float) -> int:
    """The classic two-proportion sample per arm, for a single look at the end."""
    control, treated = unit_variances(baseline, mde)
    pooled = baseline + mde / 2
    z_alpha, z_power = _NORMAL.inv_cdf(1 - alpha / 2), _NORMAL.inv_cdf(power)
    root = z_alpha * math.sqrt(2 * pooled * (1 - pooled)) + z_power * math.sqrt(control + treated)
    return math.ceil(root**2 / mde**2)


def plan(
    baseline: float,
    mde: float,
    traffic_per_day: float,
    arms: int = 2,
    alpha: float = 0.05,
    power: float = 0.8,
) -> SamplePlan:
    """The sample an experiment with equal weights needs, and the days its traffic takes."""
    if not (0 < baseline < 1 and 0 < mde < 1 and baseline + mde < 1):
        raise ValueError("baseline and baseline + mde must lie between 0 and 1")
    if arms < 2 or traffic_per_day <= 0 or not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError("need at least 2 arms, traffic > 0, and alpha and power in (0, 1)")
    each = comparison_alpha(alpha, arms)
    tau2 = mde**2
    users = sequential_users(baseline, mde, each, power, tau2)
    fixed = fixed_users(baseline, mde, each, power)
    per_arm_per_day = traffic_per_day / arms
    return SamplePlan(users, users / per_arm_per_day, fixed, fixed / per_arm_per_day, each, tau2)


def of(spec: ExperimentPlan, arms: int, alpha: float) -> SamplePlan:
    """The sample plan of an experiment's stored plan."""
    return plan(spec.baseline, spec.mde, spec.traffic_per_day, arms, alpha, spec.power)
