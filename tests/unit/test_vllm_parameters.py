"""The vLLM engine passes OpenAI's optional parameters through and reads back vLLM's tool calls,
logprobs and choices (an httpx.MockTransport plays vLLM, with vLLM 0.32's answer shapes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from adapters.base_model import BaseModel, Fingerprint
from service.chat.responses import choices_of
from service.engines.base import GenerationRequest, ToolUse
from service.engines.vllm_server import server_command
from service.messages import ChatMessage, SamplingParams, ToolCall
from service.settings import Settings
from tests.unit.test_vllm_engine import (
    MESSAGES,
    chat_completion,
    chunk,
    complete,
    recording,
    sse,
    sse_response,
    stream,
    usage_chunk,
)

WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
NAMED = {"type": "function", "function": {"name": "weather"}}
ENTRY = {
    "token": "Hi",
    "logprob": -0.25,
    "bytes": [72, 105],
    "top_logprobs": [
        {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
        {"token": "Hello", "logprob": -1.5, "bytes": [72, 101, 108, 108, 111]},
    ],
}


def sent_body(request: GenerationRequest) -> dict[str, Any]:
    requests: list[httpx.Request] = []
    complete(
        recording(httpx.Response(200, json=chat_completion("x", "stop", 1, 1)), requests), request
    )
    body: dict[str, Any] = json.loads(requests[0].content)
    return body


def test_sampling_parameters_and_tools_are_sent_in_openais_shape() -> None:
    sampling = SamplingParams(
        n=2,
        logprobs=True,
        top_logprobs=3,
        logit_bias=((42, -100.0),),
        presence_penalty=0.5,
        frequency_penalty=0.25,
    )
    call = ToolCall("call_1", "weather", '{"city": "Oslo"}')
    history = (
        *MESSAGES,
        ChatMessage("assistant", "", (call,)),
        ChatMessage("tool", "Sunny", tool_call_id="call_1"),
    )
    tools = ToolUse((WEATHER,), NAMED, False)

    body = sent_body(GenerationRequest(history, sampling=sampling, tools=tools))

    assert (body["n"], body["logprobs"], body["top_logprobs"]) == (2, True, 3)
    assert body["logit_bias"] == {"42": -100.0}
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.5, 0.25)
    assert (body["tools"], body["tool_choice"], body["parallel_tool_calls"]) == (
        [WEATHER],
        NAMED,
        False,
    )
    assistant, tool = body["messages"][-2:]
    assert assistant["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "weather", "arguments": call.arguments},
        }
    ]
    assert tool == {"role": "tool", "content": "Sunny", "tool_call_id": "call_1"}


def test_parameters_left_at_their_defaults_are_not_sent() -> None:
    body = sent_body(GenerationRequest(MESSAGES))

    unset = {
        "n",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "presence_penalty",
        "tools",
        "tool_choice",
    }
    assert unset.isdisjoint(body)


def test_tool_calls_logprobs_and_every_choice_come_back_in_openais_shape() -> None:
    answer = chat_completion("", "stop", 20, 9)
    called = {"id": "chatcmpl-tool-1", "type": "function"}
    called["function"] = {"name": "weather", "arguments": '{"city": "Oslo"}'}  # type: ignore[assignment]
    answer["choices"][0]["message"]["tool_calls"] = [called]
    second = {**answer["choices"][0], "index": 1, "finish_reason": "length"}
    second["message"] = {"role": "assistant", "content": "Hi", "tool_calls": []}
    second["logprobs"] = {"content": [ENTRY]}
    answer["choices"] = [second, answer["choices"][0]]  # out of order on purpose

    completion = complete(recording(httpx.Response(200, json=answer), []))
    first, other = choices_of(completion.answers)

    assert first.message.content is None  # OpenAI: null beside tool calls
    assert first.message.tool_calls is not None
    assert first.message.tool_calls[0].function.arguments == '{"city": "Oslo"}'
    assert first.finish_reason == "stop"  # vLLM's (and OpenAI's) for a named tool choice
    assert first.logprobs is None
    assert (other.index, other.message.content, other.finish_reason) == (1, "Hi", "length")
    assert other.logprobs is not None
    assert other.logprobs.model_dump()["content"] == [ENTRY]
    assert completion.usage.completion_tokens == 9


def test_streamed_logprobs_ride_on_their_text() -> None:
    events = sse(
        chunk({"role": "assistant", "content": ""}),
        {
            **chunk({"content": "Hi"}),
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": "Hi"},
                    "logprobs": {"content": [ENTRY]},
                    "finish_reason": None,
                }
            ],
        },
        chunk({"content": ""}, finish_reason="stop"),
        usage_chunk(prompt=3, completion=1),
        "[DONE]",
    )

    deltas = stream(recording(sse_response(events), []))

    assert deltas[0].text == "Hi"
    assert [entry.token for entry in deltas[0].logprobs[0].top_logprobs] == ["Hi", "Hello"]
    assert deltas[-1].finish_reason == "stop"


def tool_flags(**options: Any) -> list[str]:
    """The tool flags of `ladder vllm up`'s vLLM command line for these settings."""
    fingerprint = Fingerprint("LlamaForCausalLM", 576, 30, 49152, "0" * 64)
    base = BaseModel("SmolLM2", Path("/models/smollm2"), fingerprint, 2048)
    command = server_command(Settings(**options), base, {})
    return [arg for arg in command if "tool" in arg or arg == "pythonic" or arg == "hermes"]


def test_vllm_is_started_with_a_tool_call_parser_unless_none_is_set() -> None:
    # vLLM 0.32 loads a parser only with --enable-auto-tool-choice; named choices need one.
    assert tool_flags() == ["--enable-auto-tool-choice", "--tool-call-parser", "pythonic"]
    assert tool_flags(vllm_tool_call_parser="hermes")[-1] == "hermes"
    assert tool_flags(vllm_tool_call_parser=None) == []
