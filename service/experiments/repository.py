"""Every read and write of experiment state: versioned changes with their audit trail."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.errors import InvalidChange, NotFound
from service.experiments import spec as specs
from service.experiments.models import AssignmentRow, AuditRow, ExperimentRow, Meta, VersionRow
from service.experiments.spec import ExperimentSpec
from service.experiments.store import Database

Change = Callable[[ExperimentSpec], ExperimentSpec]


@dataclass(frozen=True)
class StoredExperiment:
    """An experiment as the database holds it."""

    id: int
    spec: ExperimentSpec
    version: int
    weights_version: int
    updated_at: float


COLUMN_FIELDS = frozenset(
    ("name", "model", "arms", "control", "stickiness", "salt", "status", "winner")
)


def option_fields() -> frozenset[str]:
    """The spec's fields stored together in the `options` JSON column: every field without a
    column of its own, so a new spec field is stored and versioned with no further migration."""
    return frozenset(ExperimentSpec.model_fields) - COLUMN_FIELDS


def _stored(row: ExperimentRow) -> StoredExperiment:
    fields = (row.options or {}) | {
        "name": row.name,
        "model": row.model,
        "arms": row.arms,
        "control": row.control,
        "stickiness": row.stickiness,
        "salt": row.salt,
        "status": row.status,
        "winner": row.winner,
    }
    spec = ExperimentSpec.model_validate(fields)
    return StoredExperiment(row.id, spec, row.version, row.weights_version, row.updated_at)


def _write_spec(row: ExperimentRow, spec: ExperimentSpec) -> None:
    row.model, row.stickiness, row.salt = spec.model, spec.stickiness, spec.salt
    row.status, row.control, row.winner = spec.status, spec.control, spec.winner
    row.arms = [arm.model_dump() for arm in spec.arms]
    row.options = spec.model_dump(mode="json", include=set(option_fields()))


def state_version(database: Database) -> int:
    """The counter every change increments; replicas poll it to know when to reload."""
    with database.read() as session:
        return session.scalars(select(Meta.value).where(Meta.key == "version")).one()


def load_all(database: Database) -> tuple[int, list[StoredExperiment]]:
    """The state version and every experiment, read in one transaction."""
    with database.read() as session:
        version = session.scalars(select(Meta.value).where(Meta.key == "version")).one()
        rows = session.scalars(select(ExperimentRow).order_by(ExperimentRow.id)).all()
        return version, [_stored(row) for row in rows]


def find(database: Database, name: str) -> StoredExperiment:
    """The experiment of that name, or NotFound."""
    with database.read() as session:
        return _stored(_row(session, name, lock=False))


def _row(session: Session, name: str, *, lock: bool) -> ExperimentRow:
    query = select(ExperimentRow).where(ExperimentRow.name == name)
    row = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if row is None:
        raise NotFound(f"no experiment {name!r}", param="name")
    return row


def _begin_change(session: Session) -> None:
    """Bumps the state version first: on PostgreSQL its row lock serializes all changes."""
    session.execute(update(Meta).where(Meta.key == "version").values(value=Meta.value + 1))


def _check_model_free(session: Session, spec: ExperimentSpec, own_id: int | None) -> None:
    if spec.status == "concluded":
        return
    query = select(ExperimentRow.name).where(
        ExperimentRow.model == spec.model, ExperimentRow.status != "concluded"
    )
    if own_id is not None:
        query = query.where(ExperimentRow.id != own_id)
    taken = session.scalars(query).first()
    if taken is not None:
        raise InvalidChange(f"model {spec.model!r} is already captured by experiment {taken!r}")


def _record(
    session: Session, row: ExperimentRow, action: str, actor: str, changes: dict[str, Any]
) -> None:
    now = time.time()
    row.updated_at = now
    snapshot = {"spec": row_spec(row).model_dump(), "weights_version": row.weights_version}
    session.add(VersionRow(experiment_id=row.id, version=row.version, snapshot=snapshot))
    session.add(
        AuditRow(
            at=now,
            actor=actor,
            action=action,
            experiment=row.name,
            version=row.version,
            diff=changes,
        )
    )


def row_spec(row: ExperimentRow) -> ExperimentSpec:
    """The spec a row holds."""
    return _stored(row).spec


def create(
    database: Database, spec: ExperimentSpec, actor: str, served: Collection[str]
) -> StoredExperiment:
    """Stores a new experiment as version 1."""
    spec = spec.filled()
    specs.check_configurations(spec, served)
    try:
        with database.write() as session:
            _begin_change(session)
            if session.scalars(
                select(ExperimentRow.id).where(ExperimentRow.name == spec.name)
            ).first():
                raise IntegrityError("exists", None, ValueError(spec.name))
            _check_model_free(session, spec, None)
            now = time.time()
            row = ExperimentRow(
                name=spec.name, version=1, weights_version=1, created_at=now, updated_at=now
            )
            _write_spec(row, spec)
            session.add(row)
            session.flush()
            _record(session, row, "create", actor, specs.diff(None, spec))
            return _stored(row)
    except IntegrityError:
        raise InvalidChange(f"an experiment named {spec.name!r} exists", param="name") from None


def change(
    database: Database,
    name: str,
    action: str,
    apply: Change,
    actor: str,
    served: Collection[str],
    restored_weights_version: int | None = None,
    *,
    rebucket: bool = False,
    evidence: dict[str, Any] | None = None,
) -> StoredExperiment:
    """Applies a pure change to the stored state as a new version, or refuses it untouched.

    A rollback hands in the weights version it restores, so its SRM window continues; a
    re-bucket starts a new weights version and makes every older assignment stale. `evidence`
    (what made an automatic change) is kept in the audit entry's diff.
    """
    with database.write() as session:
        _begin_change(session)
        row = _row(session, name, lock=True)
        before = _stored(row).spec
        after = apply(before)
        if rebucket:
            after = after.model_copy(
                update={"rebucket_version": _fresh_weights_version(session, row)}
            )
        specs.check_configurations(after, served)
        _check_model_free(session, after, row.id)
        changes = specs.diff(before, after)
        if not changes:
            raise InvalidChange(f"the change leaves experiment {name!r} as it is")
        if evidence is not None:
            changes["evidence"] = evidence
        if restored_weights_version is not None and specs.weights_changed(before, after):
            row.weights_version = restored_weights_version
        elif rebucket:
            row.weights_version = after.rebucket_version
        elif specs.weights_changed(before, after):
            row.weights_version += 1
        row.version += 1
        _write_spec(row, after)
        _record(session, row, action, actor, changes)
        return _stored(row)


def _fresh_weights_version(session: Session, row: ExperimentRow) -> int:
    """A weights version above every assignment's: a rollback reuses older numbers."""
    query = select(func.max(AssignmentRow.weights_version)).where(
        AssignmentRow.experiment_id == row.id
    )
    return max(row.weights_version, session.scalars(query).one() or 0) + 1


