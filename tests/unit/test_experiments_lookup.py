"""The assignment dry run (admin API and CLI) records nothing and agrees with routing; the
exposure export streams every exposure, page by page, with its feedback, as CSV or JSON lines."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.experiments import export
from service.experiments.models import AssignmentRow, AuditRow, ExposureRow, FeedbackRow, Meta
from service.settings import key_digest
from tests.support.assertions import assert_openai_error
from tests.support.experiments import (
    ADMIN,
    ADMIN_TOKEN,
    app_client,
    experiment_body,
    live_server,
    make_app,
    make_settings,
)
from tests.support.units import KEY_A, KEY_B, answer, chat, database_of

PAGE_ROWS = 7


@pytest.fixture()
def client(tmp_path: Path, db_url: str) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path,
        db_url,
        api_keys=f"{KEY_A},{KEY_B}",
        experiment_key_unit=True,
        experiment_export_rows=PAGE_ROWS,
    )
    with app_client(settings) as test_client:
        created = test_client.post("/admin/experiments", json=experiment_body(), headers=ADMIN)
        assert created.status_code == 201, created.text
        yield test_client


def table_state(client: TestClient) -> tuple[int, ...]:
    """Row counts of every table a request or a change writes, and the change counter."""
    with database_of(client).read() as session:
        counts = [
            session.scalars(select(func.count()).select_from(table)).one()
            for table in (AssignmentRow, ExposureRow, FeedbackRow, AuditRow)
        ]
        counts.append(session.scalars(select(Meta.value).where(Meta.key == "version")).one())
    return tuple(counts)


def lookup(client: TestClient, **identity: str) -> dict[str, Any]:
    response = client.get("/admin/experiments/support/assignment", params=identity, headers=ADMIN)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def test_the_dry_run_records_nothing_and_agrees_with_the_next_request(client: TestClient) -> None:
    chat(client, user="seen-before", key=KEY_A)
    before = table_state(client)
    predicted = {f"user-{n}": lookup(client, user=f"user-{n}") for n in range(24)}
    by_header = lookup(client, header="user-0")
    by_key = lookup(client, key=f"sha256:{key_digest(KEY_B)}")
    assert table_state(client) == before
    assert {found["arm"] for found in predicted.values()} == {"control", "treatment"}
    assert all(found["reason"] == "bucket" and not found["stored"] for found in predicted.values())
    assert by_header["arm"] == predicted["user-0"]["arm"] and by_header["source"] == "header"
    assert (by_key["source"], by_key["reason"]) == ("key", "bucket")
    for user, found in predicted.items():
        assert chat(client, user=user, key=KEY_A) == found["arm"]
        configuration = {"control": "plain", "treatment": "friendly"}[found["arm"]]
        assert found["configuration"] == configuration
    assert chat(client, key=KEY_B) == by_key["arm"]
    again = lookup(client, user="user-3", header="someone-else")
    assert (again["arm"], again["stored"], again["reason"]) == (
        predicted["user-3"]["arm"],
        True,
        "sticky",
    )
    assert lookup(client)["reason"] == "anonymous" and lookup(client)["arm"] == "control"
    treated = next(user for user, found in predicted.items() if found["arm"] == "treatment")
    client.post("/admin/experiments/support/arms/treatment/pause", headers=ADMIN)
    on_hold = lookup(client, user=treated)
    assert (on_hold["arm"], on_hold["configuration"]) == ("treatment", "plain")
    assert "paused" in on_hold["detail"]
    assert chat(client, user=treated, key=KEY_A) == "control"  # what routing then serves
    client.post("/admin/experiments/support/pause", headers=ADMIN)
    paused = lookup(client, user="user-3")
    assert (paused["arm"], paused["reason"]) == ("control", "fixed")


def test_a_bad_lookup_is_refused_in_openai_shape(client: TestClient) -> None:
    bad_key = client.get(
        "/admin/experiments/support/assignment", params={"key": "nothex"}, headers=ADMIN
    )
    assert assert_openai_error(bad_key, 400)["param"] == "query.key"
    missing = client.get("/admin/experiments/ghost/assignment?user=a", headers=ADMIN)
    assert missing.status_code == 404
    assert client.get("/admin/experiments/support/assignment?user=a").status_code == 401


def exported(client: TestClient, form: str, **params: str) -> tuple[str, dict[str, str]]:
    response = client.get(
        "/admin/experiments/support/exposures", params={"format": form, **params}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    return response.text, dict(response.headers)


def test_the_export_streams_every_exposure_with_its_score_in_both_formats(
    client: TestClient,
) -> None:
    answers = [answer(client, user=f"u{n % 5}", key=KEY_A) for n in range(23)]
    answers.append(answer(client, key=KEY_B))
    scored = {found["id"]: 1.0 if n % 2 else 0.0 for n, found in enumerate(answers[:9])}
    for response_id, score in scored.items():
        sent = client.post(
            "/v1/feedback",
            json={"response_id": response_id, "score": score},
            headers={"authorization": f"Bearer {KEY_A}"},
        )
        assert sent.status_code == 200, sent.text
    served = {found["id"]: found["ladder"]["arm"] for found in answers}

    text, headers = exported(client, "csv")
    assert headers["content-type"].startswith("text/csv") and "content-length" not in headers
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {row["response_id"]: row["arm"] for row in rows} == served
    assert len(rows) == len(answers)
    assert {r["response_id"]: float(r["score"]) for r in rows if r["score"]} == scored
    lines = exported(client, "jsonl")[0].splitlines()
    records = [json.loads(line) for line in lines]
    assert [record["response_id"] for record in records] == [row["response_id"] for row in rows]
    assert {r["response_id"]: r["score"] for r in records if r["score"] is not None} == scored
    assert records[0]["user_key"] == "u0"
    assert records[-1]["user_key"] == f"key:{key_digest(KEY_B)}"

    with database_of(client).read() as session:
        experiment_id = session.scalars(select(ExposureRow.experiment_id)).first()
    assert experiment_id is not None
    pages = list(export.pages(database_of(client), experiment_id, None, PAGE_ROWS))
    assert [len(page) for page in pages] == [7, 7, 7, 3]

    cut = records[12]["created_at"]
    later = [json.loads(line) for line in exported(client, "jsonl", since=str(cut))[0].splitlines()]
    assert [r["response_id"] for r in later] == [r["response_id"] for r in records[12:]]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut - 3600))
    assert len(exported(client, "csv", since=iso)[0].splitlines()) == len(answers) + 1


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/admin/experiments/support/exposures?format=xml", 400),
        ("/admin/experiments/support/exposures?since=yesterday", 400),
        ("/admin/experiments/ghost/exposures", 404),
    ],
)
def test_a_bad_export_is_refused_in_openai_shape(
    client: TestClient, path: str, status: int
) -> None:
    assert_openai_error(client.get(path, headers=ADMIN), status)
    assert client.get("/admin/experiments/support/exposures").status_code == 401


def test_the_cli_looks_up_exports_and_rebuckets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from service.cli.ab import app as ab_app

    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv("LADDER_ADMIN_TOKEN", ADMIN_TOKEN)
    runner = CliRunner()
    with live_server(make_app(settings)) as base, httpx.Client(base_url=base) as http:

        def ab(*args: str) -> Any:
            result = runner.invoke(ab_app, [*args, "--url", base])
            assert result.exit_code == 0, result.output
            return result.output

        created = http.post("/admin/experiments", json=experiment_body(), headers=ADMIN)
        assert created.status_code == 201, created.text
        dry = json.loads(ab("assignment", "support", "--user", "cli-user"))
        arm = chat(http, user="cli-user")
        assert (dry["arm"], dry["reason"]) == (arm, "bucket")
        rows = list(csv.DictReader(io.StringIO(ab("exposures", "support"))))
        assert [(row["user_key"], row["arm"]) for row in rows] == [("cli-user", arm)]
        other = "treatment" if arm == "control" else "control"
        assert chat(http, user="cli-user") == arm
        ab("weights", "support", f"{arm}=0", f"{other}=1", "--rebucket")
        assert chat(http, user="cli-user") == other
