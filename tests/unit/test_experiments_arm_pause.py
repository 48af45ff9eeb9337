"""Guardrails in an experiment's spec are validated, and one arm can be paused and resumed by an
admin: its users get the control meanwhile and their own arm back after, what the control served
them is counted for no arm, and both changes are versioned and audited."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support.experiments import (
    ADMIN,
    ADMIN_TOKEN,
    app_client,
    arm_of,
    ask,
    experiment_body,
    live_server,
    make_app,
    make_settings,
)

ERRORS = {"metric": "error_rate", "max_increase": 0.01}


@pytest.fixture()
def client(tmp_path: Path) -> Any:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    with app_client(settings) as test_client:
        body = experiment_body(salt="fixed", guardrails=[ERRORS])
        response = test_client.post("/admin/experiments", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        assert response.json()["guardrails"] == [ERRORS | {"max_ratio": None, "max_value": None}]
        yield test_client


@pytest.mark.parametrize(
    ("guardrails", "says"),
    [
        ([{"metric": "tokens", "max_value": 1}], "guardrails.0.metric"),
        ([{"metric": "error_rate"}], "give exactly one of max_increase, max_ratio, max_value"),
        ([{"metric": "error_rate", "max_increase": 0.01, "max_value": 0.1}], "exactly one"),
        ([{"metric": "error_rate", "max_increase": -0.01}], "greater than or equal to 0"),
        ([{"metric": "error_rate", "max_value": 1.5}], "an error_rate limit is a rate"),
        ([{"metric": "latency_p95_ms", "max_ratio": 0.5}], "greater than or equal to 1"),
        ([{"metric": "cost_per_request_usd", "max_value": 0}], "cap must be above 0"),
        ([{"metric": "cost_per_request_usd", "max_value": "cheap"}], "valid number"),
        ([{"metric": "error_rate", "max_increase": 0.01, "window": 5}], "Extra inputs"),
        ([ERRORS, ERRORS | {"max_increase": 0.02}], "error_rate has two max_increase limits"),
        ("error_rate", "guardrails"),
    ],
)
def test_nonsense_guardrails_are_refused_in_openai_shape(
    client: TestClient, guardrails: Any, says: str
) -> None:
    body = experiment_body(name="other", model="other", guardrails=guardrails)
    response = client.post("/admin/experiments", json=body, headers=ADMIN)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert says in error["message"]
    assert client.get("/admin/experiments/other", headers=ADMIN).status_code == 404


def arms_of(client: TestClient, users: list[str]) -> dict[str, str]:
    return {user: ask(client, user).json()["ladder"]["arm"] for user in users}


def treatment_requests(client: TestClient) -> int:
    time.sleep(0.3)  # outcomes are written off the event loop
    found = client.get("/admin/experiments/support/results", headers=ADMIN).json()
    arm = next(a for a in found["arms"] if a["arm"] == "treatment")
    return int(arm["requests"])


def test_a_paused_arm_serves_the_control_uncounted_and_resuming_gives_it_back(
    client: TestClient,
) -> None:
    users = [f"user-{n}" for n in range(30)]
    assigned = arms_of(client, users)
    assert set(assigned.values()) == {"control", "treatment"}
    counted = treatment_requests(client)
    paused = client.post("/admin/experiments/support/arms/treatment/pause", headers=ADMIN)
    assert paused.status_code == 200, paused.text
    assert next(a for a in paused.json()["arms"] if a["name"] == "treatment")["paused"]
    during = [ask(client, user) for user in [*users, "new-1", "new-2", "new-3"]]
    assert {r.json()["ladder"]["arm"] for r in during} == {"control"}
    assert {r.headers["x-ladder-config"] for r in during} == {"plain"}
    assert treatment_requests(client) == counted, "the control's answers were counted for it"
    results = client.get("/admin/experiments/support/results", headers=ADMIN).json()
    assert {a["arm"]: a["paused"] for a in results["arms"]} == {
        "control": False,
        "treatment": True,
    }
    assert results["guardrails"][0]["paused_at"] is not None
    resumed = client.post("/admin/experiments/support/arms/treatment/resume", headers=ADMIN)
    assert resumed.status_code == 200, resumed.text
    assert arms_of(client, users) == assigned
    audit = client.get("/admin/audit", params={"experiment": "support"}, headers=ADMIN).json()
    assert [(e["action"], e["diff"]) for e in audit[:2]] == [
        ("resume arm treatment", {"arms.treatment.paused": [True, False]}),
        ("pause arm treatment", {"arms.treatment.paused": [False, True]}),
    ]


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/admin/experiments/support/arms/control/pause", 400, "is the control"),
        ("/admin/experiments/support/arms/treatment/resume", 400, "is already not paused"),
        ("/admin/experiments/support/arms/nobody/pause", 400, "has no arm 'nobody'"),
        ("/admin/experiments/nothing/arms/treatment/pause", 404, "no experiment 'nothing'"),
    ],
)
def test_a_pause_that_makes_no_sense_is_refused_and_changes_nothing(
    client: TestClient, path: str, status: int, says: str
) -> None:
    response = client.post(path, headers=ADMIN)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]["message"]
    assert client.get("/admin/experiments/support", headers=ADMIN).json()["version"] == 1


def test_the_cli_pauses_and_resumes_one_arm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from service.cli.ab import app as ab_app

    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv("LADDER_ADMIN_TOKEN", ADMIN_TOKEN)
    runner = CliRunner()
    with live_server(make_app(settings)) as base, httpx.Client(base_url=base) as http:
        body = experiment_body(salt="fixed")
        assert http.post("/admin/experiments", json=body, headers=ADMIN).status_code == 201
        users = [f"user-{n}" for n in range(20)]
        assigned = {user: arm_of(http, user) for user in users}

        def ab(*args: str) -> Any:
            return runner.invoke(ab_app, [*args, "--url", base, "--actor", "ops"])

        assert ab("pause", "support", "--arm", "treatment").exit_code == 0
        assert {arm_of(http, user) for user in users} == {"control"}
        refused = ab("pause", "support", "--arm", "control")
        assert refused.exit_code == 1 and "is the control" in refused.output
        assert ab("start", "support", "--arm", "treatment").exit_code == 0
        assert {user: arm_of(http, user) for user in users} == assigned
        audit = http.get("/admin/audit", params={"by": "ops"}, headers=ADMIN).json()
    assert [entry["action"] for entry in audit] == ["resume arm treatment", "pause arm treatment"]
