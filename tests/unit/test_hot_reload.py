"""Reloading the configurations under traffic: a broken file is refused with its reason, the old
configurations keep serving, a good file takes over, and not one request fails meanwhile."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.support.assertions import assert_openai_error
from tests.support.experiments import ADMIN, CONFIG, live_server, make_app, make_settings
from tests.support.scripted_engine import ScriptedEngine

BROKEN = {
    "yaml": ("configurations:\n  plain: {system_prompt: [unclosed\n", "not valid YAML"),
    "field": (
        "configurations:\n  plain:\n    system_prompt: x\n    tempreature: 1\n",
        "tempreature",
    ),
    "half-written": (CONFIG[: len(CONFIG) // 2] + "\n   - ", "not reloaded"),
    "empty": ("", "not reloaded"),
    "unknown adapter": ("configurations:\n  plain: {adapter: nowhere}\n", "adapter"),
}
NEW_PROMPT = "Answer like a pirate."
# Requests the traffic must have made before it stops, however slow a loaded machine makes it.
MIN_REQUESTS = 20
TRAFFIC_DEADLINE_S = 60


def traffic(base: str, stop: threading.Event, statuses: Counter[int]) -> None:
    """Asks `plain` and `friendly` in a loop until told to stop; counts the statuses."""
    body = {"model": "plain", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=base, timeout=10) as http:
        while not stop.is_set():
            for model in ("plain", "friendly"):
                statuses[
                    http.post("/v1/chat/completions", json=body | {"model": model}).status_code
                ] += 1


def system_prompt_served(http: httpx.Client, engine: ScriptedEngine) -> str:
    """The system prompt `plain` is answered with right now."""
    body = {"model": "plain", "messages": [{"role": "user", "content": "which prompt?"}]}
    assert http.post("/v1/chat/completions", json=body).status_code == 200
    asked = [r for r in engine.history if r.messages[-1].content == "which prompt?"][-1]
    return asked.messages[0].content


def test_invalid_configuration_file_under_traffic_is_refused_and_nothing_fails(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'ab.db'}")
    engine, statuses, stop = ScriptedEngine(), Counter[int](), threading.Event()
    with live_server(make_app(settings, engine)) as base, httpx.Client(base_url=base) as http:
        workers = [threading.Thread(target=traffic, args=(base, stop, statuses)) for _ in range(3)]
        for worker in workers:
            worker.start()
        try:
            for text, reason in BROKEN.values():
                settings.config.write_text(text)
                refused = http.post("/admin/configurations/reload", headers=ADMIN)
                error = assert_openai_error(refused, 400, "invalid_change")
                assert reason in error["message"]
                assert system_prompt_served(http, engine) == "Be brief."
            settings.config.write_text(CONFIG.replace("Be brief.", NEW_PROMPT))
            reloaded = http.post("/admin/configurations/reload", headers=ADMIN)
            assert reloaded.status_code == 200 and reloaded.json()["changed"] == ["plain"]
            assert system_prompt_served(http, engine) == NEW_PROMPT
            deadline = time.monotonic() + TRAFFIC_DEADLINE_S
            while sum(statuses.values()) < MIN_REQUESTS and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            for worker in workers:
                worker.join()
    assert set(statuses) == {200} and statuses[200] >= MIN_REQUESTS, statuses
