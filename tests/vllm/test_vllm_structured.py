"""Constrained output through ladder on a real vLLM (CPU build), with the official openai client:
a request's response_format json_schema and a configuration's `output:` layer reach vLLM's
structured outputs, and the answers hold to them."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.vllm.served import REMEDIES, Stack

pytestmark = [pytest.mark.vllm, pytest.mark.server, pytest.mark.slow]

SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"enum": ["billing", "shipping", "safety"]},
        "urgent": {"type": "boolean"},
    },
    "required": ["category", "urgent"],
    "additionalProperties": False,
}
QUESTION = {"role": "user", "content": "My kettle sparks when I switch it on. Triage this."}


@pytest.fixture(scope="module")
def client(plain_stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{plain_stack.ladder_url}/v1", api_key="-", max_retries=0)


def ask(client: openai.OpenAI, model: str = "base", **fields: Any) -> Any:
    fields = {"temperature": 0, "max_tokens": 48, **fields}
    return client.chat.completions.create(model=model, messages=[QUESTION], **fields)


def test_a_json_schema_response_format_gets_one_line_of_matching_json(
    client: openai.OpenAI,
) -> None:
    spec = {"name": "triage", "schema": SCHEMA, "strict": True}
    answer = ask(client, response_format={"type": "json_schema", "json_schema": spec})
    text = answer.choices[0].message.content

    value = json.loads(text)
    assert "\n" not in text.strip() and list(value) == ["category", "urgent"]
    assert value["category"] in {"billing", "shipping", "safety"}
    assert isinstance(value["urgent"], bool)


def test_a_configuration_output_layer_holds_the_answer_to_its_choices(
    client: openai.OpenAI,
) -> None:
    assert ask(client, "remedy").choices[0].message.content in REMEDIES
