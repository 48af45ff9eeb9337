"""What an experiment is (a validated spec), and the pure changes the admin API may make to it."""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.errors import InvalidChange, first_problem

Status = Literal["draft", "running", "paused", "concluded"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class ArmSpec(BaseModel):
    """One arm: the configuration it serves and its share of new users."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="The arm's name, unique in its experiment.")
    configuration: str = Field(min_length=1, description="The configuration this arm serves.")
    weight: float = Field(ge=0, le=1_000_000, description="Relative share of new users.")


class ExperimentSpec(BaseModel):
    """An experiment: the model name it captures, its arms, how users stick, and its status."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    model: str = Field(min_length=1, max_length=128, description="The public model it captures.")
    arms: tuple[ArmSpec, ...] = Field(min_length=2, max_length=20)
    control: str = Field("", description="The control arm; the first arm when left empty.")
    stickiness: Literal["user", "header"] = Field(
        "user", description="Sticky key: the body's `user` field, or the X-Ladder-User header."
    )
    salt: str = Field("", max_length=64, description="Hash salt; a random one when left empty.")
    status: Status = "draft"
    winner: str | None = Field(None, description="The promoted arm of a concluded experiment.")

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ValueError("arm names must be unique")
        if sum(arm.weight for arm in self.arms) <= 0:
            raise ValueError("the arms' weights must add up to more than 0")
        if self.control and self.control not in names:
            raise ValueError(f"control {self.control!r} is not an arm")
        if self.winner is not None and self.winner not in names:
            raise ValueError(f"winner {self.winner!r} is not an arm")
        return self

    def filled(self) -> ExperimentSpec:
        """The spec with its control and salt chosen."""
        return self.model_copy(
            update={
                "control": self.control or self.arms[0].name,
                "salt": self.salt or secrets.token_hex(8),
            }
        )

    def arm(self, name: str) -> ArmSpec:
        """The arm of that name; InvalidChange when there is none."""
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise InvalidChange(f"experiment {self.name!r} has no arm {name!r}", param="arm")


def validated(raw: Mapping[str, Any]) -> ExperimentSpec:
    """A spec from raw fields; InvalidChange naming the first problem."""
    try:
        return ExperimentSpec.model_validate(raw)
    except ValidationError as error:
        raise InvalidChange(first_problem(error)) from None


def check_configurations(spec: ExperimentSpec, served: Collection[str]) -> None:
    """InvalidChange when an arm names a configuration that is not served."""
    for arm in spec.arms:
        if arm.configuration not in served:
            raise InvalidChange(
                f"arm {arm.name!r}: unknown configuration {arm.configuration!r}"
                f" (served: {', '.join(sorted(served))})",
                param="arms",
            )


def with_weights(spec: ExperimentSpec, weights: Mapping[str, float]) -> ExperimentSpec:
    """New weights for some or all arms; only users not yet assigned follow them."""
    if spec.status == "concluded":
        raise InvalidChange(f"experiment {spec.name!r} is concluded; roll back to change it")
    for name, weight in weights.items():
        spec.arm(name)
        if not 0 <= weight <= 1_000_000:
            raise InvalidChange(
                f"arm {name!r}: weight must be between 0 and 1000000", param="weights"
            )
    arms = [arm.model_dump() | {"weight": weights.get(arm.name, arm.weight)} for arm in spec.arms]
    return validated(spec.model_dump() | {"arms": arms})


def with_status(spec: ExperimentSpec, status: Status) -> ExperimentSpec:
    """Starts, pauses or resumes; concluding goes through promote."""
    if status not in ("running", "paused"):
        raise InvalidChange(f"status can be set to running or paused, not {status!r}")
    if spec.status == "concluded":
        raise InvalidChange(f"experiment {spec.name!r} is concluded; roll back to change it")
    if spec.status == status:
        raise InvalidChange(f"experiment {spec.name!r} is already {status}")
    return spec.model_copy(update={"status": status})


def promoted(spec: ExperimentSpec, arm: str) -> ExperimentSpec:
    """Gives one arm 100 % of the traffic, returning users included, and concludes."""
    spec.arm(arm)
    if spec.status == "concluded" and spec.winner == arm:
        raise InvalidChange(f"arm {arm!r} is already promoted")
    arms = [a.model_dump() | {"weight": 100.0 if a.name == arm else 0.0} for a in spec.arms]
    return validated(spec.model_dump() | {"arms": arms, "status": "concluded", "winner": arm})


def diff(before: ExperimentSpec | None, after: ExperimentSpec) -> dict[str, Any]:
    """The fields a change altered, as {field: [before, after]}; arms by name."""
    old = before.model_dump() if before else {}
    new = after.model_dump()
    changes: dict[str, Any] = {}
    for key, value in new.items():
        if key == "arms":
            continue
        if old.get(key) != value:
            changes[key] = [old.get(key), value]
    old_arms = {arm["name"]: arm for arm in old.get("arms", [])}
    for arm in new["arms"]:
        previous = old_arms.get(arm["name"], {})
        for field in ("configuration", "weight"):
            if previous.get(field) != arm[field]:
                changes[f"arms.{arm['name']}.{field}"] = [previous.get(field), arm[field]]
    return changes


def weights_changed(before: ExperimentSpec, after: ExperimentSpec) -> bool:
    """Whether new users would be split differently (this starts a new SRM window)."""
    return [a.weight for a in before.arms] != [a.weight for a in after.arms]
