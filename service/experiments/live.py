"""Experiments as routing sees them: bucket ranges computed once, the arm a unit is served,
and a dry run's explanation of it. No I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from service.experiments.assignment import arm_for_bucket, bucket, bucket_bounds
from service.experiments.identity import Assigned, Identity, Lookup, explain
from service.experiments.repository import StoredExperiment


@dataclass(frozen=True)
class LiveExperiment:
    """An experiment as routing sees it, with its bucket ranges computed once."""

    stored: StoredExperiment
    bounds: tuple[int, ...]
    fixed_arm: str | None
    serves: Mapping[str, str]
    """The configuration serving each arm's users now: the control's for a paused arm."""

    @classmethod
    def of(cls, stored: StoredExperiment) -> LiveExperiment:
        """Precomputes routing: paused and draft serve the control, concluded the winner."""
        spec = stored.spec
        fixed = {"running": None, "concluded": spec.winner or spec.control}.get(
            spec.status, spec.control
        )
        control = spec.arm(spec.control).configuration
        serves = {
            a.name: control if a.paused and fixed is None else a.configuration for a in spec.arms
        }
        return cls(stored, bucket_bounds([arm.weight for arm in spec.arms]), fixed, serves)

    def served_arm(self, arm: str) -> str:
        """The arm whose configuration serves a user of `arm`: the control while it is paused."""
        spec = self.stored.spec
        return spec.control if self.fixed_arm is None and spec.arm(arm).paused else arm

    def arm_by_bucket(self, key: str) -> str:
        """The arm a key's bucket falls in under the current weights."""
        spec = self.stored.spec
        return spec.arms[arm_for_bucket(self.bounds, bucket(spec.salt, key))].name

    def explain(self, identity: Identity, assigned: Assigned | None) -> Lookup:
        """The arm a unit has or would get, the arm serving it, and why (route's decision)."""
        by_bucket = self.arm_by_bucket(identity.key) if identity.key else None
        found = explain(self.stored.spec, self.fixed_arm, identity, assigned, by_bucket)
        if found.arm is None or self.served_arm(found.arm) == found.arm:
            return found
        detail = f"{found.detail}; arm {found.arm!r} is paused: its users get the control"
        return replace(found, serves=self.served_arm(found.arm), detail=detail)


@dataclass(frozen=True)
class Route:
    """Where a request goes: an arm's configuration, and the experiment it is counted in."""

    configuration: str
    experiment: str
    arm: str


@dataclass(frozen=True)
class Decision:
    """What routing decided in memory: the arm when already known, and the unit's key."""

    live: LiveExperiment
    arm: str | None
    key: str | None
