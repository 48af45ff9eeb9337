"""kill -9 of a real `ladder serve` mid-traffic loses no acknowledged change, assignment or
feedback: each is committed (SQLite WAL, synchronous=FULL) before its answer is sent."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select

from service.experiments.models import ExposureRow, FeedbackRow
from tests.support.experiments import ADMIN, experiment_body, live_server
from tests.support.ladder_process import fake_upstream, ladder_env, ladder_serve

pytestmark = [pytest.mark.server, pytest.mark.slow]


class Acknowledged:
    """What the service confirmed before it died."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arms: dict[str, str] = {}
        self.feedback: dict[str, str] = {}


def _client_traffic(base: str, worker: int, seen: Acknowledged, stop: threading.Event) -> None:
    with httpx.Client(base_url=base, timeout=10) as http:
        number = 0
        while not stop.is_set():
            number += 1
            user = f"w{worker}-u{number}"
            try:
                answer = http.post(
                    "/v1/chat/completions",
                    json={
                        "model": "support",
                        "user": user,
                        "messages": [{"role": "user", "content": "q"}],
                    },
                )
                if answer.status_code != 200:
                    continue
                body = answer.json()
                with seen.lock:
                    seen.arms[user] = body["ladder"]["arm"]
                scored = {"response_id": body["id"], "score": 1, "user": user}
                sent = http.post("/v1/feedback", json=scored)
                if sent.status_code == 200:
                    with seen.lock:
                        seen.feedback[body["id"]] = sent.json()["arm"]
            except httpx.HTTPError:
                return


def test_kill_9_mid_traffic_loses_no_acknowledged_assignment_feedback_or_change(
    tmp_path: Path,
) -> None:
    seen, stop = Acknowledged(), threading.Event()
    with live_server(fake_upstream()) as upstream:
        env = ladder_env(tmp_path, upstream, None)
        log = tmp_path / "ladder.log"
        with ladder_serve(env, log) as ladder:
            with httpx.Client(base_url=ladder.base, headers=ADMIN) as admin:
                assert admin.post("/admin/experiments", json=experiment_body()).status_code == 201
                change = {"weights": {"control": 30, "treatment": 70}}
                assert (
                    admin.post("/admin/experiments/support/weights", json=change).status_code == 200
                )
            workers = [
                threading.Thread(target=_client_traffic, args=(ladder.base, n, seen, stop))
                for n in range(3)
            ]
            for worker in workers:
                worker.start()
            while len(seen.feedback) < 60:
                threading.Event().wait(0.05)
            ladder.kill_hard()
            stop.set()
            for worker in workers:
                worker.join()
        with ladder_serve(env, log) as restarted, httpx.Client(base_url=restarted.base) as http:
            experiment = http.get("/admin/experiments/support", headers=ADMIN).json()
            assert experiment["version"] == 2
            assert [arm["weight"] for arm in experiment["arms"]] == [30.0, 70.0]
            again = {}
            for user in seen.arms:
                answer = http.post(
                    "/v1/chat/completions",
                    json={
                        "model": "support",
                        "user": user,
                        "messages": [{"role": "user", "content": "q"}],
                    },
                )
                again[user] = answer.json()["ladder"]["arm"]
            assert again == seen.arms
    database = create_engine(f"sqlite:///{tmp_path / 'data' / 'ladder.db'}")
    with database.connect() as connection:
        stored = dict(
            connection.execute(
                select(ExposureRow.response_id, FeedbackRow.arm).join(
                    FeedbackRow, FeedbackRow.exposure_id == ExposureRow.id
                )
            ).all()
        )
    database.dispose()
    assert {rid: stored.get(rid) for rid in seen.feedback} == seen.feedback
