"""Schemathesis against ladder's own OpenAPI spec (chat, models, feedback, admin, with and without
the admin token): no response is a 5xx, and every 4xx carries OpenAI's error body. Besides the
generated requests: every body again with a lone surrogate in each string and extreme numbers
(2**64, 1e-300) in each number, and chat requests with a huge model name. Prompt tokens are
counted by a real chat tokenizer (the tiny test model's), as the vLLM engine counts them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from service.engines.base import ChatMessage
from service.engines.tokens import ChatTokenizer
from tests.support.experiments import ADMIN, make_app, make_settings
from tests.support.models import models_cache_dir
from tests.support.scripted_engine import ScriptedEngine
from tests.support.tiny_model import tiny_model_dir

EXAMPLES = 12
CHAT_MESSAGES = [{"role": "user", "content": "hi"}]
HOSTILE_CHAT_BODIES = [
    {"model": "plain", "messages": [{"role": "user", "content": "\ud800"}]},
    {"model": "plain", "messages": [{"role": "user", "content": "a\udfffb"}], "stream": True},
    {
        "model": "plain",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "\udc00"}]}],
    },
    {"model": "plain", "messages": CHAT_MESSAGES, "seed": 2**64},
    {"model": "plain", "messages": CHAT_MESSAGES, "seed": -(2**64), "stream": True},
    {"model": "plain", "messages": CHAT_MESSAGES, "max_tokens": 10**30},
    {"model": "plain", "messages": CHAT_MESSAGES, "max_completion_tokens": 2**64},
    {"model": "plain", "messages": CHAT_MESSAGES, "temperature": 1e-300, "top_p": 1e-300},
    {"model": "plain", "messages": CHAT_MESSAGES, "n": 2**64},
    {"model": "m" * 900_000, "messages": CHAT_MESSAGES},
    {"model": "m" * 900_000, "messages": CHAT_MESSAGES, "stream": True},
]


class TokenizingEngine(ScriptedEngine):
    """The scripted engine, counting prompt tokens with a real chat tokenizer."""

    def __init__(self, tokenizer: ChatTokenizer) -> None:
        super().__init__()
        self.tokenizer = tokenizer

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return self.tokenizer.count(messages)


@pytest.fixture(scope="module")
def served_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """The real app with a scripted engine, its lifespan running for the whole module."""
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    engine = TokenizingEngine(ChatTokenizer(tiny_model_dir(models_cache_dir())))
    app = make_app(make_settings(workdir, f"sqlite:///{workdir / 'ab.db'}"), engine)
    with TestClient(app):
        yield app


def assert_openai_error_shape(response: schemathesis.Response) -> None:
    """A 4xx answer is `{"error": {"message", "type", "param", "code"}}` with a message."""
    if not 400 <= response.status_code < 500:
        return
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def hostile(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """A JSON value with `leaf` applied to every string and number in it."""
    if isinstance(value, dict):
        return {key: hostile(item, leaf) for key, item in value.items()}
    if isinstance(value, list):
        return [hostile(item, leaf) for item in value]
    return leaf(value)


def lone_surrogate(leaf: Any) -> Any:
    return leaf + "\ud800" if isinstance(leaf, str) else leaf


def extreme_number(leaf: Any) -> Any:
    if isinstance(leaf, bool):
        return leaf
    if isinstance(leaf, int):
        return 2**64
    return 1e-300 if isinstance(leaf, float) else leaf


def check(case: schemathesis.Case, headers: dict[str, str] | None = None) -> None:
    """No 5xx, and a 4xx in OpenAI's error shape."""
    response = case.call(headers=headers)
    case.validate_response(response, checks=[not_a_server_error])
    assert_openai_error_shape(response)


def fuzz(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    leaf: Callable[[Any], Any] | None = None,
) -> bool:
    """Sends EXAMPLES generated requests, each without and with the admin token, their bodies
    passed through `leaf` when given; False when the mode has no request to generate for the
    operation."""
    strategy = operation.as_strategy(generation_mode=mode)
    if leaf is not None:
        strategy = strategy.map(lambda case: poisoned(case, leaf))

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        for headers in (None, ADMIN):
            check(case, headers)

    try:
        run()
    except Unsatisfiable:
        # An operation without inputs (GET /health) has no invalid request to generate.
        if mode is GenerationMode.POSITIVE:
            raise
        return False
    return True


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_5xx_and_every_4xx_in_openai_shape(served_app: FastAPI, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", served_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    fuzzed = [operation.label for operation in operations if fuzz(operation, mode)]
    assert len(fuzzed) >= 10, f"chat, feedback and the admin API must be fuzzed: {fuzzed}"


def poisoned(case: schemathesis.Case, leaf: Callable[[Any], Any]) -> schemathesis.Case:
    """A new case with `leaf` applied to the JSON body (a case without one is left as it is);
    new, because schemathesis re-validates a changed body, which a lone surrogate breaks."""
    if not isinstance(case.body, dict | list):
        return case
    return case.operation.Case(
        path_parameters=case.path_parameters,
        headers=case.headers,
        query=case.query,
        body=hostile(case.body, leaf),
        media_type=case.media_type,
    )


@pytest.mark.parametrize("leaf", [lone_surrogate, extreme_number])
def test_lone_surrogates_and_extreme_numbers_in_every_body_get_no_5xx(
    served_app: FastAPI, leaf: Callable[[Any], Any]
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", served_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    with_body = [op for op in operations if op.get_request_payload_content_types()]
    fuzzed = [op.label for op in with_body if fuzz(op, GenerationMode.POSITIVE, leaf)]
    assert any("chat/completions" in label for label in fuzzed), fuzzed
    assert len(fuzzed) >= 5, f"chat, feedback and the admin API must be fuzzed: {fuzzed}"


@pytest.mark.parametrize("body", HOSTILE_CHAT_BODIES, ids=lambda body: str(body)[:60])
def test_hostile_chat_requests_get_4xx_in_openai_shape_or_an_answer(
    served_app: FastAPI, body: dict[str, Any]
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", served_app)
    operation = schema["/v1/chat/completions"]["POST"]
    check(operation.Case(body=body, media_type="application/json"))
