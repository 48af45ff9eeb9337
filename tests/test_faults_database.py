"""A locked experiments database: chat keeps flowing on the state in memory (users keep their
arm), writes fail fast with 503 in OpenAI's shape, and nothing acknowledged is lost."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from service.experiments.models import FeedbackRow
from tests.experiments_support import ADMIN, app_client, ask, experiment_body, make_settings
from tests.test_api_errors import assert_openai_error

T = TypeVar("T")
BUSY_TIMEOUT_S = 0.5
BOUND_S = BUSY_TIMEOUT_S + 2.0


@contextmanager
def locked(database: Path) -> Iterator[None]:
    """Another process's write lock on the database (as a backup or a stuck writer holds)."""
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def timed(call: Callable[[], T]) -> tuple[T, float]:
    """What a call returned, and how many seconds it took."""
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def stored_feedback(database: Path) -> list[float]:
    """Every stored score."""
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        scores = connection.execute(select(FeedbackRow.score)).scalars().all()
    engine.dispose()
    return sorted(scores)


def served_arms(client: TestClient, users: list[str]) -> dict[str, str]:
    arms = {}
    for user in users:
        response = ask(client, user)
        assert response.status_code == 200, response.text
        arms[user] = response.json()["ladder"]["arm"]
    return arms


def test_locked_database_keeps_chat_serving_and_refuses_writes_cleanly(tmp_path: Path) -> None:
    database = tmp_path / "ab.db"
    settings = make_settings(tmp_path, f"sqlite:///{database}", db_busy_timeout_s=BUSY_TIMEOUT_S)
    with app_client(settings) as client:
        assert client.post("/admin/experiments", json=experiment_body(), headers=ADMIN).is_success
        users = [f"user-{n}" for n in range(8)]
        before = served_arms(client, users)
        answered = ask(client, "user-0").json()["id"]
        acknowledged = client.post("/v1/feedback", json={"response_id": answered, "score": 1})
        assert acknowledged.status_code == 200
        change = {"weights": {"control": 10, "treatment": 90}}
        with locked(database):
            during, seconds = timed(lambda: served_arms(client, users))
            assert during == before, "users keep their arm while the database is locked"
            assert seconds < len(users) * BOUND_S
            plain, seconds = timed(lambda: ask(client, None, model="plain"))
            assert plain.status_code == 200 and seconds < BOUND_S
            refused, seconds = timed(
                lambda: client.post(
                    "/admin/experiments/support/weights", json=change, headers=ADMIN
                )
            )
            assert seconds < BOUND_S
            error = assert_openai_error(refused, 503, "database_unavailable")
            assert "database" in error["message"]
            lost, _ = timed(
                lambda: client.post("/v1/feedback", json={"response_id": answered, "score": 0})
            )
            assert_openai_error(lost, 503, "database_unavailable")
            listed = client.get("/admin/experiments/support", headers=ADMIN)
            assert listed.status_code == 200 and listed.json()["version"] == 1
        assert stored_feedback(database) == [1.0], "the acknowledged score is kept, the refused not"
        retried = client.post("/admin/experiments/support/weights", json=change, headers=ADMIN)
        assert retried.status_code == 200 and retried.json()["version"] == 2
        assert served_arms(client, users) == before
        later = ask(client, "user-1").json()["id"]
        again = client.post("/v1/feedback", json={"response_id": later, "score": 0})
        assert again.status_code == 200 and stored_feedback(database) == [0.0, 1.0]
