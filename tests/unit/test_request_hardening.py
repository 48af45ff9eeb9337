"""Hostile values in a valid-looking chat request get a 400 or are served, never a 5xx, and never
grow the metrics: lone surrogates, seeds past 64 bits, a vanishing temperature, huge or unknown
model names, an over-ceiling token limit, and content parts with nothing in them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support.assertions import assert_openai_error
from tests.support.experiments import app_client, make_settings
from tests.support.scripted_engine import ScriptedEngine

METRICS_TOKEN = "metrics-token-0123456789"
CEILING = 100
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture()
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture()
def client(tmp_path: Path, engine: ScriptedEngine) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path, f"sqlite:///{tmp_path / 'ab.db'}", max_tokens_ceiling=CEILING
    )
    with app_client(settings, engine) as test_client:
        yield test_client


def post_raw(client: TestClient, raw: str) -> httpx.Response:
    """Posts JSON text as written: `\\ud800` stays an escape, as a hostile client sends it."""
    headers = {"content-type": "application/json"}
    return client.post("/v1/chat/completions", content=raw.encode("ascii"), headers=headers)


def chat(client: TestClient, **body: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": "plain", "messages": HI, **body})


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ('"messages": [{"role": "user", "content": "a\\ud800b"}]', "messages.0.content"),
        (
            '"messages": [{"role": "user", "content": "\\udfff"}], "stream": true',
            "messages.0.content",
        ),
        (
            '"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udc00"}]}]',
            "messages.0.content",
        ),
        ('"messages": [{"role": "user", "content": "hi", "name": "\\ud800"}]', "messages.0.name"),
        ('"messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud800"]', "stop"),
        ('"messages": [{"role": "user", "content": "hi"}], "user": "\\ud800"', "user"),
    ],
)
def test_lone_surrogates_get_400_naming_the_field_and_never_reach_the_engine(
    client: TestClient, engine: ScriptedEngine, fields: str, param: str
) -> None:
    response = post_raw(client, '{"model": "plain", ' + fields + "}")
    error = assert_openai_error(response, 400)
    assert error["param"] == param and "lone surrogate" in error["message"]
    assert engine.history == []
    assert chat(client).status_code == 200, "the next request on the client is served"


def test_a_surrogate_pair_is_a_character_and_is_served(
    client: TestClient, engine: ScriptedEngine
) -> None:
    response = post_raw(
        client, '{"model": "plain", "messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'
    )
    assert response.status_code == 200
    assert engine.history[-1].messages[-1].content == "\N{GRINNING FACE}"


@pytest.mark.parametrize("seed", [2**64, 2**63, -1])
def test_a_seed_outside_0_to_2_63_gets_400(
    client: TestClient, engine: ScriptedEngine, seed: int
) -> None:
    error = assert_openai_error(chat(client, seed=seed), 400)
    assert error["param"] == "seed"
    assert engine.history == []


def test_the_largest_seed_reaches_the_engine(client: TestClient, engine: ScriptedEngine) -> None:
    assert chat(client, seed=2**63 - 1).status_code == 200
    assert engine.history[-1].sampling.seed == 2**63 - 1


@pytest.mark.parametrize(("asked", "sent"), [(1e-300, 0.0), (5e-324, 0.0), (0.5, 0.5)])
def test_a_vanishing_temperature_is_sent_as_greedy(
    client: TestClient, engine: ScriptedEngine, asked: float, sent: float
) -> None:
    assert chat(client, temperature=asked).status_code == 200
    assert engine.history[-1].sampling.temperature == sent


def test_unknown_model_names_share_one_metrics_label(client: TestClient) -> None:
    names = [f"no-such-model-{number}-" + "x" * 200 for number in range(10)]
    for name in names:
        assert_openai_error(chat(client, model=name), 404, "model_not_found")
    body = client.get("/metrics").text
    assert not any(name in body for name in names)
    expected = 'ladder_requests_total{adapter="none",configuration="(unknown)",status="404"} 10.0'
    assert expected in body


def test_a_known_model_refused_before_planning_keeps_its_label(client: TestClient) -> None:
    assert_openai_error(chat(client, messages=[{"role": "user", "content": "x" * 40_000}]), 413)
    body = client.get("/metrics").text
    assert 'ladder_requests_total{adapter="none",configuration="plain",status="413"} 1.0' in body


def test_a_model_name_over_the_cap_gets_400_without_echoing_it(client: TestClient) -> None:
    huge = "m" * 900_000
    error = assert_openai_error(chat(client, model=huge), 400)
    assert error["param"] == "model" and "256 characters" in error["message"]
    assert len(json.dumps(error)) < 1000
    assert chat(client, model="m" * 256).status_code == 404, "up to the cap, it is looked up"


def test_the_metrics_token_guards_metrics_when_set(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, f"sqlite:///{tmp_path / 'ab.db'}", metrics_token=METRICS_TOKEN
    )
    with app_client(settings) as client:
        assert_openai_error(client.get("/metrics"), 401)
        wrong = {"authorization": "Bearer not-the-metrics-token"}
        assert_openai_error(client.get("/metrics", headers=wrong), 401)
        right = client.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
        assert right.status_code == 200 and "ladder_requests" in right.text


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_a_token_limit_over_the_ceiling_gets_400_naming_the_field_sent(
    client: TestClient, field: str
) -> None:
    error = assert_openai_error(chat(client, **{field: CEILING + 1}), 400)
    assert error["param"] == field
    assert f"{field} is {CEILING + 1}" in error["message"] and str(CEILING) in error["message"]


def test_content_parts_are_measured_by_their_text(
    client: TestClient, engine: ScriptedEngine
) -> None:
    empty_parts = [{"type": "text", "text": ""}] * 3000 + [{"type": "text", "text": "hi"}]
    messages = [{"role": "user", "content": empty_parts}]
    assert chat(client, messages=messages).status_code == 200
    assert engine.history[-1].messages[-1].content == "hi"
    over = [{"type": "text", "text": "x" * 20_000}] * 2
    error = assert_openai_error(chat(client, messages=[{"role": "user", "content": over}]), 413)
    assert "32000 characters" in error["message"]
