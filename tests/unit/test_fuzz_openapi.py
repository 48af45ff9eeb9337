"""Schemathesis against ladder's own OpenAPI spec (chat, models, feedback, admin, with and without
the admin token): no response is a 5xx, and every 4xx carries OpenAI's error body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.support.experiments import ADMIN, make_app, make_settings

EXAMPLES = 12


@pytest.fixture(scope="module")
def served_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """The real app with a scripted engine, its lifespan running for the whole module."""
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    app = make_app(make_settings(workdir, f"sqlite:///{workdir / 'ab.db'}"))
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


def fuzz(operation: schemathesis.APIOperation, mode: GenerationMode) -> bool:
    """Sends EXAMPLES generated requests, each without and with the admin token; False when
    the mode has no request to generate for the operation."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        for headers in (None, ADMIN):
            response = case.call(headers=headers)
            case.validate_response(response, checks=[not_a_server_error])
            assert_openai_error_shape(response)

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
