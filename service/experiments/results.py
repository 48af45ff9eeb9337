"""Per-arm measurements and the always-valid comparison of every arm against the control.

Units are users (see `metrics`). Each metric of each arm is compared with the control's by the
mSPRT (`sequential`), so the results may be read at any time; p-values are Holm-adjusted across
the arms per metric, and intervals are at 1 - alpha / (arms compared), valid for all arms at
once. The verdict rests on the primary metric (positive-feedback share) with no guardrail
(error rate, mean latency) significantly worse; cost and tokens are compared and shown.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import func, select

from service.experiments import metrics, planning, sequential, stats
from service.experiments.metrics import METRICS, PRIMARY, ArmOutcomes, Metric, UserTotals
from service.experiments.models import AssignmentRow, AuditRow, ExposureRow, FeedbackRow
from service.experiments.repository import StoredExperiment
from service.experiments.spec import ExperimentSpec
from service.experiments.store import Database

ALPHA = 0.05
SRM_ALPHA = 0.001
SRM_MIN_UNITS = 100
CHART_BUCKETS = 24


def stored_score(score: float) -> float:
    """A score as stored, on 0..1: a thumbs-down (-1) is 0, a thumbs-up (+1) is 1."""
    return 0.0 if score == -1 else score


def is_positive(score: float) -> bool:
    """A stored score counts as positive feedback from 0.5 up."""
    return score >= metrics.POSITIVE_FROM


def _summary(
    spec: ExperimentSpec, name: str, outcomes: ArmOutcomes, served: Mapping[str, float]
) -> dict[str, Any]:
    arm, users = spec.arm(name), outcomes.users
    requests = sum(user.requests for user in users)
    cost = sum(user.cost_usd for user in users)
    feedback = sum(user.feedback for user in users)
    by_metric = {metric.name: metrics.value(metric, users) for metric in METRICS}
    return {
        "arm": name,
        "configuration": arm.configuration,
        "weight": arm.weight,
        "weight_share": arm.weight / sum(a.weight for a in spec.arms),
        "served_share": served.get(name),
        "users": len(users),
        "scored_users": sum(1 for user in users if user.feedback),
        "requests": requests,
        "errors": sum(user.errors for user in users),
        "error_rate": by_metric["error_rate"],
        "latency_ms_mean": by_metric["latency_ms"],
        "latency_ms_p50": metrics.percentile(outcomes.latencies, 0.5),
        "latency_ms_p95": metrics.percentile(outcomes.latencies, 0.95),
        "ttft_ms_p50": metrics.percentile(outcomes.ttfts, 0.5),
        "ttft_ms_p95": metrics.percentile(outcomes.ttfts, 0.95),
        "prompt_tokens": sum(user.prompt_tokens for user in users),
        "completion_tokens": sum(user.completion_tokens for user in users),
        "tokens_per_request": by_metric["tokens_per_request"],
        "cost_usd": round(cost, 8),
        "cost_per_request_usd": by_metric["cost_per_request_usd"],
        "feedback": feedback,
        "positive_feedback": sum(user.positive for user in users),
        "feedback_rate": by_metric[PRIMARY],
        "mean_score": sum(user.score for user in users) / feedback if feedback else None,
    }


def mixing_variance(
    metric: Metric, control: float, pooled: float, plan: planning.ExperimentPlan | None
) -> float:
    """tau2 of a metric: the plan's MDE for the primary metric; otherwise the plan's relative
    MDE (or 10 %) of the control's value, of both arms' when the control's is 0."""
    if plan is not None and metric.name == PRIMARY:
        return plan.mde**2
    relative = plan.mde / plan.baseline if plan else sequential.DEFAULT_RELATIVE_EFFECT
    return sequential.mixing_variance(control or pooled, relative)


def _compare_metric(
    metric: Metric,
    arm: Sequence[UserTotals],
    control: Sequence[UserTotals],
    plan: planning.ExperimentPlan | None,
    alpha: float,
) -> dict[str, Any] | None:
    """One metric of an arm against the control's; None while either has too few users."""
    found, baseline = metrics.estimate(metric, arm), metrics.estimate(metric, control)
    if any(math.isnan(x.variance) for x in (found, baseline)):
        return None
    difference, variance = sequential.difference(found, baseline)
    pooled = metrics.value(metric, [*arm, *control]) or 0.0
    tau2 = mixing_variance(metric, baseline.value, pooled, plan)
    tested = sequential.msprt(difference, variance, tau2, alpha)
    return {
        "difference": tested.difference,
        "low": tested.low,
        "high": tested.high,
        "p_value": tested.p_value,
        "tau2": tau2,
        "direction": metric.direction,
        "guardrail": metric.guardrail,
    }


