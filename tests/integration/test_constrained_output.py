"""Constrained output on the local engine, end to end: the official openai client against
`ladder serve` with the bundled SmolLM2 gets JSON that matches the schema it sent (whole and
streamed), a 400 for a schema that cannot compile, and one of a configuration's choices."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.ladder_process import ladder_serve
from tests.support.models import models_cache_dir

CHOICES = ["refund", "repair", "replace"]
CONFIG = f"""
configurations:
  plain:
    system_prompt: You are a support assistant.
  remedy:
    system_prompt: Name the remedy.
    output:
      choice: {json.dumps(CHOICES)}
  order-number:
    output:
      regex: "BW-[0-9]{{4}}"
"""
SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"enum": ["billing", "shipping", "safety"]},
        "urgent": {"type": "boolean"},
        "summary": {"type": "string", "maxLength": 24},
    },
    "required": ["category", "urgent", "summary"],
    "additionalProperties": False,
}
TRIAGE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "triage", "schema": SCHEMA, "strict": True},
}
MESSAGE = "My kettle sparks and smells of smoke when I switch it on. What should I do?"


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path
) -> Iterator[openai.OpenAI]:
    """`ladder serve` on the local engine with configurations that constrain their output."""
    data = tmp_path_factory.mktemp("constrained")
    (data / "configs.yaml").write_text(CONFIG)
    env = {
        **os.environ,
        "LADDER_DATA_DIR": str(data),
        "LADDER_CONFIG": str(data / "configs.yaml"),
        "LADDER_CACHE_DIR": str(models_cache_dir()),
    }
    with ladder_serve(env, data / "server.log", probe="/ready") as served:
        yield openai.OpenAI(base_url=f"{served.base}/v1", api_key="-", max_retries=0)


def ask(client: openai.OpenAI, model: str, **fields: object):  # type: ignore[no-untyped-def]
    return client.chat.completions.create(  # type: ignore[call-overload]
        model=model,
        messages=[{"role": "user", "content": MESSAGE}],
        max_tokens=80,
        temperature=0,
        **fields,
    )


def assert_matches_schema(text: str) -> None:
    """One line of JSON with the schema's keys in order and allowed values."""
    assert "\n" not in text
    value = json.loads(text)
    assert list(value) == ["category", "urgent", "summary"]
    assert value["category"] in {"billing", "shipping", "safety"}
    assert isinstance(value["urgent"], bool)
    assert isinstance(value["summary"], str) and len(value["summary"]) <= 24


def test_json_schema_answers_match_the_schema_whole_and_streamed(client: openai.OpenAI) -> None:
    whole = ask(client, "plain", response_format=TRIAGE_FORMAT)
    text = whole.choices[0].message.content or ""
    assert_matches_schema(text)
    assert whole.choices[0].finish_reason == "stop"
    stream = ask(client, "plain", response_format=TRIAGE_FORMAT, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == text


def test_json_object_answers_are_a_json_object(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="plain",
        messages=[
            {"role": "system", "content": 'Reply in JSON, like {"remedy": "repair"}.'},
            {"role": "user", "content": "My toaster is broken. Refund, repair or replace?"},
        ],
        max_tokens=80,
        temperature=0,
        response_format={"type": "json_object"},
    )
    assert answer.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)


def test_a_schema_that_cannot_compile_is_a_400_naming_response_format(
    client: openai.OpenAI,
) -> None:
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nowhere"}}}
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, "plain", response_format=bad)
    body = refused.value.body
    assert isinstance(body, dict) and body["param"] == "response_format"
    assert "/nowhere" in body["message"]


def test_a_configuration_output_layer_holds_the_answer_to_its_choices_and_regex(
    client: openai.OpenAI,
) -> None:
    remedy = ask(client, "remedy")
    assert remedy.choices[0].message.content in CHOICES
    assert remedy.model_extra is not None
    assert remedy.model_extra["ladder"]["layers"] == ["system_prompt", "output"]
    order = ask(client, "order-number").choices[0].message.content or ""
    assert order.startswith("BW-") and len(order) == 7 and order[3:].isdigit()
