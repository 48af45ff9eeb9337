"""Guardrails: limits an arm must keep, each judged with an always-valid test, so the monitor
may look after every few outcomes without raising its false-alarm rate.

A guardrail names a metric and exactly one limit: `max_increase` (the arm's value at most the
control's plus this), `max_ratio` (at most this times the control's) or `max_value` (at most
this). Every limit is linear in the arm's and the control's values, so each check tests one
contrast

    theta = arm - a * control - b        (max_increase: a=1, b=increase; max_ratio: a=ratio,
                                          b=0; max_value: a=0, b=value)

against 0 with the normal-mixture mSPRT (service/experiments/sequential.py). The arm breaches
when the contrast's always-valid p-value, Holm-adjusted over every arm and guardrail of the
experiment, is at most alpha and the contrast is above 0: its always-valid interval then lies
wholly past the limit. Arms are measured per user (ratio of sums, delta-method variance).

- error_rate: failed responses (any status but 200) / responses.
- cost_per_request_usd: dollars / responses.
- latency_p95_ms: a percentile has no per-user mean, so it is tested as an exceedance rate. The
  limit gives a latency L (the control's p95 plus the increase, times the ratio, or the cap);
  "the arm's p95 is at most L" means at most 5 % of its successful responses take longer than
  L, so the contrast is (the arm's share slower than L) - 0.05 (a=0, b=0.05). The control's p95
  is taken as known (its point estimate over the same window).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.experiments import sequential
from service.experiments.sequential import RatioEstimate

Metric = Literal["error_rate", "latency_p95_ms", "cost_per_request_usd"]
State = Literal["ok", "breached", "not enough data"]
LIMITS = ("max_increase", "max_ratio", "max_value")
TAIL = 0.05
"""The share of responses above a p95."""
RATE_TAU = 0.10
"""The mixing spread (rate points) of the tests on rates: tuned to catch a breach of about 10
points within a few dozen users per arm (see `mixing_variance`)."""
COST_RELATIVE_EFFECT = 0.5


class Guardrail(BaseModel):
    """One limit an arm must keep; an arm that breaches it significantly is paused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Metric = Field(description="error_rate, latency_p95_ms or cost_per_request_usd.")
    max_increase: float | None = Field(
        None,
        ge=0,
        description="At most the control's value plus this (error_rate in rate: 0.01 = 1 point).",
    )
    max_ratio: float | None = Field(
        None, ge=1, le=1000, description="At most this many times the control's value."
    )
    max_value: float | None = Field(None, ge=0, description="At most this value.")

    @model_validator(mode="after")
    def _one_limit(self) -> Guardrail:
        given = [name for name in LIMITS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(LIMITS)} (got {len(given)})")
        bound = self.max_increase if self.max_increase is not None else self.max_value
        if self.metric == "error_rate" and bound is not None and bound >= 1:
            raise ValueError("an error_rate limit is a rate: below 1 (0.01 is 1 point)")
        if self.max_value == 0 and self.metric != "error_rate":
            raise ValueError(f"a {self.metric} cap must be above 0")
        if not all(math.isfinite(value) for value in (self.max_ratio or 0, bound or 0)):
            raise ValueError("limits must be finite numbers")
        return self

    @property
    def kind(self) -> str:
        """Which limit it sets."""
        return next(name for name in LIMITS if getattr(self, name) is not None)

    @property
    def limit(self) -> float:
        """The limit's number."""
        value = getattr(self, self.kind)
        assert value is not None
        return float(value)

    def describe(self) -> str:
        """The limit in words, as the dashboard shows it."""
        if self.kind == "max_increase":
            return f"{self.metric} <= control + {self.limit:g}"
        if self.kind == "max_ratio":
            return f"{self.metric} <= {self.limit:g} x control"
        return f"{self.metric} <= {self.limit:g}"

    def contrast(self) -> tuple[float, float]:
        """(a, b) of theta = arm - a * control - b on the metric's own scale."""
        return {"max_increase": (1.0, self.limit), "max_ratio": (self.limit, 0.0)}.get(
            self.kind, (0.0, self.limit)
        )

    def latency_threshold(self, control_p95: float) -> float:
        """The latency L that at most 5 % of the arm's successful responses may exceed."""
        a, b = self.contrast()
        return a * control_p95 + b


