"""Fixtures and helpers of the experiment tests: a database of each kind, an app, a live server."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ingest.index import Index
from service.api.app import create_app
from service.experiments.service import ExperimentService
from service.experiments.store import migrate, open_database
from service.settings import Settings
from tests.support.processes import free_port
from tests.support.scripted_engine import ScriptedEngine

ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
POSTGRES_ENV = "LADDER_TEST_POSTGRES_URL"
CONFIG = """
configurations:
  plain:
    system_prompt: Be brief.
  friendly:
    system_prompt: Be friendly.
  concise:
    system_prompt: Answer in one line.
"""


class NoIndex:
    """Stands in for the index where no configuration retrieves."""

    def collection_names(self) -> list[str]:
        return []

    def heartbeat(self) -> bool:
        return True


@contextmanager
def fresh_postgres(base_url: str) -> Iterator[str]:
    """A new, empty database on the server of base_url, dropped afterwards."""
    name = f"ladder_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def postgres_base_url() -> str:
    """LADDER_TEST_POSTGRES_URL, or a visible skip when it is not given."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set: no PostgreSQL to test against (.ci/run sets it)")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty experiments database: SQLite in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'experiments.db'}"
        return
    with fresh_postgres(postgres_base_url()) as url:
        yield url


@pytest.fixture()
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database (skipped with a reason when none is configured)."""
    with fresh_postgres(postgres_base_url()) as url:
        yield url


def make_settings(tmp_path: Path, db_url: str, **overrides: Any) -> Settings:
    """Settings with the three test configurations and the admin token."""
    config = tmp_path / "configs.yaml"
    if not config.exists():
        config.write_text(CONFIG)
    fields: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "config": config,
        "db_url": db_url,
        "admin_token": ADMIN_TOKEN,
        "experiment_refresh_s": 0.2,
        **overrides,
    }
    return Settings(**fields)


def sqlite_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """make_settings on an SQLite database in tmp_path."""
    return make_settings(tmp_path, f"sqlite:///{tmp_path / 'ab.db'}", **overrides)


def bearer(key: str) -> dict[str, str]:
    """The Authorization header of an API key."""
    return {"authorization": f"Bearer {key}"}


def make_app(settings: Settings, engine: ScriptedEngine | None = None) -> FastAPI:
    """The real app with a scripted engine and no index."""
    return create_app(settings, engine=engine or ScriptedEngine(), index=cast(Index, NoIndex()))


@contextmanager
def app_client(settings: Settings, engine: ScriptedEngine | None = None) -> Iterator[TestClient]:
    """A TestClient of the app, lifespan included."""
    with TestClient(make_app(settings, engine)) as client:
        yield client


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Serves an app with uvicorn in a thread on a free 127.0.0.1 port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def experiment_body(**overrides: Any) -> dict[str, Any]:
    """A running 50/50 experiment `support` on model `support`: plain (control) vs friendly."""
    body: dict[str, Any] = {
        "name": "support",
        "model": "support",
        "status": "running",
        "arms": [
            {"name": "control", "configuration": "plain", "weight": 50},
            {"name": "treatment", "configuration": "friendly", "weight": 50},
        ],
    }
    return body | overrides


def ask(client: TestClient | httpx.Client, user: str | None, model: str = "support") -> Any:
    """One chat request as `user`; the response."""
    payload: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if user is not None:
        payload["user"] = user
    return client.post("/v1/chat/completions", json=payload)


def arm_of(client: TestClient | httpx.Client, user: str | None, model: str = "support") -> str:
    """The arm that served one request of `user`."""
    response = ask(client, user, model)
    assert response.status_code == 200, response.text
    return str(response.json()["ladder"]["arm"])


def users_by_arm(salt: str, arms: dict[str, float], per_arm: int) -> dict[str, list[str]]:
    """`per_arm` user names (user-N) that the service's bucketing puts in each arm under
    `salt` and these weights, so a test sends no user it did not plan for."""
    from service.experiments.assignment import arm_for_bucket, bucket, bucket_bounds

    names, bounds = list(arms), bucket_bounds(list(arms.values()))
    found: dict[str, list[str]] = {name: [] for name in names}
    number = 0
    while min(len(users) for users in found.values()) < per_arm:
        number += 1
        arm = names[arm_for_bucket(bounds, bucket(salt, f"user-{number}"))]
        if len(found[arm]) < per_arm:
            found[arm].append(f"user-{number}")
    return found


def open_service(
    url: str, served: frozenset[str] = frozenset({"plain", "friendly", "concise"})
) -> ExperimentService:
    """An ExperimentService on a migrated database, its state loaded (no polling)."""
    database = open_database(url)
    migrate(database)
    service = ExperimentService(database, lambda: served, {})
    service.refresh(force=True)
    return service


def route_all(service: ExperimentService, users: list[str]) -> dict[str, str]:
    """Each user's arm of the `support` experiment, routed one after the other."""

    async def main() -> dict[str, str]:
        arms = {}
        for user in users:
            found = await service.route("support", user, None, f"req-{user}")
            assert found is not None
            arms[user] = found.arm
        return arms

    return asyncio.run(main())
