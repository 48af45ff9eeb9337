"""Every experiment sticks to the same unit: the body's `user`, else X-Ladder-User, else (when
set) the API key; anonymous requests get the control (or a random arm) and are never assigned."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.experiments.models import ExposureRow
from service.settings import key_digest
from tests.support.experiments import ADMIN, experiment_body, users_by_arm
from tests.support.units import KEY_A, KEY_B, assigned, chat, database_of, serve


@pytest.fixture()
def client(tmp_path: Path, db_url: str) -> Iterator[TestClient]:
    yield from serve(tmp_path, db_url, experiment_body())


def exposed_keys(client: TestClient) -> list[str | None]:
    with database_of(client).read() as session:
        return list(session.scalars(select(ExposureRow.user_key).order_by(ExposureRow.id)))


def test_a_client_sending_only_the_header_keeps_the_arm_of_its_bucket(
    tmp_path: Path, db_url: str
) -> None:
    planned = users_by_arm("fixed", {"control": 50, "treatment": 50}, 3)
    expected = {user: arm for arm, users in planned.items() for user in users}
    for client in serve(tmp_path, db_url, experiment_body(salt="fixed")):
        arms = {user: {chat(client, header=user) for _ in range(10)} for user in expected}
        assert arms == {user: {arm} for user, arm in expected.items()}
        assert assigned(client) == expected


def test_the_user_field_wins_over_the_header(client: TestClient) -> None:
    for number in range(8):
        by_body = chat(client, user=f"body-{number}", header=f"header-{number}")
        assert chat(client, user=f"body-{number}") == by_body
    assert sorted(assigned(client)) == sorted(f"body-{number}" for number in range(8))


def test_anonymous_requests_get_the_control_and_are_never_assigned(client: TestClient) -> None:
    assert {chat(client) for _ in range(20)} == {"control"}
    assert assigned(client) == {}
    assert exposed_keys(client) == [None] * 20


def test_random_stickiness_gives_anonymous_requests_an_arm_each_never_assigned(
    tmp_path: Path, db_url: str
) -> None:
    for client in serve(tmp_path, db_url, experiment_body(stickiness="random")):
        arms = Counter(chat(client) for _ in range(40))
        assert set(arms) == {"control", "treatment"}, arms
        assert assigned(client) == {}
        assert client.get("/admin/experiments/support", headers=ADMIN).json()["stickiness"] == (
            "random"
        )


@pytest.mark.parametrize("legacy", ["user", "header"])
def test_an_experiment_created_with_a_legacy_stickiness_identifies_by_user_and_header(
    tmp_path: Path, db_url: str, legacy: str
) -> None:
    for client in serve(tmp_path, db_url, experiment_body(stickiness=legacy)):
        assert client.get("/admin/experiments/support", headers=ADMIN).json()["stickiness"] == (
            "control"
        )
        chat(client, user="by-body")
        chat(client, header="by-header")
        assert sorted(assigned(client)) == ["by-body", "by-header"]


ALL_TREATMENT = experiment_body(
    arms=[
        {"name": "control", "configuration": "plain", "weight": 0},
        {"name": "treatment", "configuration": "friendly", "weight": 100},
    ]
)


@pytest.mark.parametrize("key_unit", [True, False])
def test_the_api_key_is_the_unit_of_nameless_requests_only_when_set(
    tmp_path: Path, db_url: str, key_unit: bool
) -> None:
    keys = f"{KEY_A},{KEY_B}"
    for client in serve(
        tmp_path, db_url, ALL_TREATMENT, api_keys=keys, experiment_key_unit=key_unit
    ):
        arms = {chat(client, key=key) for key in (KEY_A, KEY_B) for _ in range(5)}
        assert chat(client, user="named", key=KEY_A) == "treatment"
        units = {f"key:{key_digest(KEY_A)}", f"key:{key_digest(KEY_B)}"} if key_unit else set()
        assert set(assigned(client)) == units | {"named"}
        assert arms == ({"treatment"} if key_unit else {"control"})
