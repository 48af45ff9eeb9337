"""Per-arm measurements and the comparison of every arm against the control."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select

from service.experiments import stats
from service.experiments.models import AssignmentRow, ExposureRow, FeedbackRow
from service.experiments.repository import StoredExperiment
from service.experiments.store import Database

ALPHA = 0.05
SRM_ALPHA = 0.001
SRM_MIN_UNITS = 100
CHART_BUCKETS = 24


@dataclass
class ArmRows:
    """The raw outcomes of one arm's responses served while the experiment was running."""

    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    scores: list[float] = field(default_factory=list)


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def stored_score(score: float) -> float:
    """A score as stored, on 0..1: a thumbs-down (-1) is 0, a thumbs-up (+1) is 1."""
    return 0.0 if score == -1 else score


def is_positive(score: float) -> bool:
    """A stored score counts as positive feedback from 0.5 up."""
    return score >= 0.5


def _arm_rows(database: Database, experiment_id: int) -> dict[str, ArmRows]:
    rows: dict[str, ArmRows] = defaultdict(ArmRows)
    query = (
        select(
            ExposureRow.arm,
            ExposureRow.status,
            ExposureRow.latency_ms,
            ExposureRow.ttft_ms,
            ExposureRow.prompt_tokens,
            ExposureRow.completion_tokens,
            ExposureRow.cost_usd,
            FeedbackRow.score,
        )
        .outerjoin(FeedbackRow, FeedbackRow.exposure_id == ExposureRow.id)
        .where(ExposureRow.experiment_id == experiment_id, ExposureRow.phase == "running")
    )
    with database.read() as session:
        for arm, status, latency, ttft, prompt, completion, cost, score in session.execute(query):
            measured = rows[arm]
            measured.requests += 1
            if status is not None and status != 200:
                measured.errors += 1
            if status == 200 and latency is not None:
                measured.latencies.append(latency)
            if status == 200 and ttft is not None:
                measured.ttfts.append(ttft)
            measured.prompt_tokens += prompt or 0
            measured.completion_tokens += completion or 0
            measured.cost_usd += cost or 0.0
            if score is not None:
                measured.scores.append(score)
    return rows


def _split_units(database: Database, stored: StoredExperiment) -> Counter[str]:
    """Units assigned under the current weights: users, plus anonymous requests."""
    units: Counter[str] = Counter()
    with database.read() as session:
        users = session.execute(
            select(AssignmentRow.arm, func.count())
            .where(
                AssignmentRow.experiment_id == stored.id,
                AssignmentRow.weights_version == stored.weights_version,
            )
            .group_by(AssignmentRow.arm)
        )
        anonymous = session.execute(
            select(ExposureRow.arm, func.count())
            .where(
                ExposureRow.experiment_id == stored.id,
                ExposureRow.weights_version == stored.weights_version,
                ExposureRow.phase == "running",
                ExposureRow.user_key.is_(None),
            )
            .group_by(ExposureRow.arm)
        )
        for arm, count in [*users, *anonymous]:
            units[arm] += count
    return units


def _summary(name: str, configuration: str, weight: float, rows: ArmRows) -> dict[str, Any]:
    positive = sum(1 for score in rows.scores if is_positive(score))
    return {
        "arm": name,
        "configuration": configuration,
        "weight": weight,
        "requests": rows.requests,
        "errors": rows.errors,
        "error_rate": rows.errors / rows.requests if rows.requests else None,
        "latency_ms_p50": percentile(rows.latencies, 0.5),
        "latency_ms_p95": percentile(rows.latencies, 0.95),
        "ttft_ms_p50": percentile(rows.ttfts, 0.5),
        "ttft_ms_p95": percentile(rows.ttfts, 0.95),
        "prompt_tokens": rows.prompt_tokens,
        "completion_tokens": rows.completion_tokens,
        "cost_usd": round(rows.cost_usd, 8),
        "cost_per_request_usd": rows.cost_usd / rows.requests if rows.requests else None,
        "feedback": len(rows.scores),
        "positive_feedback": positive,
        "feedback_rate": positive / len(rows.scores) if rows.scores else None,
        "mean_score": sum(rows.scores) / len(rows.scores) if rows.scores else None,
    }


def compare(arm: ArmRows, control: ArmRows, min_samples: int) -> dict[str, Any]:
    """An arm against the control: feedback rate and latency differences, and a verdict."""
    successes = sum(1 for s in arm.scores if is_positive(s))
    control_successes = sum(1 for s in control.scores if is_positive(s))
    feedback = latency = None
    if arm.scores and control.scores:
        feedback = stats.two_proportions(
            successes, len(arm.scores), control_successes, len(control.scores)
        )
    if len(arm.latencies) >= 2 and len(control.latencies) >= 2:
        latency = stats.welch(arm.latencies, control.latencies)
    enough = min(len(arm.scores), len(control.scores)) >= min_samples
    if not enough or feedback is None:
        verdict = "not enough data"
    elif feedback.p_value >= ALPHA:
        verdict = "no significant difference"
    else:
        verdict = "better" if feedback.difference > 0 else "worse"
    return {
        "feedback_rate": asdict(feedback) if feedback else None,
        "latency_ms": asdict(latency) if latency else None,
        "enough_samples": enough,
        "verdict": verdict,
    }


def _winner(comparisons: dict[str, dict[str, Any]], control: str, srm: bool) -> str | None:
    if srm or not comparisons:
        return None
    better = [
        (found["feedback_rate"]["difference"], arm)
        for arm, found in comparisons.items()
        if found["verdict"] == "better"
    ]
    if better:
        return max(better)[1]
    if all(found["verdict"] == "worse" for found in comparisons.values()):
        return control
    return None


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


def results(database: Database, stored: StoredExperiment, min_samples: int) -> dict[str, Any]:
    """The JSON the results endpoint and the dashboard show."""
    spec = stored.spec
    rows = _arm_rows(database, stored.id)
    arms = [_summary(a.name, a.configuration, a.weight, rows[a.name]) for a in spec.arms]
    comparisons = {
        arm.name: compare(rows[arm.name], rows[spec.control], min_samples)
        for arm in spec.arms
        if arm.name != spec.control
    }
    srm = _srm(stored, _split_units(database, stored))
    return {
        "experiment": spec.name,
        "model": spec.model,
        "status": spec.status,
        "control": spec.control,
        "version": stored.version,
        "min_samples": min_samples,
        "arms": arms,
        "comparisons": comparisons,
        "sample_ratio": srm,
        "winner": _winner(comparisons, spec.control, srm["mismatch"]),
        "timeline": timeline(database, stored.id),
    }


def timeline(database: Database, experiment_id: int) -> dict[str, Any]:
    """Requests and positive-feedback share per arm in up to 24 equal time buckets."""
    query = (
        select(ExposureRow.arm, ExposureRow.created_at, FeedbackRow.score)
        .outerjoin(FeedbackRow, FeedbackRow.exposure_id == ExposureRow.id)
        .where(ExposureRow.experiment_id == experiment_id)
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
