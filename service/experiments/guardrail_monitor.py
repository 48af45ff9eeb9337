"""The guardrail monitor: reads each arm's outcomes per user, judges the experiment's guardrails
(service/experiments/guardrails.py) and pauses an arm that breaches one; and the guardrails part
of the results JSON.

An arm is judged on what it served since it was last resumed, against what the control served
over the same window; only responses of a running experiment whose outcome is stored count
(an arm's responses while it was paused were the control's, and are counted for neither).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.exc import SQLAlchemyError

from service.errors import InvalidChange, StateUnavailable
from service.experiments import guardrails, sequential
from service.experiments.guardrails import Guardrail, Judgement
from service.experiments.models import ExposureRow
from service.experiments.repository import StoredExperiment
from service.experiments.sequential import RatioEstimate
from service.experiments.spec import ArmSpec
from service.experiments.store import Database

log = logging.getLogger("ladder.experiments")
ACTOR = "guardrail"
Pause = Callable[[str, str, list[dict[str, Any]]], None]
"""Pauses (experiment, arm) with the evidence; InvalidChange when that is no change."""


@dataclass(frozen=True)
class Verdict:
    """One guardrail of one arm, judged."""

    arm: ArmSpec
    guardrail: Guardrail
    judgement: Judgement

    def entry(self) -> dict[str, Any]:
        """Its row of results["guardrails"]."""
        return {
            "arm": self.arm.name,
            "metric": self.guardrail.metric,
            "limit": self.guardrail.describe(),
            "state": self.judgement.state,
            "evidence": self.judgement.evidence(),
            "paused_at": self.arm.paused_at if self.arm.paused else None,
        }

    def evidence(self) -> dict[str, Any]:
        """What the audit entry of a pause keeps."""
        limit = {"limit": self.guardrail.describe(), self.guardrail.kind: self.guardrail.limit}
        return {"metric": self.guardrail.metric, **limit, **self.judgement.evidence()}


def _counted(experiment_id: int, arms: Sequence[str], since: float) -> ColumnElement[bool]:
    return and_(
        ExposureRow.experiment_id == experiment_id,
        ExposureRow.phase == "running",
        ExposureRow.status.is_not(None),
        ExposureRow.arm.in_(arms),
        ExposureRow.created_at >= since,
    )


def p95_latency(database: Database, experiment_id: int, arm: str, since: float) -> float | None:
    """The nearest-rank p95 of the arm's successful responses in the window, sorted by the
    database (no latencies are read into the process)."""
    where = and_(
        _counted(experiment_id, [arm], since),
        ExposureRow.status == 200,
        ExposureRow.latency_ms.is_not(None),
    )
    with database.read() as session:
        total = session.scalars(select(func.count()).where(where)).one()
        if not total:
            return None
        # Nearest rank from the top: the ceil(0.95 n)-th smallest is the (n - ceil(0.95 n))-th
        # largest, counted from 0.
        offset = total - math.ceil(0.95 * total)
        query = (
            select(ExposureRow.latency_ms)
            .where(where)
            .order_by(ExposureRow.latency_ms.desc())
            .offset(offset)
            .limit(1)
        )
        found = session.scalars(query).one()
    return float(found) if found is not None else None


def unit_totals(
    database: Database,
    experiment_id: int,
    arms: Sequence[str],
    since: float,
    thresholds: Sequence[float] = (),
) -> dict[str, list[tuple[float, ...]]]:
    """Per arm, one row per user (an anonymous response is its own user): responses, failed
    ones, dollars, successful ones, and successful ones slower than each threshold."""
    unit = func.coalesce(ExposureRow.user_key, ExposureRow.response_id)
    ok = ExposureRow.status == 200
    slow = [
        func.sum(case((and_(ok, ExposureRow.latency_ms > limit), 1), else_=0))
        for limit in thresholds
    ]
    query = (
        select(
            ExposureRow.arm,
            func.count(),
            func.sum(case((ok, 0), else_=1)),
            func.sum(func.coalesce(ExposureRow.cost_usd, 0.0)),
            func.sum(case((ok, 1), else_=0)),
            *slow,
        )
        .where(_counted(experiment_id, arms, since))
        .group_by(ExposureRow.arm, unit)
    )
    rows: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    with database.read() as session:
        for arm, *values in session.execute(query):
            rows[arm].append(tuple(float(value or 0) for value in values))
    return rows


def _estimate(rows: Sequence[tuple[float, ...]], numerator: int, denominator: int) -> RatioEstimate:
    return sequential.ratio([r[numerator] for r in rows], [r[denominator] for r in rows])


def _looks(
    database: Database, stored: StoredExperiment, arm: ArmSpec, alpha: float, min_users: int
) -> list[tuple[Judgement, float]]:
    """Every guardrail of one arm, unadjusted."""
    spec = stored.spec
    since = arm.resumed_at or 0.0
    latency = [g for g in spec.guardrails if g.metric == "latency_p95_ms"]
    control_p95 = p95_latency(database, stored.id, spec.control, since) if latency else None
    thresholds = (
        [g.latency_threshold(control_p95) for g in latency] if control_p95 is not None else []
    )
    totals = unit_totals(database, stored.id, [arm.name, spec.control], since, thresholds)
    mine, theirs = totals.get(arm.name, []), totals.get(spec.control, [])
    looks = []
    for guardrail in spec.guardrails:
        extra: dict[str, float | None] = {}
        # Columns: responses, failed, dollars, successful, then slower than each threshold.
        numerator, denominator = (1 if guardrail.metric == "error_rate" else 2), 0
        if guardrail.metric == "latency_p95_ms":
            found = latency.index(guardrail)
            extra = {
                "control_p95_ms": control_p95,
                "arm_p95_ms": p95_latency(database, stored.id, arm.name, since),
                "threshold_ms": thresholds[found] if thresholds else None,
            }
            numerator, denominator = 4 + found, 3
        if guardrail.metric == "latency_p95_ms" and not thresholds:
            # No control p95 yet, so no threshold: nothing to judge.
            pieces = [RatioEstimate(math.nan, math.nan, len(rows)) for rows in (mine, theirs)]
        else:
            pieces = [_estimate(rows, numerator, denominator) for rows in (mine, theirs)]
        looks.append(
            guardrails.look(guardrail, *pieces, alpha=alpha, min_users=min_users, extra=extra)
        )
    return looks


def judge(
    database: Database, stored: StoredExperiment, alpha: float, min_users: int
) -> list[Verdict]:
    """Every guardrail of every arm but the control, Holm-adjusted over all of them."""
    spec = stored.spec
    pairs: list[tuple[ArmSpec, Guardrail]] = []
    looks: list[tuple[Judgement, float]] = []
    for arm in spec.arms:
        if arm.name == spec.control or not spec.guardrails:
            continue
        looks += _looks(database, stored, arm, alpha, min_users)
        pairs += [(arm, guardrail) for guardrail in spec.guardrails]
    decided = guardrails.decide(looks, alpha)
    return [Verdict(arm, g, j) for (arm, g), j in zip(pairs, decided, strict=True)]


class GuardrailMonitor:
    """Counts stored outcomes per experiment and, once `every` of them arrived since its last
    check and `interval_s` passed since that check began, judges its guardrails in the calling
    (worker) thread, one check per experiment at a time; pauses each arm found breaching through
    `pause` (a versioned change, actor "guardrail"). The interval caps the cost: a check reads
    every user's outcomes (about 1 s at 100,000 responses on PostgreSQL)."""

    def __init__(
        self,
        database: Database,
        pause: Pause,
        *,
        every: int,
        interval_s: float,
        alpha: float,
        min_users: int,
    ) -> None:
        self.database = database
        self._pause = pause
        self.every = every
        self.interval_s = interval_s
        self.alpha = alpha
        self.min_users = min_users
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._next: dict[str, float] = {}
        self._busy: set[str] = set()

    def stored(self, stored: StoredExperiment) -> None:
        """One more outcome of the experiment is stored; checks when one is due."""
        spec = stored.spec
        if spec.status != "running" or not spec.guardrails:
            return
        now = time.monotonic()
        with self._lock:
            self._counts[spec.name] += 1
            due = self._counts[spec.name] >= self.every and now >= self._next.get(spec.name, 0)
            if not due or spec.name in self._busy:
                return
            self._busy.add(spec.name)
            self._counts[spec.name] = 0
            self._next[spec.name] = now + self.interval_s
        try:
            self.check(stored)
        except (SQLAlchemyError, StateUnavailable) as error:
            log.error("guardrails of %s not checked: %s", spec.name, error)
        finally:
            with self._lock:
                self._busy.discard(spec.name)

    def check(self, stored: StoredExperiment) -> list[Verdict]:
        """Judges the guardrails now and pauses every serving arm that breaches one."""
        verdicts = judge(self.database, stored, self.alpha, self.min_users)
        breaches: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for verdict in verdicts:
            if verdict.judgement.state == "breached" and not verdict.arm.paused:
                breaches[verdict.arm.name].append(verdict.evidence())
        for arm, evidence in breaches.items():
            try:
                self._pause(stored.spec.name, arm, evidence)
                log.warning("guardrail paused arm %s of %s: %s", arm, stored.spec.name, evidence)
            except InvalidChange as refused:
                # Another replica paused it first, or an admin changed the experiment.
                log.info("guardrail pause of %s/%s not needed: %s", stored.spec.name, arm, refused)
        return verdicts


def report(
    database: Database, stored: StoredExperiment, alpha: float, min_users: int
) -> list[dict[str, Any]]:
    """results["guardrails"]: one row per arm (not the control) and guardrail."""
    return [verdict.entry() for verdict in judge(database, stored, alpha, min_users)]


def blocked(stored: StoredExperiment, rows: list[dict[str, Any]]) -> set[str]:
    """Arms that may not be named winner: paused, or breaching a guardrail."""
    paused = {arm.name for arm in stored.spec.arms if arm.paused}
    return paused | {row["arm"] for row in rows if row["state"] == "breached"}


def annotated(
    found: dict[str, Any], stored: StoredExperiment, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """The results with each arm's `paused` and the guardrail rows."""
    spec = stored.spec
    for arm in found["arms"]:
        arm["paused"] = spec.arm(arm["arm"]).paused
    return found | {"guardrails": rows}
