"""Every error path answers with its status and OpenAI's error body; streams end with [DONE]."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.index import Index
from service.api.app import create_app
from service.errors import EngineError, EngineOverloaded, EngineTimeout, EngineUnavailable
from service.settings import Settings
from tests.support.assertions import assert_openai_error
from tests.support.scripted_engine import ScriptedEngine

CONFIG = """
configurations:
  plain:
    system_prompt: Be brief.
  rag:
    system_prompt: Use the passages.
    retrieval: {collection: docs, k: 3}
"""


@pytest.fixture()
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture()
def client(tmp_path: Path, engine: ScriptedEngine, corpus_index: Index) -> Iterator[TestClient]:
    config = tmp_path / "configs.yaml"
    config.write_text(CONFIG)
    settings = Settings(
        data_dir=tmp_path,
        config=config,
        max_messages=4,
        max_total_chars=2000,
        max_message_chars=1000,
        max_body_bytes=4096,
        max_tokens_ceiling=100,
        context_window=512,
    )
    with TestClient(create_app(settings, engine=engine, index=corpus_index)) as test_client:
        yield test_client


def chat(client: TestClient, **body: object) -> object:
    payload = {"model": "plain", "messages": [{"role": "user", "content": "hi"}], **body}
    return client.post("/v1/chat/completions", json=payload)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "plain"},
        {"model": "plain", "messages": []},
        {"model": "plain", "messages": [{"role": "wizard", "content": "x"}]},
        {"model": "plain", "messages": [{"role": "user", "content": "x"}], "temperature": 9},
        {"model": "plain", "messages": [{"role": "assistant", "content": "x"}]},
        {"model": "plain", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
    ],
)
def test_invalid_bodies_get_400_in_openai_shape(client: TestClient, body: dict) -> None:
    error = assert_openai_error(client.post("/v1/chat/completions", json=body), 400)
    assert error["type"] == "invalid_request_error"


def test_malformed_json_gets_400(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions", content=b"{bad", headers={"content-type": "application/json"}
    )
    assert_openai_error(response, 400)


def test_unknown_configuration_gets_404(client: TestClient) -> None:
    error = assert_openai_error(chat(client, model="nope"), 404, "model_not_found")
    assert "plain" in error["message"] and error["param"] == "model"


def test_unknown_route_gets_404_in_openai_shape(client: TestClient) -> None:
    assert_openai_error(client.get("/v1/nothing-here"), 404)


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": "x"}] * 5},
        {"messages": [{"role": "user", "content": "x" * 1001}]},
    ],
)
def test_over_size_requests_get_413(client: TestClient, body: dict) -> None:
    assert_openai_error(chat(client, **body), 413)


def test_over_size_body_gets_413_before_parsing(client: TestClient) -> None:
    payload = json.dumps({"model": "plain", "messages": [], "pad": "x" * 5000}).encode()
    response = client.post(
        "/v1/chat/completions", content=payload, headers={"content-type": "application/json"}
    )
    assert_openai_error(response, 413)


def test_conversation_over_the_window_gets_400_that_says_so(client: TestClient) -> None:
    messages = [{"role": "user", "content": "word " * 180}] * 2 + [{"role": "user", "content": "q"}]
    error = assert_openai_error(chat(client, messages=messages), 400, "context_length_exceeded")
    assert "window" in error["message"]


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (EngineError("upstream said 500"), 502),
        (EngineUnavailable("connection refused"), 503),
        (EngineTimeout("read timeout"), 504),
        (EngineOverloaded("queue full", retry_after=3), 503),
    ],
)
def test_engine_failures_map_to_their_status(
    client: TestClient, engine: ScriptedEngine, failure: EngineError, status: int
) -> None:
    engine.enqueue(error=failure)
    response = chat(client)
    error = assert_openai_error(response, status)
    assert failure.message in error["message"]
    if isinstance(failure, EngineOverloaded):
        assert response.headers["retry-after"] == "3"


def test_stream_cut_by_engine_failure_ends_with_error_event_and_done(
    client: TestClient, engine: ScriptedEngine
) -> None:
    engine.enqueue("Hel", "lo", error=EngineUnavailable("engine died"), fail_after=2)
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "plain", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    ) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert "engine died" in error["message"] and error["code"] == "engine_unavailable"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-2])
    assert text == "Hello"


def test_metrics_count_requests_by_configuration_and_status(
    client: TestClient, engine: ScriptedEngine
) -> None:
    chat(client)
    engine.enqueue(error=EngineTimeout("slow"))
    chat(client)
    body = client.get("/metrics").text
    assert 'ladder_requests_total{adapter="base",configuration="plain",status="200"} 1.0' in body
    assert 'ladder_requests_total{adapter="base",configuration="plain",status="504"} 1.0' in body
    assert "ladder_request_seconds_bucket" in body


def test_ready_turns_false_when_the_engine_is_not_ready(
    client: TestClient, engine: ScriptedEngine
) -> None:
    assert client.get("/ready").json()["ready"] is True
    engine.is_ready = False
    response = client.get("/ready")
    assert response.status_code == 503 and response.json()["engine"] is False


def test_stream_refused_before_its_first_token_gets_its_status_not_a_200(
    client: TestClient, engine: ScriptedEngine
) -> None:
    engine.enqueue("never", error=EngineOverloaded("queue full", retry_after=2), fail_after=0)
    response = chat(client, stream=True)
    assert_openai_error(response, 503, "engine_overloaded")
    assert response.headers["retry-after"] == "2"
