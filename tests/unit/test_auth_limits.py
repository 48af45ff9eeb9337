"""API keys (stored as digests, never logged), per-caller rate limits and stream slots on /v1."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.api.guard import TokenBuckets
from service.engines.base import GenerationRequest, TextDelta, Usage
from service.settings import Settings
from tests.support.assertions import assert_openai_error
from tests.support.experiments import ADMIN, ADMIN_TOKEN, app_client, bearer, live_server, make_app
from tests.support.experiments import sqlite_settings as make_settings
from tests.support.processes import free_port
from tests.support.scripted_engine import ScriptedEngine

PLAIN_KEY = "sk-ladder-plain-0123456789abcdef"
HASHED_KEY = "sk-ladder-hashed-fedcba9876543210"
HASHED_SETTING = "sha256:" + hashlib.sha256(HASHED_KEY.encode()).hexdigest()
QUESTION = {"model": "plain", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture()
def keyed(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, api_keys=f"{PLAIN_KEY}, {HASHED_SETTING}")
    with app_client(settings) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("sk-wrong"), {"authorization": PLAIN_KEY}, {"authorization": f"Basic {PLAIN_KEY}"}],
)
def test_v1_routes_without_a_valid_key_get_401_in_openai_shape(
    keyed: TestClient, headers: dict[str, str]
) -> None:
    for response in (
        keyed.post("/v1/chat/completions", json=QUESTION, headers=headers),
        keyed.get("/v1/models", headers=headers),
        keyed.post("/v1/feedback", json={"response_id": "x", "score": 1}, headers=headers),
    ):
        error = assert_openai_error(response, 401, "invalid_api_key")
        assert error["type"] == "authentication_error"


@pytest.mark.parametrize("key", [PLAIN_KEY, HASHED_KEY])
def test_plain_and_pre_hashed_keys_are_both_accepted(keyed: TestClient, key: str) -> None:
    assert keyed.post("/v1/chat/completions", json=QUESTION, headers=bearer(key)).status_code == 200
    assert keyed.get("/v1/models", headers=bearer(key)).status_code == 200


def test_health_and_ready_need_no_key(keyed: TestClient) -> None:
    assert keyed.get("/health").status_code == 200
    assert keyed.get("/ready").status_code == 200


def test_settings_keep_only_digests_of_the_keys(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_keys=f"{PLAIN_KEY},{HASHED_SETTING}")
    kept = f"{settings!r} {settings.model_dump()}"
    assert PLAIN_KEY not in kept and HASHED_KEY not in kept
    assert all(entry.startswith("sha256:") for entry in (settings.api_keys or "").split(","))


def test_a_refused_keys_setting_does_not_echo_the_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as refused:
        make_settings(tmp_path, api_keys=f"{PLAIN_KEY},sha256:not-hex")
    assert PLAIN_KEY not in str(refused.value)


def test_keys_and_admin_token_never_appear_in_logs(
    keyed: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        keyed.post("/v1/chat/completions", json=QUESTION, headers=bearer(PLAIN_KEY))
        keyed.post("/v1/chat/completions", json=QUESTION, headers=bearer(PLAIN_KEY + "x"))
        keyed.post("/v1/chat/completions", json={"model": "nope"}, headers=bearer(PLAIN_KEY))
        keyed.get("/admin/experiments", headers=ADMIN)
        keyed.get("/admin/experiments", headers=bearer(ADMIN_TOKEN + "x"))
    assert caplog.records, "the requests must have logged something to look at"
    assert PLAIN_KEY not in caplog.text and ADMIN_TOKEN not in caplog.text


def test_over_the_rate_limit_gets_429_with_retry_after_per_key(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_keys=f"{PLAIN_KEY},{HASHED_SETTING}", rate_limit_rpm=3)
    with app_client(settings) as client:
        statuses = [
            client.post("/v1/chat/completions", json=QUESTION, headers=bearer(PLAIN_KEY))
            for _ in range(4)
        ]
        assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
        error = assert_openai_error(statuses[3], 429, "rate_limit_exceeded")
        assert error["type"] == "rate_limit_error"
        assert 1 <= int(statuses[3].headers["retry-after"]) <= 20
        other = client.post("/v1/chat/completions", json=QUESTION, headers=bearer(HASHED_KEY))
        assert other.status_code == 200, "each key has its own bucket"


def test_without_keys_the_rate_limit_applies_per_client_address(tmp_path: Path) -> None:
    with app_client(make_settings(tmp_path, rate_limit_rpm=2)) as client:
        codes = [client.get("/v1/models").status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_token_bucket_refills_at_the_configured_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(per_minute=60, clock=lambda: now[0])
    assert all(buckets.take("k") is None for _ in range(60))
    wait = buckets.take("k")
    assert wait is not None and wait == pytest.approx(1.0)
    now[0] += 1.0
    assert buckets.take("k") is None and buckets.take("k") is not None


REDIS_ENV = "LADDER_TEST_REDIS_URL"


@pytest.fixture()
def redis_url() -> str:
    """LADDER_TEST_REDIS_URL, or a visible skip when it is not given (.ci/run sets it)."""
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"{REDIS_ENV} is not set: no Redis to test against (.ci/run sets it)")
    return url


@pytest.mark.redis
def test_replicas_sharing_redis_share_one_rate_limit(tmp_path: Path, redis_url: str) -> None:
    import redis

    key = f"sk-ladder-redis-{uuid.uuid4().hex}"  # a bucket of this test's own
    replicas = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        settings = make_settings(
            tmp_path / name, api_keys=key, rate_limit_rpm=3, redis_url=redis_url
        )
        replicas.append(TestClient(make_app(settings)))
    with replicas[0] as first, replicas[1] as second:
        answers = [
            client.post("/v1/chat/completions", json=QUESTION, headers=bearer(key))
            for client in (first, second, first, second)
        ]
    assert [r.status_code for r in answers[:3]] == [200, 200, 200], answers[-1].text
    assert_openai_error(answers[3], 429, "rate_limit_exceeded")
    assert 1 <= int(answers[3].headers["retry-after"]) <= 20
    stored = f"ladder:rl:key:{hashlib.sha256(key.encode()).hexdigest()}"
    with redis.Redis.from_url(redis_url) as client:
        assert 0 < client.pttl(stored) <= 61_000, "the bucket expires once it would be full"
        kept = [k.decode() for k in client.scan_iter("ladder:rl:*")]
        assert stored in kept and not any(key in k for k in kept), "the digest, not the key"


def test_an_unreachable_redis_admits_requests_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(tmp_path, rate_limit_rpm=1, redis_url=closed, redis_timeout_s=0.2)
    caplog.set_level(logging.WARNING, logger="ladder.guard")
    with app_client(settings) as client:
        started = time.monotonic()
        codes = [client.get("/v1/models").status_code for _ in range(3)]
        elapsed = time.monotonic() - started
    assert codes == [200, 200, 200], "fail open: the limit must not take the API down"
    assert elapsed < 3 * (0.2 + 1.0)
    warnings = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(warnings) == 1


class GatedEngine(ScriptedEngine):
    """Streams one piece, then waits for the gate before finishing."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[TextDelta, None]:
        yield TextDelta("first")
        while not self.gate.is_set():
            await asyncio.sleep(0.01)
        yield TextDelta("", "stop", Usage(1, 1))


