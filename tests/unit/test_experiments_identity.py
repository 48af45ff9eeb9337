"""Who a request is to an experiment (user, then header, then key when keys are units), and the
reason a dry run gives for the arm a unit gets; pure functions, no I/O."""

from __future__ import annotations

import pytest

from service.experiments.identity import (
    ANONYMOUS,
    Assigned,
    Identity,
    explain,
    identify,
)
from service.experiments.spec import ExperimentSpec
from tests.support.experiments import experiment_body

KEY = "key:" + "ab" * 32


@pytest.mark.parametrize(
    ("user", "header", "caller", "key_unit", "expected"),
    [
        ("ann", "bob", KEY, True, Identity("ann", "user")),
        (None, "bob", KEY, True, Identity("bob", "header")),
        ("", "bob", KEY, True, Identity("bob", "header")),
        (None, None, KEY, True, Identity(KEY, "key")),
        (None, None, KEY, False, ANONYMOUS),
        (None, "", None, True, ANONYMOUS),
        (None, None, "ip:127.0.0.1", True, ANONYMOUS),
        (None, None, "user:ann", True, ANONYMOUS),
    ],
)
def test_identity_is_user_then_header_then_key_when_keys_are_units(
    user: str | None, header: str | None, caller: str | None, key_unit: bool, expected: Identity
) -> None:
    assert identify(user, header, caller, key_unit=key_unit) == expected


@pytest.mark.parametrize(("given", "stored"), [("user", "control"), ("header", "control")])
def test_legacy_stickiness_values_are_accepted_and_mean_control(given: str, stored: str) -> None:
    assert ExperimentSpec.model_validate(experiment_body(stickiness=given)).stickiness == stored
    assert ExperimentSpec.model_validate(experiment_body()).stickiness == "control"


def spec(**overrides: object) -> ExperimentSpec:
    return ExperimentSpec.model_validate(experiment_body(**overrides)).filled()


def test_a_dry_run_names_the_reason_for_each_kind_of_unit() -> None:
    running, ann = spec(), Identity("ann", "user")
    sticky = explain(running, None, ann, Assigned("treatment", 1), "control")
    assert (sticky.arm, sticky.stored, sticky.reason) == ("treatment", True, "sticky")
    fresh = explain(running, None, ann, None, "control")
    assert (fresh.arm, fresh.stored, fresh.reason) == ("control", False, "bucket")
    fixed = explain(spec(status="paused"), "control", ann, Assigned("treatment", 1), "treatment")
    assert (fixed.arm, fixed.reason) == ("control", "fixed")
    anonymous = explain(running, None, ANONYMOUS, None, None)
    assert (anonymous.arm, anonymous.reason) == ("control", "anonymous")
    random = explain(spec(stickiness="random"), None, ANONYMOUS, None, None)
    assert (random.arm, random.reason) == (None, "anonymous")


def test_an_assignment_older_than_the_rebucket_is_re_made_by_bucket() -> None:
    rebucketed, ann = spec(rebucket_version=3), Identity("ann", "user")
    stale = explain(rebucketed, None, ann, Assigned("control", 2), "treatment")
    assert (stale.arm, stale.stored, stale.reason) == ("treatment", False, "rebucket")
    kept = explain(rebucketed, None, ann, Assigned("control", 3), "treatment")
    assert (kept.arm, kept.stored, kept.reason) == ("control", True, "sticky")
