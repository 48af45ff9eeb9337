"""A weight change with `rebucket` re-assigns returning users by the new weights (on every
replica, past any cached arm, after a rollback too); without it users keep their arm."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.experiments.models import AssignmentRow, ExposureRow
from service.experiments.spec import ExperimentSpec
from service.experiments.stats import chi_square_sf
from tests.support.experiments import ADMIN, experiment_body, open_service, route_all
from tests.support.units import assigned, chat, database_of, serve

USERS = [f"user-{n}" for n in range(40)]
ALL_TO_TREATMENT = {"control": 0, "treatment": 100}


@pytest.fixture()
def client(tmp_path: Path, db_url: str) -> Iterator[TestClient]:
    yield from serve(tmp_path, db_url, experiment_body())


def exposed_arms(client: TestClient) -> list[str]:
    with database_of(client).read() as session:
        return list(session.scalars(select(ExposureRow.arm).order_by(ExposureRow.id)))


def set_weights(client: TestClient, *, rebucket: bool) -> dict[str, object]:
    body = {"weights": ALL_TO_TREATMENT, "rebucket": rebucket}
    changed = client.post("/admin/experiments/support/weights", json=body, headers=ADMIN)
    assert changed.status_code == 200, changed.text
    found: dict[str, object] = changed.json()
    return found


def test_a_rebucket_sends_returning_users_to_the_new_split(client: TestClient) -> None:
    before = {user: chat(client, user=user) for user in USERS}
    assert set(before.values()) == {"control", "treatment"}
    served_before = exposed_arms(client)
    changed = set_weights(client, rebucket=True)
    assert changed["rebucket_version"] == changed["weights_version"] == 2
    assert {user: chat(client, user=user) for user in USERS} == dict.fromkeys(USERS, "treatment")
    assert assigned(client) == dict.fromkeys(USERS, "treatment")
    assert exposed_arms(client)[: len(USERS)] == served_before  # what was served is kept
    entry = client.get("/admin/audit?experiment=support", headers=ADMIN).json()[0]
    assert entry["action"] == "weights+rebucket" and entry["diff"]["rebucket_version"] == [0, 2]


def test_without_a_rebucket_returning_users_keep_their_arm(client: TestClient) -> None:
    before = {user: chat(client, user=user) for user in USERS}
    changed = set_weights(client, rebucket=False)
    assert changed["rebucket_version"] == 0
    assert {user: chat(client, user=user) for user in USERS} == before
    assert {chat(client, user=f"new-{n}") for n in range(10)} == {"treatment"}


def test_a_replica_with_cached_arms_serves_the_rebucketed_ones_once_it_refreshes(
    db_url: str,
) -> None:
    first, second = open_service(db_url), open_service(db_url)
    first.create(ExperimentSpec.model_validate(experiment_body()), "test")
    second.refresh()
    assert set(route_all(second, USERS).values()) == {"control", "treatment"}
    first.set_weights("support", ALL_TO_TREATMENT, "test", rebucket=True)
    assert set(route_all(first, USERS).values()) == {"treatment"}
    second.refresh()
    assert set(route_all(second, USERS).values()) == {"treatment"}


def test_a_rebucket_after_a_rollback_still_moves_every_returning_user(db_url: str) -> None:
    service = open_service(db_url)
    service.create(ExperimentSpec.model_validate(experiment_body()), "test")
    service.set_weights("support", {"control": 30, "treatment": 70}, "test")
    assert set(route_all(service, USERS).values()) == {"control", "treatment"}
    service.rollback("support", 1, "test")  # the weights version goes back to 1
    service.set_weights("support", ALL_TO_TREATMENT, "test", rebucket=True)
    assert set(route_all(service, USERS).values()) == {"treatment"}


def test_returning_users_follow_a_ramp_only_with_a_rebucket(db_url: str) -> None:
    service = open_service(db_url)
    service.create(ExperimentSpec.model_validate(experiment_body(salt="ramp")), "test")
    users = [f"ramp-{n}" for n in range(600)]
    route_all(service, users)
    ramp = {"control": 20, "treatment": 80}

    def p_value(arms: dict[str, str], weights: dict[str, int]) -> float:
        counts, total = Counter(arms.values()), len(arms)
        statistic = sum(
            (counts[arm] - total * w / 100) ** 2 / (total * w / 100) for arm, w in weights.items()
        )
        return chi_square_sf(statistic, 1)

    service.set_weights("support", ramp, "test")
    kept = route_all(service, users)
    assert p_value(kept, {"control": 50, "treatment": 50}) > 1e-4 and p_value(kept, ramp) < 1e-4
    service.set_weights("support", ramp, "test", rebucket=True)  # the same weights, re-bucketed
    moved = route_all(service, users)
    assert p_value(moved, ramp) > 1e-4 and p_value(moved, {"control": 50, "treatment": 50}) < 1e-4
    with service.database.read() as session:
        versions = set(session.scalars(select(AssignmentRow.weights_version)))
    assert versions == {3}