def _worse(found: Mapping[str, Any], metric: Metric) -> bool:
    if not found["significant"] or metric.direction == "neutral":
        return False
    return (found["difference"] > 0) == (metric.direction == "lower_is_better")


def _guardrails_worse(comparison: Mapping[str, Any]) -> list[str]:
    """The guardrail metrics on which an arm is significantly worse than the control."""
    return [
        metric.name
        for metric in METRICS
        if metric.guardrail
        and comparison[metric.name] is not None
        and comparison[metric.name]["worse"]
    ]


def _verdict(comparison: Mapping[str, Any], enough: bool) -> str:
    primary = comparison[PRIMARY]
    if not enough or primary is None:
        return "not enough data"
    if primary["significant"] and primary["difference"] < 0:
        return "worse"
    if comparison["worse_guardrails"]:
        return "guardrail worse"
    if primary["significant"]:
        return "better"
    return "no significant difference"


def compare_arms(
    spec: ExperimentSpec, outcomes: Mapping[str, ArmOutcomes], min_samples: int
) -> dict[str, dict[str, Any]]:
    """Every non-control arm against the control on every metric, Holm-adjusted per metric."""
    control = outcomes.get(spec.control, ArmOutcomes()).users
    names = [arm.name for arm in spec.arms if arm.name != spec.control]
    alpha = ALPHA / max(1, len(names))
    compared: dict[str, dict[str, Any]] = {name: {} for name in names}
    for metric in METRICS:
        found = {
            name: _compare_metric(
                metric, outcomes.get(name, ArmOutcomes()).users, control, spec.plan, alpha
            )
            for name in names
        }
        tested = {name: item for name, item in found.items() if item is not None}
        adjusted = sequential.holm([item["p_value"] for item in tested.values()])
        for item, p_adjusted in zip(tested.values(), adjusted, strict=True):
            item |= {"p_adjusted": p_adjusted, "significant": p_adjusted < ALPHA}
            item["worse"] = _worse(item, metric)
        for name in names:
            compared[name][metric.name] = found[name]
    scored = sum(1 for user in control if user.feedback)
    for name, comparison in compared.items():
        arm_scored = sum(1 for user in outcomes.get(name, ArmOutcomes()).users if user.feedback)
        comparison["worse_guardrails"] = _guardrails_worse(comparison)
        comparison["enough_samples"] = min(scored, arm_scored) >= min_samples
        comparison["verdict"] = _verdict(comparison, comparison["enough_samples"])
    return compared


def _winner(
    comparisons: Mapping[str, Mapping[str, Any]],
    control: str,
    srm: bool,
    blocked: Collection[str] = (),
) -> str | None:
    """The best `better` arm not blocked (paused, or breaching a declared guardrail)."""
    if srm or not comparisons:
        return None
    better = [
        (found[PRIMARY]["difference"], arm)
        for arm, found in comparisons.items()
        if found["verdict"] == "better" and arm not in blocked
    ]
    if better:
        return max(better)[1]
    if all(found["verdict"] in ("worse", "guardrail worse") for found in comparisons.values()):
        return control
    return None


def _split_users(database: Database, stored: StoredExperiment) -> Counter[str]:
    """Users assigned under the current weights per arm (anonymous requests are no units)."""
    query = (
        select(AssignmentRow.arm, func.count())
        .where(
            AssignmentRow.experiment_id == stored.id,
            AssignmentRow.weights_version == stored.weights_version,
        )
        .group_by(AssignmentRow.arm)
    )
    with database.read() as session:
        return Counter({arm: int(count) for arm, count in session.execute(query)})


def _srm(stored: StoredExperiment, units: Counter[str]) -> dict[str, Any]:
    arms = stored.spec.arms
    observed = {arm.name: units.get(arm.name, 0) for arm in arms}
    weighted = [arm for arm in arms if arm.weight > 0]
    stray = any(observed[arm.name] for arm in arms if arm.weight == 0)
    total = sum(observed.values())
    check = stats.sample_ratio([observed[a.name] for a in weighted], [a.weight for a in weighted])
    enough = total >= SRM_MIN_UNITS
    mismatch = enough and (stray or check.p_value < SRM_ALPHA)
    return {
        "observed": observed,
        "chi_square": check.chi_square,
        "p_value": check.p_value,
        "units": total,
        "checked": enough,
        "mismatch": mismatch,
        "warning": "observed split differs from the weights (sample-ratio mismatch)"
        if mismatch
        else None,
    }


