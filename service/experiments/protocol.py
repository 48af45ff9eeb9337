"""Wire models of the admin API and of POST /v1/feedback."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.experiments.guardrails import Guardrail
from service.experiments.identity import Identity, Lookup, Reason, Source
from service.experiments.repository import StoredExperiment
from service.experiments.spec import ArmSpec, Status


class WeightsChange(BaseModel):
    """New weights by arm name; arms left out keep theirs."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = Field(min_length=1)
    rebucket: bool = Field(
        False,
        description="Re-assign every user, returning ones included, by the new weights when next"
        " seen; by default users already assigned keep their arm.",
    )


class PromoteRequest(BaseModel):
    """The arm that gets 100 % of the traffic."""

    model_config = ConfigDict(extra="forbid")

    arm: str = Field(min_length=1)


class RollbackRequest(BaseModel):
    """The version to restore; the one before the current when left out."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(None, ge=1)


class ExperimentOut(BaseModel):
    """An experiment's current state."""

    name: str
    model: str
    status: Status
    arms: list[ArmSpec]
    control: str
    winner: str | None
    guardrails: list[Guardrail] = Field(default_factory=list)
    stickiness: str
    salt: str
    version: int = Field(description="Grows with every change; rollback restores a version.")
    weights_version: int = Field(description="Grows when weights change (new SRM window).")
    rebucket_version: int = Field(
        0, description="Weights version of the last re-bucket; older assignments are re-made."
    )
    updated_at: float

    @classmethod
    def of(cls, stored: StoredExperiment) -> ExperimentOut:
        """The wire form of a stored experiment."""
        return cls(
            **stored.spec.model_dump(exclude={"arms"}),
            arms=list(stored.spec.arms),
            version=stored.version,
            weights_version=stored.weights_version,
            updated_at=stored.updated_at,
        )


class AssignmentOut(BaseModel):
    """A dry run of routing for one unit: the arm it has or would get, and why."""

    experiment: str
    unit: str | None = Field(description="The unit's key; None: the request is anonymous.")
    source: Source | None = Field(
        description="Where the key came from, by the identity order user > header > key."
    )
    arm: str | None = Field(description="The arm; None: anonymous requests get a random arm.")
    configuration: str | None
    stored: bool = Field(description="Whether the arm is the unit's stored assignment.")
    reason: Reason
    detail: str
    status: Status
    weights_version: int

    @classmethod
    def of(cls, stored: StoredExperiment, identity: Identity, lookup: Lookup) -> AssignmentOut:
        """The wire form of a lookup."""
        spec = stored.spec
        return cls(
            experiment=spec.name,
            unit=identity.key,
            source=identity.source,
            arm=lookup.arm,
            configuration=spec.arm(lookup.serves or lookup.arm).configuration
            if lookup.arm
            else None,
            stored=lookup.stored,
            reason=lookup.reason,
            detail=lookup.detail,
            status=spec.status,
            weights_version=stored.weights_version,
        )


class AuditEntry(BaseModel):
    """One change: when, who, what, and its difference as {field: [before, after]}."""

    id: int
    at: float
    actor: str
    action: str
    experiment: str | None
    version: int | None
    diff: dict[str, Any]


class FeedbackRequest(BaseModel):
    """A user's score of a response served through an experiment."""

    model_config = ConfigDict(extra="forbid")

    response_id: str = Field(min_length=1, max_length=128, description="The response's `id`.")
    score: float = Field(description="+1 or -1 (thumbs), or a rating from 0 to 1.")
    comment: str | None = Field(None, max_length=4000)
    user: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="With API keys off, the `user` the response was served to (or send "
        "X-Ladder-User); only that user's score counts.",
    )

    @field_validator("score")
    @classmethod
    def _thumbs_or_rating(cls, value: float) -> float:
        if value != -1 and not 0.0 <= value <= 1.0:
            raise ValueError("score must be +1, -1, or between 0 and 1")
        return value


class FeedbackOut(BaseModel):
    """Where the feedback was counted."""

    response_id: str
    experiment: str
    arm: str
    score: float = Field(description="The score on 0..1 (-1 is stored as 0).")
