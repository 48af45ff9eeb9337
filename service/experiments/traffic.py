"""Writes on the request path: assignments, exposures, outcomes and feedback."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from service.errors import PermissionDenied, UnknownResponse
from service.experiments.identity import Assigned
from service.experiments.models import AssignmentRow, ExposureRow, FeedbackRow
from service.experiments.store import Database

ARM_PAUSED = "arm-paused"
"""The phase of a response whose user's arm was paused (the control served it): no arm's."""


@dataclass(frozen=True)
class Exposure:
    """One response served through an experiment, as routing decided it; `owner` is the caller
    it is served to, `correlation_id` the client's own id for the request."""

    response_id: str
    experiment_id: int
    arm: str
    configuration: str
    user_key: str | None
    phase: str
    weights_version: int
    owner: str | None = None
    correlation_id: str | None = None


@dataclass(frozen=True)
class ArmOutcome:
    """How a response served through an experiment ended, as its arm is measured."""

    status: int
    latency_ms: float
    ttft_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float

    @classmethod
    def since(
        cls,
        started: float,
        status: int,
        first_token: float | None = None,
        tokens: tuple[int, int] = (0, 0),
        cost_usd: float = 0.0,
    ) -> ArmOutcome:
        """An outcome ending now, from perf_counter seconds."""
        now = time.perf_counter()
        ttft_ms = (first_token - started) * 1000 if first_token is not None else None
        return cls(status, (now - started) * 1000, ttft_ms, tokens[0], tokens[1], cost_usd)


def _insert_assignment(database: Database, values: dict[str, Any], rebucket_version: int) -> Any:
    """Inserts the assignment, or replaces one made before the last re-bucket."""
    dialect = postgresql if database.dialect == "postgresql" else sqlite
    statement = dialect.insert(AssignmentRow).values(**values)
    return statement.on_conflict_do_update(
        index_elements=["experiment_id", "user_key"],
        set_={
            "arm": statement.excluded.arm,
            "weights_version": statement.excluded.weights_version,
            "assigned_at": statement.excluded.assigned_at,
        },
        where=AssignmentRow.weights_version < rebucket_version,
    )


def assign_and_expose(
    database: Database,
    exposure: Exposure,
    configurations: Mapping[str, str],
    rebucket_version: int = 0,
    *,
    paused: Collection[str] = (),
) -> str:
    """Stores the user's proposed arm unless one exists (another replica may have been first)
    that is not older than the last re-bucket, records the exposure under the arm that won,
    and commits both before the response is sent. `configurations` says what serves each
    arm now: the control's for an arm in `paused`, whose exposure is marked ARM_PAUSED."""
    assert exposure.user_key is not None
    values = {
        "experiment_id": exposure.experiment_id,
        "user_key": exposure.user_key,
        "arm": exposure.arm,
        "weights_version": exposure.weights_version,
        "assigned_at": time.time(),
    }
    with database.write() as session:
        session.execute(_insert_assignment(database, values, rebucket_version))
        arm = session.scalars(
            select(AssignmentRow.arm).where(
                AssignmentRow.experiment_id == exposure.experiment_id,
                AssignmentRow.user_key == exposure.user_key,
            )
        ).one()
        row = _exposure_row(exposure, arm, configurations[arm])
        if arm in paused:
            row.phase = ARM_PAUSED
        session.add(row)
    return arm


def assignment_of(database: Database, experiment_id: int, user_key: str) -> Assigned | None:
    """The user's stored assignment, read only."""
    with database.read() as session:
        row = session.get(AssignmentRow, (experiment_id, user_key))
        return Assigned(row.arm, row.weights_version) if row is not None else None


def expose(database: Database, exposure: Exposure) -> None:
    """Records an exposure whose arm is already decided."""
    with database.write() as session:
        session.add(_exposure_row(exposure, exposure.arm, exposure.configuration))


def _exposure_row(exposure: Exposure, arm: str, configuration: str) -> ExposureRow:
    return ExposureRow(
        response_id=exposure.response_id,
        experiment_id=exposure.experiment_id,
        arm=arm,
        configuration=configuration,
        user_key=exposure.user_key,
        phase=exposure.phase,
        weights_version=exposure.weights_version,
        created_at=time.time(),
        owner=exposure.owner,
        correlation_id=exposure.correlation_id,
    )


def _latest(response_id: str, experiment_id: int | None = None) -> Select[int]:
    query = select(func.max(ExposureRow.id)).where(ExposureRow.response_id == response_id)
    if experiment_id is not None:
        query = query.where(ExposureRow.experiment_id == experiment_id)
    return query


def record_outcome(
    database: Database, response_id: str, experiment_id: int, outcome: ArmOutcome
) -> None:
    """Completes the latest exposure of that response with how it ended."""
    with database.write() as session:
        exposure_id = session.scalars(_latest(response_id, experiment_id)).one()
        if exposure_id is None:
            return
        session.execute(
            update(ExposureRow)
            .where(ExposureRow.id == exposure_id)
            .values(
                status=outcome.status,
                latency_ms=outcome.latency_ms,
                ttft_ms=outcome.ttft_ms,
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
                cost_usd=outcome.cost_usd,
            )
        )


def record_feedback(
    database: Database, response_id: str, score: float, comment: str | None, caller: str
) -> tuple[int, str]:
    """Stores the caller's score for a response it was served (replacing its own earlier one);
    the experiment id and arm. An exposure stored before owners were recorded has none."""
    with database.write() as session:
        exposure_id = session.scalars(_latest(response_id)).one()
        if exposure_id is None:
            raise UnknownResponse(
                f"no response {response_id!r} was served through an experiment",
                param="response_id",
            )
        exposure = session.get_one(ExposureRow, exposure_id)
        if exposure.owner is not None and exposure.owner != caller:
            raise PermissionDenied(
                f"response {response_id!r} was served to another caller; only it may score it",
                param="response_id",
            )
        row = session.scalars(
            select(FeedbackRow).where(FeedbackRow.exposure_id == exposure_id)
        ).one_or_none()
        if row is None:
            row = FeedbackRow(
                exposure_id=exposure_id, experiment_id=exposure.experiment_id, arm=exposure.arm
            )
            session.add(row)
        row.score, row.comment, row.created_at = score, comment, time.time()
        return exposure.experiment_id, exposure.arm