def running_period(database: Database, name: str) -> tuple[float | None, float | None]:
    """When the experiment first started running, and when it was concluded (if it was)."""
    query = select(AuditRow.at, AuditRow.diff).where(AuditRow.experiment == name)
    started = concluded = None
    with database.read() as session:
        for at, changes in session.execute(query.order_by(AuditRow.id)):
            status = (changes or {}).get("status")
            if not isinstance(status, list) or len(status) != 2:
                continue
            if status[1] == "running" and started is None:
                started = at
            if status[1] == "concluded":
                concluded = at
            elif status[1] is not None:
                concluded = None
    return started, concluded


def _plan(spec: ExperimentSpec, outcomes: Mapping[str, ArmOutcomes]) -> dict[str, Any] | None:
    if spec.plan is None:
        return None
    weighted = [arm.name for arm in spec.arms if arm.weight > 0] or [spec.control]
    sized = planning.of(spec.plan, max(2, len(weighted)), ALPHA)
    scored = [
        sum(1 for user in outcomes.get(name, ArmOutcomes()).users if user.feedback)
        for name in weighted
    ]
    return spec.plan.model_dump() | {
        "users_per_arm": sized.users_per_arm,
        "days": sized.days,
        "fixed_users_per_arm": sized.fixed_users_per_arm,
        "alpha_per_comparison": sized.alpha_per_comparison,
        "scored_users_min": min(scored),
        "progress": min(scored) / sized.users_per_arm,
    }


def results(
    database: Database, stored: StoredExperiment, min_samples: int, blocked: Collection[str] = ()
) -> dict[str, Any]:
    """The JSON the results endpoint and the dashboard show; `blocked` arms are never winner."""
    spec = stored.spec
    outcomes = metrics.arm_outcomes(database, stored.id)
    units = _split_users(database, stored)
    served = {arm: count / sum(units.values()) for arm, count in units.items()}
    comparisons = compare_arms(spec, outcomes, min_samples)
    srm = _srm(stored, units)
    anonymous = metrics.anonymous_requests(database, stored.id)
    started, concluded = running_period(database, spec.name)
    return {
        "experiment": spec.name,
        "model": spec.model,
        "status": spec.status,
        "control": spec.control,
        "version": stored.version,
        "started_at": started,
        "duration_s": None if started is None else (concluded or time.time()) - started,
        "min_samples": min_samples,
        "method": {"test": "mSPRT (always valid)", "alpha": ALPHA, "adjustment": "holm"},
        "arms": [_summary(spec, arm.name, outcomes[arm.name], served) for arm in spec.arms],
        "anonymous": {"requests": sum(anonymous.values()), "by_arm": anonymous},
        "comparisons": comparisons,
        "sample_ratio": srm,
        "winner": _winner(comparisons, spec.control, srm["mismatch"], blocked),
        "plan": _plan(spec, outcomes),
        "timeline": timeline(database, stored.id),
    }


def timeline(database: Database, experiment_id: int) -> dict[str, Any]:
    """Requests and positive-feedback share per arm in up to 24 equal time buckets, counted
    like the results: while running, so a paused arm's line stops (the control serves it)."""
    query = (
        select(ExposureRow.arm, ExposureRow.created_at, FeedbackRow.score)
        .outerjoin(FeedbackRow, FeedbackRow.exposure_id == ExposureRow.id)
        .where(ExposureRow.experiment_id == experiment_id, ExposureRow.phase == "running")
    )
    with database.read() as session:
        points = list(session.execute(query))
    if not points:
        return {"start": None, "width_s": 0, "requests": {}, "feedback_rate": {}}
    start = min(p[1] for p in points)
    width = max((max(p[1] for p in points) - start) / CHART_BUCKETS, 1e-3)
    requests: dict[str, list[int]] = defaultdict(lambda: [0] * CHART_BUCKETS)
    scored: dict[str, list[list[int]]] = defaultdict(lambda: [[0, 0] for _ in range(CHART_BUCKETS)])
    for arm, at, score in points:
        index = min(int((at - start) / width), CHART_BUCKETS - 1)
        requests[arm][index] += 1
        if score is not None:
            scored[arm][index][0] += int(is_positive(score))
            scored[arm][index][1] += 1
    rates = {
        arm: [positive / total if total else None for positive, total in buckets]
        for arm, buckets in scored.items()
    }
    return {"start": start, "width_s": width, "requests": dict(requests), "feedback_rate": rates}
