"""A locked (SQLite) or unreachable (PostgreSQL) experiments database: chat keeps flowing on the
state in memory (users keep their arm), writes fail fast with 503 in OpenAI's shape, nothing
acknowledged is lost, and writes succeed again once the database is back, without a restart."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url

from service.experiments.models import FeedbackRow
from tests.support.assertions import assert_openai_error
from tests.support.experiments import (
    ADMIN,
    app_client,
    ask,
    experiment_body,
    fresh_postgres,
    make_settings,
    postgres_base_url,
)
from tests.support.tcp_proxy import TcpProxy

T = TypeVar("T")
BUSY_TIMEOUT_S = 0.5
BOUND_S = BUSY_TIMEOUT_S + 2.0
# PostgreSQL through the proxy: a healthy connect on a loaded 2-core machine can take over a
# second, and psycopg's connect timeout is whole seconds; at 0.5 (1 s to connect) a healthy
# exposure write timed out under load and the response was served uncounted.
PG_BUSY_TIMEOUT_S = 2.0


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


def stored_feedback(database: Path | str) -> list[float]:
    """Every stored score (a SQLite file, or a database URL)."""
    engine = create_engine(database if isinstance(database, str) else f"sqlite:///{database}")
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


def outage_keeps_chat_and_loses_nothing(
    client: TestClient,
    outage: Callable[[], AbstractContextManager[object]],
    stored: Callable[[], list[float]],
    write_bound_s: float,
    reads_work: bool,
) -> None:
    """Users keep their arm and chat answers during the outage; writes are refused in time with
    503 and nothing acknowledged is lost; afterwards writes succeed without a restart. Admin
    reads work while the database is only locked (WAL readers do not wait for the writer)."""
    assert client.post("/admin/experiments", json=experiment_body(), headers=ADMIN).is_success
    users = [f"user-{n}" for n in range(8)]
    before = served_arms(client, users)
    answered = ask(client, "user-0").json()["id"]
    acknowledged = client.post(
        "/v1/feedback", json={"response_id": answered, "score": 1, "user": "user-0"}
    )
    assert acknowledged.status_code == 200
    change = {"weights": {"control": 10, "treatment": 90}}
    with outage():
        during, seconds = timed(lambda: served_arms(client, users))
        assert during == before, "users keep their arm while the database is away"
        assert seconds < len(users) * write_bound_s
        plain, seconds = timed(lambda: ask(client, None, model="plain"))
        assert plain.status_code == 200 and seconds < write_bound_s
        refused, seconds = timed(
            lambda: client.post("/admin/experiments/support/weights", json=change, headers=ADMIN)
        )
        assert seconds < write_bound_s
        error = assert_openai_error(refused, 503, "database_unavailable")
        assert "database" in error["message"]
        lost = client.post(
            "/v1/feedback", json={"response_id": answered, "score": 0, "user": "user-0"}
        )
        assert_openai_error(lost, 503, "database_unavailable")
        listed = client.get("/admin/experiments/support", headers=ADMIN)
        if reads_work:
            assert listed.status_code == 200 and listed.json()["version"] == 1
        else:
            assert_openai_error(listed, 503, "database_unavailable")
        assert stored() == [1.0], "the acknowledged score is kept, the refused not"
    retried = client.post("/admin/experiments/support/weights", json=change, headers=ADMIN)
    assert retried.status_code == 200, retried.text
    assert retried.json()["version"] == 2
    assert served_arms(client, users) == before
    later = ask(client, "user-1").json()["id"]
    again = client.post("/v1/feedback", json={"response_id": later, "score": 0, "user": "user-1"})
    assert again.status_code == 200 and stored() == [0.0, 1.0]


def test_locked_database_keeps_chat_serving_and_refuses_writes_cleanly(tmp_path: Path) -> None:
    database = tmp_path / "ab.db"
    settings = make_settings(tmp_path, f"sqlite:///{database}", db_busy_timeout_s=BUSY_TIMEOUT_S)
    with app_client(settings) as client:
        outage_keeps_chat_and_loses_nothing(
            client, lambda: locked(database), lambda: stored_feedback(database), BOUND_S, True
        )


@contextmanager
def cut(proxy: TcpProxy) -> Iterator[None]:
    """The database unreachable: connections reset, new ones refused."""
    proxy.cut()
    try:
        yield
    finally:
        proxy.open()


@pytest.mark.postgres
def test_unreachable_postgres_keeps_chat_serving_and_refuses_writes_cleanly(
    tmp_path: Path,
) -> None:
    with fresh_postgres(postgres_base_url()) as direct_url:
        target = make_url(direct_url)
        proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
        proxy.open()
        through_proxy = target.set(port=proxy.port).render_as_string(hide_password=False)
        settings = make_settings(tmp_path, through_proxy, db_busy_timeout_s=PG_BUSY_TIMEOUT_S)
        try:
            with app_client(settings) as client:
                # A write may wait for the connect timeout, whole seconds for psycopg.
                outage_keeps_chat_and_loses_nothing(
                    client,
                    lambda: cut(proxy),
                    lambda: stored_feedback(direct_url),
                    PG_BUSY_TIMEOUT_S + 3.0,
                    False,
                )
        finally:
            proxy.cut()
