"""vLLM's OpenAI wire format: the request body ladder sends, the answers and errors it reads."""

from __future__ import annotations

import json
from typing import Any

import httpx

from service.engines.base import (
    Answer,
    Capabilities,
    ChatMessage,
    Completion,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TokenLogprob,
    ToolCall,
    ToolUse,
    Usage,
)
from service.engines.structured import vllm_fields
from service.errors import (
    EngineError,
    EngineOverloaded,
    EngineTimeout,
    EngineUnavailable,
    InvalidRequest,
    LadderError,
)

# Every OpenAI chat parameter ladder knows passes through to vLLM; n > 1 and tools are not
# streamed (ladder's chunks carry one choice of text).
_SAMPLING = frozenset(
    {"logprobs", "top_logprobs", "logit_bias", "presence_penalty", "frequency_penalty"}
)
VLLM_CAPABILITIES = Capabilities(
    parameters=_SAMPLING | {"n", "tools", "tool_choice", "parallel_tool_calls"},
    streamed=_SAMPLING,
)


def message_of(body: Any) -> str:
    """The message of an OpenAI `{"error": {...}}` or a vLLM `{"object": "error"}` body."""
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message") or error.get("detail") or error)[:500]
    return str(error)[:500]


def upstream_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    return message_of(body)


def usage_of(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage(0, 0)
    return Usage(raw.get("prompt_tokens") or 0, raw.get("completion_tokens") or 0)


def stream_event(data: str) -> dict[str, Any]:
    """One SSE event's JSON; EngineError when it cannot be read or reports a failure."""
    try:
        event = json.loads(data)
    except ValueError as error:
        raise EngineError(f"vLLM sent an unreadable stream event: {data[:200]!r}") from error
    if not isinstance(event, dict):
        raise EngineError(f"vLLM sent an unreadable stream event: {data[:200]!r}")
    if "error" in event or event.get("object") == "error":
        raise EngineError(f"vLLM failed mid-stream: {message_of(event)}")
    return event


def status_error(response: httpx.Response) -> LadderError:
    """Translates an upstream error status, keeping the upstream's message."""
    message = f"vLLM answered {response.status_code}: {upstream_message(response)}"
    if response.status_code in (400, 422):
        return InvalidRequest(message)
    if response.status_code == 429:
        return EngineOverloaded(message, retry_after=1.0)
    if response.status_code == 503:
        return EngineUnavailable(message)
    if response.status_code == 504:
        return EngineTimeout(message)
    return EngineError(message)


def request_body(request: GenerationRequest, model: str, *, stream: bool) -> dict[str, Any]:
    """The chat completion body vLLM is sent for one request; OpenAI's optional parameters only
    when set, so vLLM's own defaults stay in force."""
    sampling = request.sampling
    body: dict[str, Any] = {
        "model": model,
        "messages": [_wire_message(m) for m in request.messages],
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        "stream": stream,
    }
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    if stream:
        body["stream_options"] = {"include_usage": True}
    body |= _sampling_extras(sampling)
    if request.tools is not None:
        body |= _tool_fields(request.tools)
    body |= vllm_fields(request.output)
    return body


def _wire_message(message: ChatMessage) -> dict[str, Any]:
    """A prompt message in OpenAI's shape, with its tool calls or the call it answers."""
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        wire["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        wire["tool_call_id"] = message.tool_call_id
    return wire


def _sampling_extras(sampling: SamplingParams) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    if sampling.n > 1:
        extras["n"] = sampling.n
    if sampling.logprobs:
        extras |= {"logprobs": True, "top_logprobs": sampling.top_logprobs}
    if sampling.logit_bias:
        extras["logit_bias"] = {str(token): bias for token, bias in sampling.logit_bias}
    if sampling.presence_penalty:
        extras["presence_penalty"] = sampling.presence_penalty
    if sampling.frequency_penalty:
        extras["frequency_penalty"] = sampling.frequency_penalty
    return extras


def _tool_fields(tools: ToolUse) -> dict[str, Any]:
    fields: dict[str, Any] = {"tools": list(tools.tools)}
    if tools.choice is not None:
        fields["tool_choice"] = tools.choice
    if tools.parallel is not None:
        fields["parallel_tool_calls"] = tools.parallel
    return fields


def finish_reason_of(raw: Any) -> FinishReason:
    """vLLM's finish reason as ladder's: length and tool_calls kept, anything else a stop."""
    return raw if raw in ("length", "tool_calls") else "stop"


def logprobs_of(raw: Any) -> tuple[TokenLogprob, ...]:
    """OpenAI's `logprobs.content` list as token entries (empty when absent)."""
    content = raw.get("content") if isinstance(raw, dict) else None
    return tuple(_token_logprob(entry) for entry in content or [])


def _token_logprob(entry: dict[str, Any]) -> TokenLogprob:
    top = tuple(_token_logprob(alt) for alt in entry.get("top_logprobs") or [])
    raw = entry.get("bytes")
    spelled = tuple(raw) if raw is not None else tuple(str(entry["token"]).encode("utf-8"))
    return TokenLogprob(str(entry["token"]), float(entry["logprob"]), spelled, top)


def _answer(choice: dict[str, Any]) -> Answer:
    message = choice["message"]
    calls = tuple(
        ToolCall(str(c["id"]), str(c["function"]["name"]), str(c["function"]["arguments"]))
        for c in message.get("tool_calls") or []
    )
    raw = choice.get("logprobs")
    return Answer(
        text=message.get("content") or "",
        finish_reason=finish_reason_of(choice.get("finish_reason")),
        logprobs=logprobs_of(raw) if raw is not None else None,
        tool_calls=calls,
    )


def completion_of(response: httpx.Response) -> Completion:
    """A non-streaming answer read from vLLM, every choice in index order; EngineError when it
    cannot be read."""
    try:
        body = response.json()
        choices = sorted(body["choices"], key=lambda choice: choice.get("index", 0))
        if not choices:
            raise IndexError("no choices")
        return Completion(tuple(_answer(c) for c in choices), usage_of(body.get("usage")))
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise EngineError(f"vLLM sent an unreadable completion: {error}") from error
