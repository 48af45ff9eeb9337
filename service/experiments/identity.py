"""Who a request is to an experiment (the unit its arm sticks to), and why a unit gets its arm.

The identity order, the same for every experiment: the body's `user` field, else the
X-Ladder-User header, else (with LADDER_EXPERIMENT_KEY_UNIT) the caller's API key digest;
else the request is anonymous and the experiment's `stickiness` says what it is served.
Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from service.experiments.spec import ExperimentSpec

Source = Literal["user", "header", "key"]
Reason = Literal["fixed", "anonymous", "sticky", "bucket", "rebucket"]
KEY_PREFIX = "key:"  # how the API guard names a caller admitted by key (key:<sha256 hex>)


class Identity(NamedTuple):  # a tuple: built on every routed request, it must be cheap
    """A request's unit of assignment: its key and where the key came from; None: anonymous."""

    key: str | None
    source: Source | None


ANONYMOUS = Identity(None, None)


def identify(
    user: str | None, header: str | None, caller: str | None, *, key_unit: bool
) -> Identity:
    """The first of: `user`, the header, the caller's `key:<digest>` when keys are units."""
    if user:
        return Identity(user, "user")
    if header:
        return Identity(header, "header")
    if key_unit and caller and caller.startswith(KEY_PREFIX):
        return Identity(caller, "key")
    return ANONYMOUS


@dataclass(frozen=True)
class Assigned:
    """A stored assignment: the arm and the weights version it was made under."""

    arm: str
    weights_version: int


def is_stale(spec: ExperimentSpec, assigned: Assigned) -> bool:
    """Whether an assignment predates the experiment's last re-bucket (it is then re-made)."""
    return assigned.weights_version < spec.rebucket_version


@dataclass(frozen=True)
class Lookup:
    """The arm a unit has or would get, and why; `arm` None: a random arm per request;
    `serves` the arm whose configuration serves it when not its own (a paused arm)."""

    arm: str | None
    stored: bool
    reason: Reason
    detail: str
    serves: str | None = None


def explain(
    spec: ExperimentSpec,
    fixed_arm: str | None,
    identity: Identity,
    assigned: Assigned | None,
    by_bucket: str | None,
) -> Lookup:
    """What routing does for the unit, as ExperimentService.route decides it.

    `by_bucket` is the arm the unit's bucket falls in under the current weights (None when
    anonymous); `assigned` its stored assignment, if any.
    """
    if fixed_arm is not None:
        why = "winner" if spec.status == "concluded" else "control"
        return Lookup(fixed_arm, False, "fixed", f"experiment is {spec.status}: serves its {why}")
    if identity.key is None:
        if spec.stickiness == "random":
            return Lookup(None, False, "anonymous", "anonymous: a random arm for each request")
        return Lookup(spec.control, False, "anonymous", "anonymous: served the control")
    if assigned is not None and not is_stale(spec, assigned):
        detail = f"assigned under weights version {assigned.weights_version}"
        return Lookup(assigned.arm, True, "sticky", detail)
    if assigned is not None:
        detail = (
            f"arm {assigned.arm!r} (weights version {assigned.weights_version}) predates the"
            f" re-bucket at weights version {spec.rebucket_version}: re-assigned by bucket"
        )
        return Lookup(by_bucket, False, "rebucket", detail)
    return Lookup(by_bucket, False, "bucket", "not assigned yet: the bucket's arm")
