"""Helpers of the experiment-unit tests: requests sent as a user, a header or an API key, and
what the experiments database then holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.experiments.models import AssignmentRow
from service.experiments.store import Database
from tests.support.experiments import ADMIN, app_client, bearer, make_settings

KEY_A = "sk-ladder-unit-a-0123456789abcdef"
KEY_B = "sk-ladder-unit-b-0123456789abcdef"


def database_of(client: TestClient) -> Database:
    """The experiments database of the app behind a TestClient."""
    database: Database = client.app.state.ladder.experiments.database  # type: ignore[attr-defined]
    return database


def assigned(client: TestClient) -> dict[str, str]:
    """Every stored assignment, user key to arm."""
    with database_of(client).read() as session:
        rows = session.execute(select(AssignmentRow.user_key, AssignmentRow.arm)).all()
    return {key: arm for key, arm in rows}


def answer(
    client: TestClient | httpx.Client,
    user: str | None = None,
    header: str | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """One chat request on model `support` sent with these identities; its answer."""
    payload: dict[str, Any] = {"model": "support", "messages": [{"role": "user", "content": "hi"}]}
    if user is not None:
        payload["user"] = user
    headers = {**({"x-ladder-user": header} if header else {}), **(bearer(key) if key else {})}
    response = client.post("/v1/chat/completions", json=payload, headers=headers)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def chat(
    client: TestClient | httpx.Client,
    user: str | None = None,
    header: str | None = None,
    key: str | None = None,
) -> str:
    """The arm that served one request sent with these identities."""
    return str(answer(client, user, header, key)["ladder"]["arm"])


def serve(tmp_path: Path, db_url: str, body: dict[str, Any], **settings: Any) -> Iterator[Any]:
    """A TestClient of the app with the experiment `body` created (a generator, for `for`)."""
    with app_client(make_settings(tmp_path, db_url, **settings)) as client:
        created = client.post("/admin/experiments", json=body, headers=ADMIN)
        assert created.status_code == 201, created.text
        yield client
