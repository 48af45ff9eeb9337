"""An arm whose configuration fails one request in five is paused by its error-rate guardrail
within 240 requests (the bound README states for the default settings), with no failed request
after the pause and the evidence in the audit log; an A/A experiment over the same failing
configuration and the same traffic is never paused. The real app on real PostgreSQL, over HTTP
on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.engines.base import GenerationRequest
from service.errors import EngineError
from tests.support.experiments import (
    ADMIN,
    ask,
    experiment_body,
    live_server,
    make_app,
    make_settings,
)
from tests.support.scripted_engine import Script, ScriptedEngine

pytestmark = [pytest.mark.server, pytest.mark.slow]

STATED_BOUND = 240
"""Requests (both arms) within which a 20 % failing arm is paused at the default settings
(bench/guardrails.md: median 100, all of 300 simulated runs within 240)."""
AFTER = 150
FLAKY = "Be friendly."
GUARDRAIL = {"metric": "error_rate", "max_increase": 0.01}


@dataclass
class FailingEvery(ScriptedEngine):
    """An upstream that drops every fifth request of one configuration (told by its system
    prompt) with a 502, whichever arm sent it."""

    prompt: str = FLAKY
    every: int = 5
    seen: int = 0

    def _next(self, request: GenerationRequest) -> Script:
        script = super()._next(request)
        if any(m.role == "system" and self.prompt in m.content for m in request.messages):
            self.seen += 1
            if self.seen % self.every == 0:
                return Script(["lost"], EngineError("the upstream dropped the request"))
        return script


def traffic() -> Iterator[str]:
    """Users one after another, user n sending 1 + n % 3 requests in a row."""
    number = 0
    while True:
        for _ in range(1 + number % 3):
            yield f"user-{number}"
        number += 1


def treatment(found: dict[str, Any], key: str = "name") -> dict[str, Any]:
    """The treatment's row of an experiment (arms by "name") or of its results (by "arm")."""
    return next(arm for arm in found["arms"] if arm[key] == "treatment")


def results(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/admin/experiments/support/results", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def errors_stored(client: httpx.Client, failed: int) -> dict[str, Any]:
    """The results once the outcomes of `failed` failed requests are counted (outcomes are
    written off the event loop), or after 30 s (a paused arm's failures are never counted)."""
    deadline = time.monotonic() + 30
    found = results(client)
    while sum(arm["errors"] for arm in found["arms"]) < failed and time.monotonic() < deadline:
        time.sleep(0.1)
        found = results(client)
    return found


def serve(tmp_path: Path, postgres_url: str, arms: list[dict[str, Any]]) -> Any:
    """The app at default settings with the failing upstream, and the experiment's body. The
    least time between checks is 0: the bound counts requests judged, and a fast machine must
    not send more of them in the default 1 s than a slow one."""
    engine = FailingEvery()
    settings = make_settings(tmp_path, postgres_url, guardrail_check_interval_s=0)
    app = make_app(settings, engine)
    body = experiment_body(salt="fixed", arms=arms, guardrails=[GUARDRAIL])
    return engine, app, body


def test_an_arm_failing_one_request_in_five_is_paused_in_time_and_nothing_fails_after(
    tmp_path: Path, postgres_url: str
) -> None:
    arms = [
        {"name": "control", "configuration": "plain", "weight": 50},
        {"name": "treatment", "configuration": "friendly", "weight": 50},
    ]
    engine, app, body = serve(tmp_path, postgres_url, arms)
    with live_server(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        assert client.post("/admin/experiments", json=body, headers=ADMIN).status_code == 201
        users = traffic()
        sent, failed, paused_after = 0, 0, None
        while paused_after is None and sent < STATED_BOUND:
            sent += 1
            failed += ask(client, next(users)).status_code != 200
            experiment = client.get("/admin/experiments/support", headers=ADMIN).json()
            paused_after = sent if treatment(experiment)["paused"] else None
        assert paused_after is not None, f"not paused after {sent} requests ({failed} failed)"
        reached_upstream = engine.seen
        assert treatment(results(client), "arm")["requests"] == reached_upstream
        later = [ask(client, next(users)) for _ in range(AFTER)]
        assert [r.status_code for r in later] == [200] * AFTER
        assert {r.json()["ladder"]["arm"] for r in later} == {"control"}
        assert {r.headers["x-ladder-config"] for r in later} == {"plain"}
        assert engine.seen == reached_upstream, "a request reached the failing configuration"
        found = errors_stored(client, failed)
        assert treatment(found, "arm")["requests"] == reached_upstream, "answers were counted"
        row = next(g for g in found["guardrails"] if g["arm"] == "treatment")
        assert (row["state"], row["metric"]) == ("breached", "error_rate")
        assert row["paused_at"] is not None
        audit = client.get("/admin/audit", params={"by": "guardrail"}, headers=ADMIN).json()
    assert [entry["action"] for entry in audit] == ["pause arm treatment"]
    assert audit[0]["diff"]["arms.treatment.paused"] == [False, True]
    (evidence,) = audit[0]["diff"]["evidence"]["breaches"]
    assert (evidence["metric"], evidence["max_increase"]) == ("error_rate", 0.01)
    assert evidence["arm_value"] > 0.1 and evidence["control_value"] == 0
    assert evidence["excess_low"] > 0 and evidence["p_adjusted"] <= 0.05
    assert evidence["arm_users"] >= 20 and evidence["control_users"] >= 20
    print(f"paused after {paused_after} requests, {failed} of them failed")


def test_an_a_a_experiment_on_the_failing_configuration_is_never_paused(
    tmp_path: Path, postgres_url: str
) -> None:
    arms = [
        {"name": "control", "configuration": "friendly", "weight": 50},
        {"name": "treatment", "configuration": "friendly", "weight": 50},
    ]
    engine, app, body = serve(tmp_path, postgres_url, arms)
    total = STATED_BOUND + AFTER
    with live_server(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        assert client.post("/admin/experiments", json=body, headers=ADMIN).status_code == 201
        users = traffic()
        statuses = [ask(client, next(users)).status_code for _ in range(total)]
        found = errors_stored(client, statuses.count(502))
        audit = client.get("/admin/audit", params={"by": "guardrail"}, headers=ADMIN).json()
    assert engine.seen == total and statuses.count(502) == total // 5, "not failing as scripted"
    assert audit == []
    errors = {arm["arm"]: arm["errors"] for arm in found["arms"]}
    assert sum(errors.values()) == total // 5 and min(errors.values()) > 10, errors
    assert [(g["arm"], g["state"]) for g in found["guardrails"]] == [("treatment", "ok")]
    assert not any(arm["paused"] for arm in found["arms"])
