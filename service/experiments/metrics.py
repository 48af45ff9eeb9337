"""Per-user outcomes of an experiment's arms, read from the database, and the metrics compared.

Users are the units: every metric is a ratio of sums over an arm's identified users, its
variance taken over users (the delta method), so a user with many requests is one unit.
Anonymous requests (no user key) have no unit; they are counted apart.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import ColumnElement, and_, case, func, select

from service.experiments import sequential
from service.experiments.models import ExposureRow, FeedbackRow
from service.experiments.store import Database

POSITIVE_FROM = 0.5
Direction = Literal["higher_is_better", "lower_is_better", "neutral"]


@dataclass(frozen=True)
class UserTotals:
    """One user's responses in one arm while the experiment was running."""

    requests: int
    errors: int
    timed: int
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    feedback: int
    positive: int
    score: float


@dataclass
class ArmOutcomes:
    """An arm's users, and its successful responses' latencies for the percentiles."""

    users: list[UserTotals] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Metric:
    """A ratio of per-user sums, which way is better, and whether being significantly worse
    on it keeps an arm from winning (cost and tokens differ by design between configurations,
    often by a token of system prompt: shown, but no guardrail here)."""

    name: str
    numerator: Callable[[UserTotals], float]
    denominator: Callable[[UserTotals], float]
    direction: Direction
    guardrail: bool = False


PRIMARY = "feedback_rate"
METRICS = (
    Metric(PRIMARY, lambda u: u.positive, lambda u: u.feedback, "higher_is_better"),
    Metric("error_rate", lambda u: u.errors, lambda u: u.requests, "lower_is_better", True),
    Metric("latency_ms", lambda u: u.latency_ms, lambda u: u.timed, "lower_is_better", True),
    Metric(
        "tokens_per_request",
        lambda u: u.prompt_tokens + u.completion_tokens,
        lambda u: u.requests,
        "neutral",
    ),
    Metric("cost_per_request_usd", lambda u: u.cost_usd, lambda u: u.requests, "lower_is_better"),
)


def estimate(metric: Metric, users: Sequence[UserTotals]) -> sequential.RatioEstimate:
    """The metric over an arm's users, with its user-level variance."""
    return sequential.ratio(
        [metric.numerator(user) for user in users], [metric.denominator(user) for user in users]
    )


def value(metric: Metric, users: Sequence[UserTotals]) -> float | None:
    """The metric's ratio of sums, None without a denominator."""
    found = estimate(metric, users).value
    return None if math.isnan(found) else found


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _running(experiment_id: int) -> list[ColumnElement[bool]]:
    return [ExposureRow.experiment_id == experiment_id, ExposureRow.phase == "running"]


def _succeeded() -> ColumnElement[bool]:
    return and_(ExposureRow.status == 200, ExposureRow.latency_ms.is_not(None))


def arm_outcomes(database: Database, experiment_id: int) -> dict[str, ArmOutcomes]:
    """Each arm's identified users, summed per user in the database, and its latencies."""
    failed = and_(ExposureRow.status.is_not(None), ExposureRow.status != 200)
    per_user = (
        select(
            ExposureRow.arm,
            func.count(ExposureRow.id),
            func.sum(case((failed, 1), else_=0)),
            func.sum(case((_succeeded(), 1), else_=0)),
            func.sum(case((_succeeded(), ExposureRow.latency_ms), else_=0.0)),
            func.coalesce(func.sum(ExposureRow.prompt_tokens), 0),
            func.coalesce(func.sum(ExposureRow.completion_tokens), 0),
            func.coalesce(func.sum(ExposureRow.cost_usd), 0.0),
            func.count(FeedbackRow.id),
            func.sum(case((FeedbackRow.score >= POSITIVE_FROM, 1), else_=0)),
            func.coalesce(func.sum(FeedbackRow.score), 0.0),
        )
        .outerjoin(FeedbackRow, FeedbackRow.exposure_id == ExposureRow.id)
        .where(*_running(experiment_id), ExposureRow.user_key.is_not(None))
        .group_by(ExposureRow.arm, ExposureRow.user_key)
    )
    timings = select(ExposureRow.arm, ExposureRow.latency_ms, ExposureRow.ttft_ms).where(
        *_running(experiment_id), ExposureRow.user_key.is_not(None), _succeeded()
    )
    arms: dict[str, ArmOutcomes] = defaultdict(ArmOutcomes)
    with database.read() as session:
        for arm, *totals in session.execute(per_user):
            requests, errors, timed, latency, prompt, completion, cost, fed, positive, score = (
                totals
            )
            arms[arm].users.append(
                UserTotals(
                    int(requests),
                    int(errors or 0),
                    int(timed or 0),
                    float(latency or 0.0),
                    int(prompt),
                    int(completion),
                    float(cost),
                    int(fed),
                    int(positive or 0),
                    float(score),
                )
            )
        for arm, latency, ttft in session.execute(timings):
            arms[arm].latencies.append(latency or 0.0)
            if ttft is not None:
                arms[arm].ttfts.append(ttft)
    return arms


def anonymous_requests(database: Database, experiment_id: int) -> dict[str, int]:
    """Requests without a user key per arm: served and counted, but no unit of any metric."""
    query = (
        select(ExposureRow.arm, func.count())
        .where(*_running(experiment_id), ExposureRow.user_key.is_(None))
        .group_by(ExposureRow.arm)
    )
    with database.read() as session:
        return {arm: int(count) for arm, count in session.execute(query)}
