"""Response ids are the server's (a client's X-Request-Id is only correlated), and feedback on a
response counts only from the caller it was served to: its API key, or its address with keys off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from service.experiments.models import ExperimentRow, ExposureRow, FeedbackRow
from service.experiments.spec import ExperimentSpec
from service.experiments.store import Database, migrate, open_database
from tests.support.assertions import assert_openai_error
from tests.support.experiments import (
    ADMIN,
    app_client,
    bearer,
    experiment_body,
    make_app,
    make_settings,
)

KEY_A = "sk-ladder-owner-a-0123456789abcdef"
KEY_B = "sk-ladder-other-b-0123456789abcdef"
QUESTION = {"model": "support", "user": "ann", "messages": [{"role": "user", "content": "hi"}]}


def database_of(client: TestClient) -> Database:
    database: Database = client.app.state.ladder.experiments.database  # type: ignore[attr-defined]
    return database


def stored_feedback(database: Database) -> list[tuple[float, str | None]]:
    with database.read() as session:
        rows = session.scalars(select(FeedbackRow).order_by(FeedbackRow.id)).all()
        return [(row.score, row.comment) for row in rows]


@pytest.fixture()
def keyed(tmp_path: Path, db_url: str) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, db_url, api_keys=f"{KEY_A},{KEY_B}")
    with app_client(settings) as client:
        created = client.post("/admin/experiments", json=experiment_body(), headers=ADMIN)
        assert created.status_code == 201, created.text
        yield client


def test_response_ids_are_the_servers_and_x_request_id_is_kept_apart(keyed: TestClient) -> None:
    headers = {**bearer(KEY_A), "x-request-id": "trace-1"}
    answers = [keyed.post("/v1/chat/completions", json=QUESTION, headers=headers) for _ in "ab"]
    stream = keyed.post("/v1/chat/completions", json={**QUESTION, "stream": True}, headers=headers)
    assert [a.status_code for a in (*answers, stream)] == [200, 200, 200]
    ids = [answer.json()["id"] for answer in answers]
    ids.append(stream.text.split('"id":"', 1)[1].split('"', 1)[0])
    assert len(set(ids)) == 3, "a repeated X-Request-Id must not repeat the response id"
    assert all(id_.startswith("chatcmpl-") and "trace-1" not in id_ for id_ in ids)
    assert {a.headers["x-request-id"] for a in (*answers, stream)} == {"trace-1"}
    with database_of(keyed).read() as session:
        rows = session.scalars(select(ExposureRow).order_by(ExposureRow.id)).all()
        assert [(row.response_id, row.correlation_id) for row in rows] == [
            (id_, "trace-1") for id_ in ids
        ]
    unsafe = keyed.post(
        "/v1/chat/completions", json=QUESTION, headers={**bearer(KEY_A), "x-request-id": "a b"}
    )
    assert unsafe.headers["x-request-id"] == unsafe.json()["id"], "an unusable id is not echoed"


def test_feedback_counts_only_from_the_key_that_received_the_response(keyed: TestClient) -> None:
    answer = keyed.post("/v1/chat/completions", json=QUESTION, headers=bearer(KEY_A)).json()
    score = {"response_id": answer["id"], "score": 1, "comment": "mine"}
    assert keyed.post("/v1/feedback", json=score, headers=bearer(KEY_A)).status_code == 200
    stolen = {"response_id": answer["id"], "score": -1, "comment": "theirs"}
    refused = keyed.post("/v1/feedback", json=stolen, headers=bearer(KEY_B))
    error = assert_openai_error(refused, 403, "permission_denied")
    assert error["param"] == "response_id" and "another caller" in error["message"]
    assert stored_feedback(database_of(keyed)) == [(1.0, "mine")], "the owner's score stands"
    rescore = {"response_id": answer["id"], "score": 0.25, "comment": "on reflection"}
    assert keyed.post("/v1/feedback", json=rescore, headers=bearer(KEY_A)).status_code == 200
    assert stored_feedback(database_of(keyed)) == [(0.25, "on reflection")]


def test_with_keys_off_feedback_counts_only_from_the_user_served(
    tmp_path: Path, db_url: str
) -> None:
    """Keys off: a response asked for as a user is scored only by that user (from any
    address); one asked for without a user only from the address it was served to."""
    app = make_app(make_settings(tmp_path, db_url))
    with TestClient(app, client=("10.0.0.1", 40000)) as first:
        assert first.post("/admin/experiments", json=experiment_body(), headers=ADMIN)
        elsewhere = TestClient(app, client=("10.0.0.2", 40000))
        answer = first.post("/v1/chat/completions", json=QUESTION).json()  # as ann
        score: dict[str, Any] = {"response_id": answer["id"], "score": -1}
        for stranger in ({**score, "user": "bob"}, score):
            refused = first.post("/v1/feedback", json=stranger)
            assert_openai_error(refused, 403, "permission_denied")
        by_header = elsewhere.post("/v1/feedback", json=score, headers={"x-ladder-user": "ann"})
        assert by_header.status_code == 200, by_header.text
        anonymous = {**QUESTION}
        del anonymous["user"]
        unnamed = first.post("/v1/chat/completions", json=anonymous).json()
        rated: dict[str, Any] = {"response_id": unnamed["id"], "score": 1}
        assert_openai_error(elsewhere.post("/v1/feedback", json=rated), 403, "permission_denied")
        assert first.post("/v1/feedback", json=rated).status_code == 200
        assert sorted(stored_feedback(database_of(first))) == [(0.0, None), (1.0, None)]


def legacy_database(db_url: str) -> None:
    """A database at revision 0001 holding the experiment and one exposure served back then."""
    old = open_database(db_url)
    migrate(old, "0001")
    spec = ExperimentSpec.model_validate(experiment_body()).filled()
    experiment = {"name": spec.name, "model": spec.model, "stickiness": spec.stickiness}
    experiment |= {"salt": spec.salt, "status": spec.status, "control": spec.control}
    experiment |= {"winner": None, "arms": [arm.model_dump() for arm in spec.arms]}
    experiment |= {"version": 1, "weights_version": 1, "created_at": 0.0, "updated_at": 0.0}
    with old.write() as session:
        found = session.execute(
            insert(ExperimentRow).values(**experiment).returning(ExperimentRow.id)
        )
        exposure = {
            "response_id": "legacy-1",
            "experiment_id": found.scalar_one(),
            "arm": "control",
        }
        exposure |= {"configuration": "plain", "user_key": "ann", "phase": "running"}
        exposure |= {"weights_version": 1, "created_at": 0.0}
        session.execute(insert(ExposureRow).values(**exposure))
    old.dispose()


def test_a_database_from_before_owners_migrates_and_its_responses_are_still_scored(
    tmp_path: Path, db_url: str
) -> None:
    legacy_database(db_url)
    with app_client(make_settings(tmp_path, db_url)) as client:
        legacy = client.post("/v1/feedback", json={"response_id": "legacy-1", "score": 1})
        assert legacy.status_code == 200, legacy.text
        assert legacy.json() == {
            "response_id": "legacy-1",
            "experiment": "support",
            "arm": "control",
            "score": 1.0,
        }
        answer = client.post("/v1/chat/completions", json=QUESTION)
        assert answer.status_code == 200 and answer.json()["ladder"]["experiment"] == "support"
