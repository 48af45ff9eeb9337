"""Results count users, not requests, on the real app against PostgreSQL: a heavy user is one
unit, anonymous requests are reported apart and are no sample-ratio units."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.experiments import (
    ADMIN,
    app_client,
    ask,
    experiment_body,
    make_settings,
    users_by_arm,
)

SALT = "results-salt"
PLAN = {"baseline": 0.3, "mde": 0.3, "traffic_per_day": 100}


def score(client: TestClient, user: str | None, positive: bool) -> None:
    """One request of `user` and its owner's thumbs up or down."""
    answer = ask(client, user).json()
    body = {"response_id": answer["id"], "score": 1 if positive else -1, "user": user}
    assert client.post("/v1/feedback", json=body).status_code == 200


def settled_results(client: TestClient, requests: int) -> dict[str, Any]:
    """The results once every outcome (written off the event loop) is in."""
    deadline = time.monotonic() + 30
    while True:
        found = client.get("/admin/experiments/support/results", headers=ADMIN).json()
        counted = sum(arm["requests"] for arm in found["arms"]) + found["anonymous"]["requests"]
        timed = sum(arm["latency_ms_p50"] is not None for arm in found["arms"])
        if (counted == requests and timed == 2) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_a_heavy_user_is_one_unit_and_anonymous_requests_are_apart(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = make_settings(tmp_path, postgres_url, experiment_min_samples=5)
    users = users_by_arm(SALT, {"control": 50, "treatment": 50}, 10)
    before = time.time()
    with app_client(settings) as client:
        body = experiment_body(salt=SALT, plan=PLAN)
        assert client.post("/admin/experiments", json=body, headers=ADMIN).status_code == 201
        for number, (control, treated) in enumerate(zip(*users.values(), strict=True)):
            score(client, control, positive=number < 3)
            score(client, treated, positive=number < 3)
        heavy = users["treatment"][-1]  # scored once above, negatively; now 40 more, all up
        for _ in range(40):
            score(client, heavy, positive=True)
        for _ in range(5):
            assert ask(client, None).status_code == 200
        found = settled_results(client, 65)
    arms = {arm["arm"]: arm for arm in found["arms"]}
    treatment, control = arms["treatment"], arms["control"]
    assert (treatment["users"], treatment["requests"], treatment["feedback"]) == (10, 50, 50)
    assert (control["users"], control["requests"]) == (10, 10)
    assert found["anonymous"] == {"requests": 5, "by_arm": {"control": 5}}
    assert found["sample_ratio"]["observed"] == {"control": 10, "treatment": 10}
    assert found["sample_ratio"]["units"] == 20
    assert control["served_share"] == treatment["weight_share"] == pytest.approx(0.5)

    # By hand, users as units: treatment rows (positives, scores) = (1, 1) x3, (0, 1) x6 and the
    # heavy user's (40, 41); R = 43/50 = .86, residuals y - R x = .14 x3, -.86 x6, 4.74;
    # sum of squares 26.964 / 9 / (10 * 5.0**2) = .011984. Control 3 of 10: 2.1 / 9 / 10 =
    # .0233333. V = .0353173, d = .56, tau2 = .09: log Lambda = .5 ln(V / (V + .09))
    # + .09 * .56**2 / (2 V (V + .09)) = 2.555285, p = .077670. Counting the 50 scores as units
    # (pooled z-test, 43/50 vs 3/10) would claim p = .00013.
    feedback = found["comparisons"]["treatment"]["feedback_rate"]
    assert feedback["difference"] == pytest.approx(0.86 - 0.3)
    assert feedback["p_value"] == pytest.approx(0.077670, rel=1e-4), "a heavy user is one unit"
    assert feedback["significant"] is False
    # (The verdict may also name a guardrail: latency in-process varies with the machine's load.)
    assert found["comparisons"]["treatment"]["verdict"] != "better"
    assert found["winner"] != "treatment"

    assert before <= found["started_at"] <= time.time() and found["duration_s"] > 0
    plan = found["plan"]
    assert plan["mde"] == 0.3 and plan["users_per_arm"] == 77
    assert plan["progress"] == pytest.approx(10 / 77)