def check_unique(guardrails: Sequence[Guardrail]) -> None:
    """ValueError when two guardrails set the same limit on the same metric."""
    seen = [(g.metric, g.kind) for g in guardrails]
    for metric, kind in seen:
        if seen.count((metric, kind)) > 1:
            raise ValueError(f"guardrails: {metric} has two {kind} limits")


@dataclass(frozen=True)
class Judgement:
    """One guardrail of one arm at one look: its state and the evidence for it. `excess` is
    the arm's value minus the value its limit allows, with its always-valid interval."""

    state: State
    arm_value: float | None
    control_value: float | None
    allowed: float | None
    excess: float | None
    excess_low: float | None
    excess_high: float | None
    p_value: float | None
    arm_users: int
    control_users: int
    extra: dict[str, float | None]

    def evidence(self) -> dict[str, Any]:
        """What the audit entry and the dashboard show for it (JSON: an unbounded interval's
        end, when nothing bounds it, is null)."""
        fields = asdict(self)
        del fields["state"], fields["extra"]
        return {
            name: None if isinstance(value, float) and not math.isfinite(value) else value
            for name, value in (fields | self.extra).items()
        }


def mixing_variance(guardrail: Guardrail, allowed: float) -> float:
    """tau2 of the guardrail's test: a 10-point breach for rates, half the allowed cost for
    cost (a breach that large is found fastest; smaller ones are still found, later)."""
    if guardrail.metric == "cost_per_request_usd":
        return sequential.mixing_variance(allowed, COST_RELATIVE_EFFECT)
    return RATE_TAU**2


def _usable(estimate: RatioEstimate, min_users: int) -> bool:
    return estimate.users >= min_users and math.isfinite(estimate.variance)


def look(
    guardrail: Guardrail,
    arm: RatioEstimate,
    control: RatioEstimate,
    *,
    alpha: float,
    min_users: int,
    extra: dict[str, float | None] | None = None,
) -> tuple[Judgement, float]:
    """The unadjusted judgement and p-value of one guardrail (1.0 without enough data).

    For latency_p95_ms, `arm` is the arm's share of successful responses slower than the
    threshold and `control` the control's, both measured against the same threshold.
    """
    a, b = (0.0, TAIL) if guardrail.metric == "latency_p95_ms" else guardrail.contrast()
    notes = extra or {}
    if not (_usable(arm, min_users) and _usable(control, min_users)):
        users = (arm.users, control.users)
        empty = Judgement(
            "not enough data", None, None, None, None, None, None, None, *users, notes
        )
        return empty, 1.0
    allowed = a * control.value + b
    variance = arm.variance + a * a * control.variance
    tested = sequential.msprt(
        arm.value - allowed, variance, mixing_variance(guardrail, allowed), alpha
    )
    # One-sided: an arm below its limit, however clearly, is no evidence of a breach.
    p_value = tested.p_value if tested.difference > 0 else 1.0
    judgement = Judgement(
        "ok",
        arm.value,
        control.value,
        allowed,
        tested.difference,
        tested.low,
        tested.high,
        p_value,
        arm.users,
        control.users,
        notes,
    )
    return judgement, p_value


def decide(looks: Sequence[tuple[Judgement, float]], alpha: float) -> list[Judgement]:
    """The looks' states with Holm's adjustment over all of them: breached where the adjusted
    p-value is at most alpha and the arm's value is past its limit."""
    adjusted = sequential.holm([p for _, p in looks])
    decided = []
    for (judgement, _), p_adjusted in zip(looks, adjusted, strict=True):
        if judgement.state == "not enough data":
            decided.append(judgement)
            continue
        past = judgement.excess is not None and judgement.excess > 0
        state: State = "breached" if past and p_adjusted <= alpha else "ok"
        extra = judgement.extra | {"p_adjusted": p_adjusted, "alpha": alpha}
        decided.append(replace(judgement, state=state, extra=extra))
    return decided
