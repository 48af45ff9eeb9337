"""What an experiment is (a validated spec), and the pure changes the admin API may make to it."""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from service.errors import InvalidChange, first_problem
from service.experiments.guardrails import Guardrail, check_unique
from service.experiments.planning import ExperimentPlan

Status = Literal["draft", "running", "paused", "concluded"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class ArmSpec(BaseModel):
    """One arm: the configuration it serves and its share of new users."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="The arm's name, unique in its experiment.")
    configuration: str = Field(min_length=1, description="The configuration this arm serves.")
    weight: float = Field(ge=0, le=1_000_000, description="Relative share of new users.")
    paused: bool = Field(
        False,
        description="A paused arm serves nobody: its users get the control and keep their arm"
        " for a resume; what it served while paused is not counted for it.",
    )
    paused_at: float | None = Field(None, description="When the arm was last paused.")
    resumed_at: float | None = Field(
        None, description="When the arm was last resumed; guardrails judge what it served since."
    )


class ExperimentSpec(BaseModel):
    """An experiment: the model name it captures, its arms, how users stick, and its status."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    model: str = Field(min_length=1, max_length=128, description="The public model it captures.")
    arms: tuple[ArmSpec, ...] = Field(min_length=2, max_length=20)
    control: str = Field("", description="The control arm; the first arm when left empty.")
    stickiness: Literal["control", "random"] = Field(
        "control",
        description="What anonymous requests (no `user`, no X-Ladder-User, no key as unit) are"
        " served: `control` (counted apart, never assigned) or `random` (an arm per request)."
        " The legacy values `user` and `header` are accepted and mean `control`: every"
        " experiment identifies users by `user`, then the header, then (optionally) the key.",
    )
    salt: str = Field("", max_length=64, description="Hash salt; a random one when left empty.")
    status: Status = "draft"
    winner: str | None = Field(None, description="The promoted arm of a concluded experiment.")
    guardrails: tuple[Guardrail, ...] = Field(
        (),
        max_length=20,
        description="Limits every arm must keep against the control; a significant breach"
        " pauses the arm (see service/experiments/guardrails.py).",
    )
    plan: ExperimentPlan | None = Field(
        None, description="Baseline, MDE and traffic it was planned for; results show progress."
    )
    rebucket_version: int = Field(
        0,
        ge=0,
        description="Weights version of the last re-bucket: assignments made under an older one"
        " are re-made by the current weights when their user is next seen.",
    )

    @field_validator("stickiness", mode="before")
    @classmethod
    def _legacy_stickiness(cls, value: object) -> object:
        return "control" if value in ("user", "header") else value

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
        check_unique(self.guardrails)
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


def with_arm_paused(spec: ExperimentSpec, arm: str, paused: bool, at: float) -> ExperimentSpec:
    """Pauses or resumes one arm (not the control); its users keep their assignment."""
    found = spec.arm(arm)
    if spec.status == "concluded":
        raise InvalidChange(f"experiment {spec.name!r} is concluded; roll back to change it")
    if paused and arm == (spec.control or spec.arms[0].name):
        raise InvalidChange(
            f"arm {arm!r} is the control; pause the experiment instead", param="arm"
        )
    if found.paused == paused:
        state = "paused" if paused else "not paused"
        raise InvalidChange(f"arm {arm!r} is already {state}", param="arm")
    stamp = {"paused": paused, "paused_at" if paused else "resumed_at": at}
    arms = [a.model_copy(update=stamp) if a.name == arm else a for a in spec.arms]
    return spec.model_copy(update={"arms": tuple(arms)})


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
        for field in ("configuration", "weight", "paused"):
            if previous.get(field) != arm[field]:
                changes[f"arms.{arm['name']}.{field}"] = [previous.get(field), arm[field]]
    return changes


def weights_changed(before: ExperimentSpec, after: ExperimentSpec) -> bool:
    """Whether new users would be split differently (this starts a new SRM window)."""
    return [a.weight for a in before.arms] != [a.weight for a in after.arms]
