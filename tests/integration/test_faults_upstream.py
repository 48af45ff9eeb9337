"""A real `ladder serve` (vllm engine) in front of an upstream that is down, dies mid-stream,
hangs, stalls or answers 500: requests fail fast with their status in OpenAI's shape, streams end
with an error event and [DONE], /ready turns false, and service resumes when the upstream does."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.assertions import assert_openai_error
from tests.support.fault_servers import UpstreamProcess
from tests.support.ladder_process import ladder_env, ladder_serve
from tests.support.processes import free_port

pytestmark = [pytest.mark.server, pytest.mark.slow]

READ_TIMEOUT_S = 2.0
SLACK_S = 1.5
QUESTION = {"model": "plain", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamProcess]:
    """The fake upstream, not started: each test puts it in the state it needs."""
    server = UpstreamProcess(free_port(), tmp_path_factory.mktemp("upstream") / "upstream.log")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def http(
    tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamProcess
) -> Iterator[httpx.Client]:
    """A client of one `ladder serve`, started while the upstream is down."""
    workdir: Path = tmp_path_factory.mktemp("ladder-upstream-faults")
    env = ladder_env(workdir, upstream.url, None)
    env |= {
        "LADDER_VLLM_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
        "LADDER_VLLM_CONNECT_TIMEOUT_S": "1",
    }
    with (
        ladder_serve(env, workdir / "ladder.log") as ladder,
        httpx.Client(base_url=ladder.base, timeout=15) as client,
    ):
        yield client


def events_of(response: httpx.Response) -> list[str]:
    """The data payloads of an SSE response."""
    return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


def timed_post(http: httpx.Client, body: dict) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = http.post("/v1/chat/completions", json=body)
    return response, time.monotonic() - started


def assert_refused(http: httpx.Client, status: int, code: str, within_s: float) -> None:
    """Plain and streaming requests both get the status, in OpenAI's shape, in time."""
    for body in (QUESTION, {**QUESTION, "stream": True}):
        response, seconds = timed_post(http, body)
        assert_openai_error(response, status, code)
        assert seconds < within_s, f"{seconds:.1f} s"
    started = time.monotonic()
    ready = http.get("/ready")
    assert ready.status_code == 503 and ready.json()["engine"] is False
    assert time.monotonic() - started < 2.0 + SLACK_S


def assert_recovers(http: httpx.Client, upstream: UpstreamProcess) -> None:
    """With the upstream back, /ready turns true and every request succeeds, no restart."""
    upstream.start("ok")
    deadline = time.monotonic() + 10
    while http.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, "/ready stayed false after the upstream came back"
        time.sleep(0.1)
    for _ in range(3):
        assert http.post("/v1/chat/completions", json=QUESTION).status_code == 200
        with http.stream("POST", "/v1/chat/completions", json={**QUESTION, "stream": True}) as r:
            events = events_of(r)
        assert r.status_code == 200 and events[-1] == "[DONE]"
        assert not any('"error"' in event for event in events)


def assert_stream_ends_with_error(response: httpx.Response, code: str) -> None:
    events = events_of(response)
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == code


def test_upstream_down_at_start_fails_fast_and_recovers(
    http: httpx.Client, upstream: UpstreamProcess
) -> None:
    upstream.kill()
    assert_refused(http, 503, "engine_unavailable", SLACK_S)
    assert_recovers(http, upstream)


def test_upstream_killed_mid_stream_ends_the_stream_with_an_error(
    http: httpx.Client, upstream: UpstreamProcess
) -> None:
    upstream.start("ok", pieces=100, delay=0.05)
    with http.stream("POST", "/v1/chat/completions", json={**QUESTION, "stream": True}) as r:
        lines = r.iter_lines()
        content = 0
        while content < 3:
            content += '"content":"word' in next(lines)
        upstream.kill()
        killed = time.monotonic()
        rest = [line[6:] for line in lines if line.startswith("data: ")]
    assert time.monotonic() - killed < SLACK_S
    assert rest[-1] == "[DONE]"
    assert json.loads(rest[-2])["error"]["code"] == "engine_unavailable"
    assert_refused(http, 503, "engine_unavailable", SLACK_S)
    assert_recovers(http, upstream)


def test_hanging_upstream_times_out_with_504_and_recovers(
    http: httpx.Client, upstream: UpstreamProcess
) -> None:
    upstream.start("hang")
    assert_refused(http, 504, "engine_timeout", READ_TIMEOUT_S + SLACK_S)
    assert_recovers(http, upstream)


def test_upstream_stalling_mid_stream_ends_the_stream_in_time(
    http: httpx.Client, upstream: UpstreamProcess
) -> None:
    upstream.start("stall", pieces=10)
    started = time.monotonic()
    with http.stream("POST", "/v1/chat/completions", json={**QUESTION, "stream": True}) as r:
        assert r.status_code == 200
        assert_stream_ends_with_error(r, "engine_timeout")
    assert time.monotonic() - started < READ_TIMEOUT_S + SLACK_S
    assert_recovers(http, upstream)


def test_upstream_answering_500_gets_502_and_recovers(
    http: httpx.Client, upstream: UpstreamProcess
) -> None:
    upstream.start("error")
    assert_refused(http, 502, "engine_error", SLACK_S)
    assert_recovers(http, upstream)