def _open_stream(http: httpx.Client, key: str) -> httpx.Response:
    body = {**QUESTION, "stream": True}
    request = http.build_request("POST", "/v1/chat/completions", json=body, headers=bearer(key))
    return http.send(request, stream=True)


def test_concurrent_streams_per_key_are_capped_and_released(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_keys=PLAIN_KEY, max_streams_per_key=1)
    engine = GatedEngine()
    with live_server(make_app(settings, engine)) as base, httpx.Client(base_url=base) as http:
        first = _open_stream(http, PLAIN_KEY)
        assert first.status_code == 200
        second = _open_stream(http, PLAIN_KEY)
        second.read()
        assert_openai_error(second, 429, "rate_limit_exceeded")
        assert second.headers["retry-after"]
        first.close()  # the client goes away mid-stream: its slot must come back
        engine.gate.set()
        deadline, status = time.monotonic() + 5, 0
        while time.monotonic() < deadline and status != 200:
            again = _open_stream(http, PLAIN_KEY)
            again.read()
            status = again.status_code
            time.sleep(0.05)
        assert status == 200
        assert again.text.rstrip().endswith("data: [DONE]")


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compose passes `${LADDER_ADMIN_TOKEN:-}` through as an empty string: that means off."""
    for name in ("LADDER_ADMIN_TOKEN", "LADDER_API_KEYS", "LADDER_REDIS_URL"):
        monkeypatch.setenv(name, "")
    settings = Settings()
    assert (settings.admin_token, settings.api_keys, settings.redis_url) == (None, None, None)
