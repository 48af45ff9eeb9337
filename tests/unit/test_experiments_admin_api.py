"""The admin API: token-guarded, every change versioned and audited, bad changes refused whole,
and promote / roll back change routing for the next request while traffic keeps flowing."""

from __future__ import annotations

import threading
from collections import Counter
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
    experiment_body,
    live_server,
    make_app,
    make_settings,
)
from tests.support.scripted_engine import Script, ScriptedEngine


@pytest.fixture()
def client(tmp_path: Path) -> Any:
    with app_client(make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")) as test_client:
        response = test_client.post("/admin/experiments", json=experiment_body(), headers=ADMIN)
        assert response.status_code == 201, response.text
        yield test_client


def test_admin_api_and_dashboard_are_off_without_a_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}", admin_token=None)
    with app_client(settings) as test_client:
        assert test_client.get("/admin/experiments", headers=ADMIN).status_code == 404
        assert test_client.get("/dashboard", headers=ADMIN).status_code == 404


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong-token-0123456789"}])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/experiments"),
        ("POST", "/admin/experiments/support/promote"),
        ("GET", "/admin/audit"),
        ("GET", "/dashboard"),
    ],
)
def test_admin_routes_answer_401_without_the_token(
    client: TestClient, headers: dict[str, str], method: str, path: str
) -> None:
    response = client.request(method, path, headers=headers, json={"arm": "treatment"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert client.get("/admin/experiments/support", headers=ADMIN).json()["status"] == "running"


INVALID_CHANGES = [
    ("/admin/experiments", experiment_body(), "exists"),
    ("/admin/experiments", experiment_body(name="other"), "already captured"),
    (
        "/admin/experiments",
        experiment_body(name="x", model="x", arms=[{"name": "a", "configuration": "nope"}] * 2),
        "weight",
    ),
    (
        "/admin/experiments",
        experiment_body(
            name="x",
            model="x",
            arms=[
                {"name": "a", "configuration": "plain", "weight": 1},
                {"name": "b", "configuration": "missing", "weight": 1},
            ],
        ),
        "unknown configuration 'missing'",
    ),
    ("/admin/experiments/support/weights", {"weights": {"control": -1}}, "between 0"),
    ("/admin/experiments/support/weights", {"weights": {"ghost": 5}}, "no arm 'ghost'"),
    (
        "/admin/experiments/support/weights",
        {"weights": {"control": 0, "treatment": 0}},
        "add up to more than 0",
    ),
    ("/admin/experiments/support/weights", {"weights": {"control": 50}}, "leaves experiment"),
    ("/admin/experiments/support/start", None, "already running"),
    ("/admin/experiments/support/promote", {"arm": "ghost"}, "no arm 'ghost'"),
    ("/admin/experiments/support/rollback", {"version": 7}, "no version 7"),
    ("/admin/experiments/support/rollback", {}, "no version 0"),
    ("/admin/experiments/nope/pause", None, "no experiment 'nope'"),
]


@pytest.mark.parametrize(("path", "body", "reason"), INVALID_CHANGES)
def test_an_invalid_change_is_refused_with_its_reason_and_changes_nothing(
    client: TestClient, path: str, body: Any, reason: str
) -> None:
    before = client.get("/admin/experiments", headers=ADMIN).json()
    audit = client.get("/admin/audit", headers=ADMIN).json()
    arms = {user: arm_of(client, user) for user in ("ann", "bob", "cy", "dee")}
    response = client.post(path, json=body, headers=ADMIN)
    assert response.status_code in (400, 404), response.text
    assert reason in response.json()["error"]["message"]
    assert client.get("/admin/experiments", headers=ADMIN).json() == before
    assert client.get("/admin/audit", headers=ADMIN).json() == audit
    assert {user: arm_of(client, user) for user in arms} == arms


def test_every_change_is_versioned_with_time_actor_and_diff(client: TestClient) -> None:
    as_alice = ADMIN | {"x-ladder-actor": "alice"}
    client.post(
        "/admin/experiments/support/weights", json={"weights": {"control": 20}}, headers=as_alice
    )
    client.post("/admin/experiments/support/pause", headers=ADMIN)
    entries = client.get("/admin/audit?experiment=support", headers=ADMIN).json()
    assert [(e["version"], e["action"], e["actor"]) for e in entries] == [
        (3, "paused", "admin-api"),
        (2, "weights", "alice"),
        (1, "create", "admin-api"),
    ]
    assert entries[1]["diff"] == {"arms.control.weight": [50.0, 20.0]}
    assert entries[0]["diff"] == {"status": ["running", "paused"]}
    assert entries[0]["at"] >= entries[1]["at"] >= entries[2]["at"] > 0
    assert [e["version"] for e in client.get("/admin/audit?by=alice", headers=ADMIN).json()] == [2]


def test_a_request_in_flight_finishes_on_the_arm_it_started_with(tmp_path: Path) -> None:
    engine = ScriptedEngine()
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    with app_client(settings, engine) as test_client:
        body = experiment_body(
            arms=[
                {"name": "control", "configuration": "plain", "weight": 100},
                {"name": "treatment", "configuration": "friendly", "weight": 0},
            ]
        )
        test_client.post("/admin/experiments", json=body, headers=ADMIN)
        engine.queue.append(Script(["slow answer"], delay_s=1.0))
        answers: list[Any] = []
        request = {"model": "support", "user": "u1", "messages": [{"role": "user", "content": "q"}]}
        slow = threading.Thread(
            target=lambda: answers.append(test_client.post("/v1/chat/completions", json=request))
        )
        slow.start()
        while not engine.history:
            threading.Event().wait(0.01)
        promoted = test_client.post(
            "/admin/experiments/support/promote", json={"arm": "treatment"}, headers=ADMIN
        )
        assert promoted.status_code == 200
        slow.join()
        ladder = answers[0].json()["ladder"]
        assert (ladder["configuration"], ladder["arm"]) == ("plain", "control")
        assert arm_of(test_client, "u1") == "treatment"


def _traffic(base: str, stop: threading.Event, failures: list[str], arms: Counter[str]) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        number = 0
        while not stop.is_set():
            number += 1
            response = http.post(
                "/v1/chat/completions",
                json={
                    "model": "support",
                    "user": f"t{number % 7}",
                    "messages": [{"role": "user", "content": "q"}],
                },
            )
            if response.status_code != 200:
                failures.append(response.text)
            else:
                arms[response.json()["ladder"]["arm"]] += 1


def test_promote_and_roll_back_switch_live_routing_under_traffic_without_a_failed_request(
    tmp_path: Path, db_url: str
) -> None:
    settings = make_settings(tmp_path, db_url)
    with (
        live_server(make_app(settings)) as base,
        httpx.Client(base_url=base, headers=ADMIN) as admin,
    ):
        assert admin.post("/admin/experiments", json=experiment_body()).status_code == 201
        sticky = {user: arm_of(admin, user) for user in (f"s{i}" for i in range(12))}
        assert set(sticky.values()) == {"control", "treatment"}
        stop, failures, arms = threading.Event(), [], Counter()
        workers = [
            threading.Thread(target=_traffic, args=(base, stop, failures, arms)) for _ in range(3)
        ]
        for worker in workers:
            worker.start()
        try:
            for _ in range(2):
                promoted = admin.post(
                    "/admin/experiments/support/promote", json={"arm": "treatment"}
                )
                assert promoted.status_code == 200, promoted.text
                assert {arm_of(admin, user) for user in sticky} == {"treatment"}
                assert admin.post("/admin/experiments/support/rollback", json={}).status_code == 200
                assert {user: arm_of(admin, user) for user in sticky} == sticky
        finally:
            stop.set()
            for worker in workers:
                worker.join()
    assert failures == []
    assert sum(arms.values()) > 0


def test_reload_refuses_a_bad_file_and_serves_a_good_one_without_restart(
    client: TestClient, tmp_path: Path
) -> None:
    config = tmp_path / "configs.yaml"
    original = config.read_text()
    config.write_text("configurations:\n  plain: {system_prompt: Hi., bogus: true}\n")
    refused = client.post("/admin/configurations/reload", headers=ADMIN)
    assert refused.status_code == 400 and "bogus" in refused.json()["error"]["message"]
    config.write_text("configurations:\n  plain: {system_prompt: Hi.}\n")
    refused = client.post("/admin/configurations/reload", headers=ADMIN)
    assert refused.status_code == 400 and "friendly" in refused.json()["error"]["message"]
    assert arm_of(client, "ann") in ("control", "treatment")
    config.write_text(original + "  newcomer:\n    system_prompt: New.\n")
    reloaded = client.post("/admin/configurations/reload", headers=ADMIN)
    assert reloaded.status_code == 200 and reloaded.json()["added"] == ["newcomer"]
    answer = client.post(
        "/v1/chat/completions",
        json={"model": "newcomer", "messages": [{"role": "user", "content": "q"}]},
    )
    assert answer.status_code == 200
    assert client.get("/admin/audit", headers=ADMIN).json()[0]["action"] == "reload configurations"


def test_the_cli_runs_the_same_operations_against_a_running_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from service.cli.ab import app as ab_app

    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    spec = tmp_path / "support.yaml"
    spec.write_text(
        "name: support\nmodel: support\nstatus: running\narms:\n"
        "  - {name: control, configuration: plain, weight: 50}\n"
        "  - {name: treatment, configuration: friendly, weight: 50}\n"
    )
    monkeypatch.setenv("LADDER_ADMIN_TOKEN", ADMIN_TOKEN)
    runner = CliRunner()
    with live_server(make_app(settings)) as base:

        def ab(*args: str) -> Any:
            result = runner.invoke(ab_app, [*args, "--url", base])
            return result

        assert ab("create", str(spec)).exit_code == 0
        assert ab("weights", "support", "control=10", "treatment=90").exit_code == 0
        refused = ab("weights", "support", "ghost=1")
        assert refused.exit_code == 1 and "no arm 'ghost'" in refused.output
        assert ab("promote", "support", "treatment").exit_code == 0
        with httpx.Client(base_url=base) as http:
            assert arm_of(http, "anyone") == "treatment"
        assert ab("rollback", "support").exit_code == 0
        audit = ab("audit", "--experiment", "support")
        assert audit.exit_code == 0 and "cli:" in audit.output and "promote" in audit.output
        assert ab("results", "support").exit_code == 0
