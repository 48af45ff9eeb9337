"""Tool calling, logprobs and n through ladder on a real vLLM (CPU build), with the official
openai client. vLLM runs with ladder's default tool settings: the pythonic tool-call parser
(vLLM 0.32 needs one for any tool_choice) without auto tool choice, as SmolLM2's chat template
never shows the model the functions; named and required choices work through vLLM's structured
outputs and `auto` is refused by ladder with a 400."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import openai
import pytest

from tests.vllm.served import Stack

pytestmark = [pytest.mark.vllm, pytest.mark.server, pytest.mark.slow]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
NAMED = {"type": "function", "function": {"name": "get_weather"}}
QUESTION = {"role": "user", "content": "What is the weather in Oslo?"}


@pytest.fixture(scope="module")
def client(plain_stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{plain_stack.ladder_url}/v1", api_key="-", max_retries=0)


def ask(client: openai.OpenAI, messages: list[Any] | None = None, **fields: Any) -> Any:
    fields = {"temperature": 0, "max_tokens": 48, **fields}
    return client.chat.completions.create(model="base", messages=messages or [QUESTION], **fields)


def test_a_named_tool_choice_returns_a_tool_call_the_client_parses(client: openai.OpenAI) -> None:
    choice = ask(client, tools=[WEATHER], tool_choice=NAMED).choices[0]

    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.id
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)


def test_a_required_tool_choice_ends_with_finish_reason_tool_calls(client: openai.OpenAI) -> None:
    choice = ask(client, tools=[WEATHER], tool_choice="required").choices[0]

    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.name == "get_weather"


def test_auto_tool_choice_without_a_parser_is_a_400_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, tools=[WEATHER])

    assert refused.value.param == "tool_choice"
    assert "vllm engine" in refused.value.message


def test_a_tool_result_in_history_is_answered(client: openai.OpenAI) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    history = [
        QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 degrees Celsius."},
    ]

    choice = ask(client, history, tools=[WEATHER], tool_choice="none").choices[0]

    assert choice.message.content
    assert not choice.message.tool_calls


def test_logprobs_pass_through_in_openais_shape(client: openai.OpenAI) -> None:
    choice = ask(client, logprobs=True, top_logprobs=3, max_tokens=8).choices[0]

    content = choice.logprobs.content
    assert 0 < len(content) <= 8
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.logprob == pytest.approx(max(t.logprob for t in entry.top_logprobs))
        assert sum(math.exp(t.logprob) for t in entry.top_logprobs) <= 1.0 + 1e-6


def test_streamed_chunks_carry_logprobs(client: openai.OpenAI) -> None:
    chunks = [c for c in ask(client, logprobs=True, max_tokens=8, stream=True) if c.choices]

    entries = [e for c in chunks if c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert entries
    assert "".join(e.token for e in entries).strip()


def test_n_gives_that_many_choices_and_penalties_are_accepted(client: openai.OpenAI) -> None:
    answer = ask(client, n=2, temperature=1.0, seed=3, frequency_penalty=1.0, logit_bias={"0": -5})

    assert [choice.index for choice in answer.choices] == [0, 1]
    assert all(choice.message.content for choice in answer.choices)


def test_the_wire_answer_has_content_null_beside_tool_calls(plain_stack: Stack) -> None:
    body = {"model": "base", "messages": [QUESTION], "tools": [WEATHER], "tool_choice": NAMED}
    sent = httpx.post(
        f"{plain_stack.ladder_url}/v1/chat/completions",
        json={**body, "temperature": 0, "max_tokens": 48},
        timeout=120,
    )

    message = sent.json()["choices"][0]["message"]
    assert "content" in message and message["content"] is None
    assert message["tool_calls"][0]["function"]["name"] == "get_weather"