def snapshot(database: Database, name: str, version: int) -> tuple[ExperimentSpec, int]:
    """The spec an experiment had at one version, and its weights version then."""
    with database.read() as session:
        row = _row(session, name, lock=False)
        stored = session.scalars(
            select(VersionRow.snapshot).where(
                VersionRow.experiment_id == row.id, VersionRow.version == version
            )
        ).one_or_none()
    if stored is None:
        raise InvalidChange(f"experiment {name!r} has no version {version}", param="version")
    return ExperimentSpec.model_validate(stored["spec"]), int(stored["weights_version"])


def audit(
    database: Database, experiment: str | None, actor: str | None, limit: int
) -> list[dict[str, Any]]:
    """Changes, newest first, optionally of one experiment or one actor."""
    query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
    if experiment is not None:
        query = query.where(AuditRow.experiment == experiment)
    if actor is not None:
        query = query.where(AuditRow.actor == actor)
    with database.read() as session:
        return [
            {
                "id": row.id,
                "at": row.at,
                "actor": row.actor,
                "action": row.action,
                "experiment": row.experiment,
                "version": row.version,
                "diff": row.diff,
            }
            for row in session.scalars(query)
        ]


def record_event(database: Database, action: str, actor: str, changes: dict[str, Any]) -> None:
    """An audit entry for a change outside any experiment (a configurations reload)."""
    with database.write() as session:
        _begin_change(session)
        session.add(
            AuditRow(
                at=time.time(),
                actor=actor,
                action=action,
                experiment=None,
                version=None,
                diff=changes,
            )
        )
