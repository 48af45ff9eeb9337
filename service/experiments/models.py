"""The experiments' tables, as SQLAlchemy 2.0 typed ORM classes; Alembic migrates them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """The declarative base of every experiments table."""


class Meta(Base):
    """Counters shared by replicas; `version` grows with every change to any experiment."""

    __tablename__ = "ladder_meta"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


class ExperimentRow(Base):
    """An experiment's current state; its arms are a JSON list of {name, configuration, weight}."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    stickiness: Mapped[str] = mapped_column(String(16))
    salt: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    control: Mapped[str] = mapped_column(String(64))
    winner: Mapped[str | None] = mapped_column(String(64))
    arms: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer)
    weights_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    # The spec's fields that have no column of their own (see repository.OPTION_FIELDS).
    options: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class VersionRow(Base):
    """A full snapshot of an experiment after each change, so any version can be restored."""

    __tablename__ = "experiment_versions"
    __table_args__ = (UniqueConstraint("experiment_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id"))
    version: Mapped[int] = mapped_column(Integer)
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)


class AuditRow(Base):
    """One change: when, who, what, and the difference it made."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    experiment: Mapped[str | None] = mapped_column(String(64), index=True)
    version: Mapped[int | None] = mapped_column(Integer)
    diff: Mapped[dict[str, Any]] = mapped_column(JSON)


class AssignmentRow(Base):
    """A user's arm in an experiment, fixed at first sight (this is what makes arms sticky)."""

    __tablename__ = "assignments"

    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id"), primary_key=True)
    user_key: Mapped[str] = mapped_column(String(256), primary_key=True)
    arm: Mapped[str] = mapped_column(String(64))
    weights_version: Mapped[int] = mapped_column(Integer)
    assigned_at: Mapped[float] = mapped_column(Float)


class ExposureRow(Base):
    """One response served through an experiment, and its outcome once it finished.

    `response_id` is the server's; `correlation_id` the client's X-Request-Id; `owner` the caller
    it was served to (key digest, or address when keys are off), the only one whose feedback counts.
    """

    __tablename__ = "exposures"
    __table_args__ = (
        Index("ix_exposures_experiment_arm", "experiment_id", "arm"),
        Index("ix_exposures_experiment_id", "experiment_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    response_id: Mapped[str] = mapped_column(String(128), index=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id"))
    arm: Mapped[str] = mapped_column(String(64))
    configuration: Mapped[str] = mapped_column(String(128))
    user_key: Mapped[str | None] = mapped_column(String(256))
    phase: Mapped[str] = mapped_column(String(16))
    weights_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    status: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    owner: Mapped[str | None] = mapped_column(String(300))
    correlation_id: Mapped[str | None] = mapped_column(String(128))


class FeedbackRow(Base):
    """A score of one response by its owner; the owner's second score replaces the first."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    exposure_id: Mapped[int] = mapped_column(ForeignKey("exposures.id"), unique=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id"), index=True)
    arm: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
