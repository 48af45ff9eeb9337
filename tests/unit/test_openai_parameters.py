"""OpenAI's optional chat parameters are honoured or refused with a 400 naming them, never ignored:
the official openai client against the app, with an engine declaring the local or vLLM engine's
capabilities."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.chat.protocol import ResponseMessage
from service.chat.tools import ToolCallWire
from service.engines.local import LOCAL_CAPABILITIES
from service.engines.vllm_wire import VLLM_CAPABILITIES
from service.messages import ToolCall
from service.settings import Settings
from tests.support.scripted_engine import ScriptedEngine

CONFIG = "configurations:\n  plain:\n    system_prompt: Be brief.\n"
USER = {"role": "user", "content": "What is the weather in Oslo?"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
CALLED = {"role": "assistant", "content": None, "tool_calls": [CALL]}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"}


def _client(
    tmp_path: Path, engine: ScriptedEngine
) -> Iterator[tuple[openai.OpenAI, ScriptedEngine]]:
    config = tmp_path / "configs.yaml"
    config.write_text(CONFIG)
    settings = Settings(data_dir=tmp_path, config=config, context_window=512, max_n=4)
    with TestClient(create_app(settings, engine=engine)) as http:
        yield openai.OpenAI(base_url="http://testserver/v1", api_key="-", http_client=http), engine


@pytest.fixture()
def local(tmp_path: Path) -> Iterator[tuple[openai.OpenAI, ScriptedEngine]]:
    """The app in front of an engine that declares what the local engine honours."""
    yield from _client(tmp_path, ScriptedEngine(name="local", capabilities=LOCAL_CAPABILITIES))


@pytest.fixture()
def vllm(tmp_path: Path) -> Iterator[tuple[openai.OpenAI, ScriptedEngine]]:
    """The app in front of an engine that declares what the vLLM engine honours (no parser)."""
    yield from _client(tmp_path, ScriptedEngine(name="vllm", capabilities=VLLM_CAPABILITIES))


def refusal(client: openai.OpenAI, **fields: Any) -> openai.BadRequestError:
    """The 400 the client raises for these fields (messages: the one user question unless given)."""
    fields.setdefault("messages", [USER])
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="plain", **fields)
    assert refused.value.status_code == 400
    return refused.value


REFUSED_ON_LOCAL = [
    ({"tools": [WEATHER]}, "tools", "tools is not supported by the local engine"),
    ({"tools": [WEATHER], "tool_choice": "none"}, "tools", "local engine"),
    ({"parallel_tool_calls": False}, "parallel_tool_calls", "only allowed when tools are given"),
    ({"tool_choice": "auto"}, "tool_choice", "only allowed when tools are given"),
    ({"messages": [USER, CALLED, RESULT]}, "messages.1", "not supported by the local engine"),
    ({"n": 2, "stream": True}, "n", "n is not supported by the local engine when streaming"),
    ({"n": 5}, "n", "over the limit of 4"),
    ({"top_logprobs": 2}, "top_logprobs", "needs logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", ""),
    ({"logit_bias": {"hello": 5}}, "logit_bias", "token ids"),
    ({"logit_bias": {"²": 5}}, "logit_bias", "token ids"),
    ({"logit_bias": {"1" * 5000: 5}}, "logit_bias", "token ids"),
    ({"logit_bias": {"42": 101}}, "logit_bias", "outside -100..100"),
    ({"presence_penalty": 2.5}, "presence_penalty", ""),
    ({"frequency_penalty": -3}, "frequency_penalty", ""),
    ({"messages": [{"role": "assistant", "content": None}, USER]}, "messages.0", "null"),
    ({"messages": [USER, {"role": "tool", "content": "x"}]}, "messages.1", "tool_call_id"),
]


@pytest.mark.parametrize(("fields", "param", "message"), REFUSED_ON_LOCAL)
def test_a_parameter_the_local_engine_cannot_honour_is_a_400_naming_it(
    local: tuple[openai.OpenAI, ScriptedEngine], fields: dict[str, Any], param: str, message: str
) -> None:
    client, engine = local
    error = refusal(client, **fields)
    assert error.param == param
    assert message in error.message
    assert engine.history == []


def test_the_local_engine_is_sent_every_sampling_parameter_it_honours(
    local: tuple[openai.OpenAI, ScriptedEngine],
) -> None:
    client, engine = local
    client.chat.completions.create(
        model="plain",
        messages=[USER],  # type: ignore[list-item]
        n=3,
        logprobs=True,
        top_logprobs=5,
        logit_bias={"42": -100, "7": 2.5},
        presence_penalty=0.5,
        frequency_penalty=-1.0,
    )
    sampling = engine.history[0].sampling
    assert (sampling.n, sampling.logprobs, sampling.top_logprobs) == (3, True, 5)
    assert sampling.logit_bias == ((42, -100.0), (7, 2.5))
    assert (sampling.presence_penalty, sampling.frequency_penalty) == (0.5, -1.0)
    assert engine.history[0].tools is None


def test_logprobs_are_honoured_while_streaming_on_the_local_engine(
    local: tuple[openai.OpenAI, ScriptedEngine],
) -> None:
    client, engine = local
    stream = client.chat.completions.create(
        model="plain",
        messages=[USER],  # type: ignore[list-item]
        stream=True,
        logprobs=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "ok"
    assert engine.history[0].sampling.logprobs


def test_a_named_tool_choice_and_tool_history_reach_the_vllm_engine(
    vllm: tuple[openai.OpenAI, ScriptedEngine],
) -> None:
    client, engine = vllm
    named = {"type": "function", "function": {"name": "weather"}}
    client.chat.completions.create(
        model="plain",
        messages=[USER, CALLED, RESULT],  # type: ignore[list-item]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice=named,  # type: ignore[arg-type]
        parallel_tool_calls=False,
    )
    sent = engine.history[0]
    assert sent.tools is not None
    assert sent.tools.tools == (WEATHER,)
    assert (sent.tools.choice, sent.tools.parallel) == (named, False)
    assistant, tool = sent.messages[-2:]
    assert assistant.tool_calls == (ToolCall("call_1", "weather", "{}"),)
    assert (tool.role, tool.tool_call_id, tool.content) == ("tool", "call_1", "Sunny, 21 C")


REFUSED_ON_VLLM = [
    ({"tools": [WEATHER]}, "tool_choice", "unless LADDER_VLLM_AUTO_TOOL_CHOICE is on"),
    ({"tools": [WEATHER], "tool_choice": "auto"}, "tool_choice", "vllm engine"),
    (
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "clock"}}},
        "tool_choice",
        "'clock', which is not among the tools",
    ),
    ({"tools": [WEATHER], "tool_choice": "required", "stream": True}, "tools", "when streaming"),
    ({"messages": [USER, RESULT]}, "messages.1.tool_call_id", "no earlier assistant"),
    ({"parallel_tool_calls": True}, "parallel_tool_calls", "only allowed when tools are given"),
    (
        {"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}},
        "response_format",
        "cannot be combined with response_format",
    ),
    (
        {"messages": [USER, {**CALLED, "tool_calls": [{**CALL, "function": {"name": "w"}}]}]},
        "messages.1.tool_calls.0.function.arguments",
        "",
    ),
]


@pytest.mark.parametrize(("fields", "param", "message"), REFUSED_ON_VLLM)
def test_a_tool_request_vllm_cannot_honour_is_a_400_naming_the_parameter(
    vllm: tuple[openai.OpenAI, ScriptedEngine], fields: dict[str, Any], param: str, message: str
) -> None:
    client, engine = vllm
    error = refusal(client, **fields)
    assert error.param == param
    assert message in error.message
    assert engine.history == []


OPTIONAL_FIELDS = [
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "stream",
    "stream_options", "user", "n", "logprobs", "top_logprobs", "logit_bias", "presence_penalty",
    "frequency_penalty", "tools", "tool_choice", "parallel_tool_calls", "response_format",
]  # fmt: skip


def test_every_optional_field_sent_as_null_counts_as_not_set(
    local: tuple[openai.OpenAI, ScriptedEngine],
) -> None:
    client, engine = local
    nulls = dict.fromkeys(OPTIONAL_FIELDS)

    answer = client.chat.completions.create(model="plain", messages=[USER], extra_body=nulls)  # type: ignore[list-item]

    assert answer.choices[0].message.content == "ok"
    sampling = engine.history[0].sampling
    assert (sampling.n, sampling.logprobs, sampling.logit_bias) == (1, False, ())


def test_platform_fields_without_effect_on_the_answer_are_accepted(
    local: tuple[openai.OpenAI, ScriptedEngine],
) -> None:
    client, _ = local
    platform = {
        "store": True,
        "metadata": {"team": "support"},
        "service_tier": "auto",
        "prompt_cache_key": "faq",
        "safety_identifier": "user-1",
    }

    answer = client.chat.completions.create(model="plain", messages=[USER], extra_body=platform)  # type: ignore[list-item]

    assert answer.choices[0].message.content == "ok"


@pytest.mark.parametrize("field", ["functions", "modalities", "audio", "top_k"])
def test_a_field_ladder_does_not_know_is_a_400_naming_it(
    local: tuple[openai.OpenAI, ScriptedEngine], field: str
) -> None:
    client, engine = local
    error = refusal(client, extra_body={field: ["x"]})
    assert error.param == field
    assert engine.history == []


def test_an_answer_of_tool_calls_is_written_with_content_null() -> None:
    call = ToolCallWire.model_validate(
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    )
    written = ResponseMessage(content=None, tool_calls=[call]).model_dump_json(exclude_none=True)

    assert json.loads(written)["content"] is None
    assert '"content":null' in written
